"""The OpenAI-protocol family without a network: variants as data, wire -> job mapping, retry rules, registry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx2
import pytest

from batch_mcp.backends.base import TOKEN_METADATA_KEY, NotConfigured, Windows
from batch_mcp.backends.digitalocean import DigitalOceanBackend
from batch_mcp.backends.http import HttpOptions
from batch_mcp.backends.openai_compat import VARIANTS, OpenAICompatBackend
from batch_mcp.backends.openai_compat.wire import WireBatch, WireFile, duration_s, rate_limit_reset_s, to_job
from batch_mcp.backends.registry import CATALOG, Registry, default_backend
from batch_mcp.backends.retries import RetryPolicy, retry_delay, server_wait_s
from batch_mcp.backends.settings import settings_for
from batch_mcp.domain import Counts, JobStatus
from batch_mcp.schemas.jobs import BatchView

CHAT = "/v1/chat/completions"
ALL_VARIABLES = [var for entry in CATALOG.values() for var in (*entry.capabilities.token_env,
                                                               entry.capabilities.base_url_env)]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No key or base URL from the machine running the tests leaks into what they read."""
    for variable in [*ALL_VARIABLES, "BATCH_MCP_BACKEND"]:
        monkeypatch.delenv(variable, raising=False)


# --- each variant is a row ---------------------------------------------------------------------------

VARIANT_TABLE = [
    # name, key variables, base URL variable, default base URL, endpoints, max requests, max bytes, windows,
    # discount, result retention days
    ("openai", ("OPENAI_API_KEY",), "OPENAI_BASE_URL", "https://api.openai.com/v1",
     (CHAT, "/v1/responses", "/v1/embeddings", "/v1/completions", "/v1/moderations"), 50_000, 200_000_000,
     Windows("24h", "24h"), 0.5, 30),
    ("deepinfra", ("DEEPINFRA_TOKEN", "DEEPINFRA_API_KEY"), "DEEPINFRA_BASE_URL",
     "https://api.deepinfra.com/v1/openai", (CHAT, "/v1/completions", "/v1/embeddings"), 50_000, 200_000_000,
     Windows("24h", "24h"), 0.2, 30),
    ("groq", ("GROQ_API_KEY",), "GROQ_BASE_URL", "https://api.groq.com/openai/v1", (CHAT,), None, 100_000_000,
     Windows("24h", "7d"), None, None),
]


@pytest.mark.parametrize(("name", "keys", "base_var", "base_url", "endpoints", "max_requests", "max_bytes",
                          "windows", "discount", "retention"), VARIANT_TABLE)
def test_variant_facts(name: str, keys: tuple[str, ...], base_var: str, base_url: str, endpoints: tuple[str, ...],
                       max_requests: int | None, max_bytes: int, windows: Windows, discount: float | None,
                       retention: int | None) -> None:
    caps = VARIANTS[name].capabilities
    assert (caps.name, caps.token_env, caps.base_url_env, caps.default_base_url) == (name, keys, base_var, base_url)
    assert (caps.endpoints, caps.max_requests, caps.max_bytes, caps.windows) == (endpoints, max_requests, max_bytes,
                                                                                 windows)
    assert (caps.discount, caps.retention_days) == (discount, retention)
    assert caps.line_formats == ("openai",) and caps.upload == "multipart"
    assert caps.idempotency == "metadata_tag" and caps.results == "output+errors"
    assert not caps.status_filter and not caps.shareable_result_links


@pytest.mark.parametrize(("name", "keys", "base_var", "base_url"), [row[:4] for row in VARIANT_TABLE])
def test_variant_settings_read_the_providers_own_variables(monkeypatch: pytest.MonkeyPatch, name: str,
                                                           keys: tuple[str, ...], base_var: str,
                                                           base_url: str) -> None:
    settings_class = VARIANTS[name].settings
    assert settings_class().api_key is None and settings_class().base_url == base_url
    for variable in keys:
        monkeypatch.setenv(variable, f"secret-from-{variable}")
        assert settings_class().api_key_value() == f"secret-from-{variable}"
        assert "secret" not in repr(settings_class())
        monkeypatch.delenv(variable)
    monkeypatch.setenv(base_var, "")  # empty counts as unset
    assert settings_class().base_url == base_url
    monkeypatch.setenv(base_var, "http://127.0.0.1:9/v1")
    assert settings_class().base_url == "http://127.0.0.1:9/v1"
    monkeypatch.setenv(base_var, "http://gateway.example/v1")
    with pytest.raises(ValueError, match=f"{base_var}=.*unencrypted"):
        settings_class()


def test_deepinfra_prefers_its_documented_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPINFRA_API_KEY", "second")
    monkeypatch.setenv("DEEPINFRA_TOKEN", "first")
    assert VARIANTS["deepinfra"].settings().api_key_value() == "first"


# --- wire -> job ---------------------------------------------------------------------------------------


def batch(**fields: Any) -> WireBatch:
    values: dict[str, Any] = dict(id="batch_1", object="batch", endpoint=CHAT, input_file_id="file-in",
                                  completion_window="24h", status="in_progress", created_at=1_764_590_400,
                                  request_counts={"total": 10, "completed": 4, "failed": 1})
    values.update(fields)
    return WireBatch.model_validate(values)


@pytest.mark.parametrize("backend", list(VARIANTS))
def test_running_batch_maps_counts_and_keeps_raw_fields(backend: str) -> None:
    job = to_job(batch(in_progress_at=1_764_590_460, usage={"input_tokens": 7}, vendor_field="kept"), backend)
    assert (job.backend, job.id, job.ref) == (backend, "batch_1", f"{backend}:batch_1")
    assert (job.status, job.raw_status, job.line_format) == (JobStatus.IN_PROGRESS, "in_progress", "openai")
    assert job.counts == Counts(total=10, succeeded=4, failed=1, processing=5)
    assert job.started_at == datetime(2025, 12, 1, 12, 1, tzinfo=UTC)
    assert not job.results_ready
    assert job.extra == {"object": "batch", "vendor_field": "kept", "usage": {"input_tokens": 7}}


def test_validating_batch_with_null_counts_and_expiry_has_unknown_counts() -> None:
    """DeepInfra: request_counts, model and expires_at are null while it validates."""
    job = to_job(batch(status="validating", request_counts=None, model=None, expires_at=None), "deepinfra")
    assert job.status is JobStatus.VALIDATING and job.counts is None and job.expires_at is None


def test_completed_without_output_file_yet_is_finalizing_not_resultless() -> None:
    job = to_job(batch(status="completed", output_file_id=None, error_file_id="",
                       request_counts={"total": 3, "completed": 3, "failed": 0}), "openai")
    assert (job.status, job.raw_status, job.results_ready) == (JobStatus.FINALIZING, "completed", False)
    assert job.counts is not None and job.counts.processing == 0


def test_completed_with_files_is_ready_and_an_empty_error_file_id_is_absent() -> None:
    job = to_job(batch(status="completed", output_file_id="file-out", error_file_id="", completed_at=1_764_600_000,
                       request_counts={"total": 3, "completed": 3, "failed": 0}), "openai")
    assert job.status is JobStatus.COMPLETED and job.results_ready
    assert job.extra["output_file_id"] == "file-out" and "error_file_id" not in job.extra
    assert job.ended_at == datetime.fromtimestamp(1_764_600_000, tz=UTC)


def test_completed_with_nothing_to_write_is_completed() -> None:
    job = to_job(batch(status="completed", request_counts={"total": 0, "completed": 0, "failed": 0}), "openai")
    assert job.status is JobStatus.COMPLETED and not job.results_ready


@pytest.mark.parametrize(("status", "expected", "counts"), [
    ("expired", JobStatus.EXPIRED, Counts(total=10, succeeded=4, failed=1, expired=5)),
    ("cancelled", JobStatus.CANCELLED, Counts(total=10, succeeded=4, failed=1, cancelled=5)),
    ("cancelling", JobStatus.CANCELLING, Counts(total=10, succeeded=4, failed=1, processing=5)),
    ("failed", JobStatus.FAILED, Counts(total=10, succeeded=4, failed=1)),
])
def test_requests_that_never_ran_are_counted_by_how_the_batch_ended(status: str, expected: JobStatus,
                                                                    counts: Counts) -> None:
    job = to_job(batch(status=status, output_file_id="file-out"), "openai")
    assert (job.status, job.counts) == (expected, counts)
    view = BatchView.from_job(job)  # the view loses none of them, and counts as settled only what ended
    assert (view.completed, view.failed, view.cancelled, view.expired, view.processing) == (
        counts.succeeded, counts.failed, counts.cancelled, counts.expired, counts.processing)
    assert view.percent_done == {"cancelling": 50.0, "failed": 50.0}.get(status, 100.0)


@pytest.mark.parametrize(("raw", "expected"), [
    ("IN_PROGRESS", JobStatus.IN_PROGRESS), ("Canceled", JobStatus.CANCELLED), ("canceling", JobStatus.CANCELLING),
    ("finalizing", JobStatus.FINALIZING), ("something_new", JobStatus.IN_PROGRESS),
])
def test_status_spellings_and_unknown_statuses(raw: str, expected: JobStatus) -> None:
    job = to_job(batch(status=raw), "groq")
    assert (job.status, job.raw_status) == (expected, raw)


def test_failed_validation_keeps_line_numbers() -> None:
    job = to_job(batch(status="failed", request_counts=None, errors={"object": "list", "data": [
        {"code": "invalid_json_line", "message": "line 3 is not JSON", "line": 3, "param": None}]}), "deepinfra")
    assert job.status is JobStatus.FAILED and job.errors[0].line == 3 and job.errors[0].code == "invalid_json_line"


def test_our_token_is_taken_out_of_the_users_metadata() -> None:
    job = to_job(batch(metadata={TOKEN_METADATA_KEY: "tok_abc", "team": "search", "n": 3, "gone": None}), "openai")
    assert job.client_token == "tok_abc"
    assert job.metadata == {"team": "search", "n": "3"}
    assert to_job(batch(metadata=None), "openai").client_token is None


def test_file_object_without_status_parses() -> None:
    """DeepInfra documents no ``status`` on its FileObject."""
    stored = WireFile.model_validate({"id": "file-1", "object": "file", "bytes": 12, "created_at": 1,
                                      "filename": "in.jsonl", "purpose": "batch"})
    assert stored.status is None and stored.bytes == 12


# --- rate-limit headers and the retry rule -------------------------------------------------------------


@pytest.mark.parametrize(("text", "seconds"), [("6m0s", 360.0), ("1.5s", 1.5), ("120ms", 0.12), ("1h2m3s", 3723.0),
                                               ("", None), ("soon", None), ("5", None), ("3s and more", None)])
def test_duration_s(text: str, seconds: float | None) -> None:
    assert duration_s(text) == (pytest.approx(seconds) if seconds is not None else None)


def test_rate_limit_reset_takes_the_later_budget() -> None:
    response = httpx2.Response(429, headers={"x-ratelimit-reset-requests": "2s", "x-ratelimit-reset-tokens": "6m0s"})
    assert rate_limit_reset_s(response) == 360.0
    assert rate_limit_reset_s(httpx2.Response(429)) is None


POLICY = RetryPolicy(max_attempts=3, base_delay_s=0.1, max_delay_s=1.0, max_wait_s=30.0)
SENT_ERRORS = [httpx2.ReadTimeout("read"), httpx2.RemoteProtocolError("gone"), httpx2.ReadError("reset"),
               httpx2.WriteTimeout("write")]
UNSENT_ERRORS = [httpx2.ConnectError("refused"), httpx2.ConnectTimeout("connect"), httpx2.PoolTimeout("pool")]


@pytest.mark.parametrize("error", SENT_ERRORS + UNSENT_ERRORS, ids=lambda e: type(e).__name__)
def test_idempotent_calls_retry_every_transport_fault(error: Exception) -> None:
    assert retry_delay(POLICY, 1, idempotent=True, error=error) is not None


@pytest.mark.parametrize("error", SENT_ERRORS, ids=lambda e: type(e).__name__)
def test_a_create_is_not_resent_once_it_may_have_arrived(error: Exception) -> None:
    assert retry_delay(POLICY, 1, idempotent=False, error=error) is None


@pytest.mark.parametrize("error", UNSENT_ERRORS, ids=lambda e: type(e).__name__)
def test_a_create_is_resent_when_it_never_left(error: Exception) -> None:
    assert retry_delay(POLICY, 1, idempotent=False, error=error) is not None


@pytest.mark.parametrize(("status", "idempotent", "retried"), [
    (429, False, True), (500, False, False), (502, False, False), (503, False, False), (408, False, False),
    (529, False, False), (429, True, True), (500, True, True), (503, True, True), (529, True, True),
    (408, True, True), (400, True, False), (404, True, False), (409, True, False), (200, True, False),
])
def test_retry_by_status(status: int, idempotent: bool, retried: bool) -> None:
    delay = retry_delay(POLICY, 1, idempotent=idempotent, response=httpx2.Response(status))
    assert (delay is not None) is retried


def test_server_waits_are_obeyed_up_to_a_limit() -> None:
    assert server_wait_s(httpx2.Response(429, headers={"retry-after-ms": "250", "retry-after": "9"})) == 0.25
    assert server_wait_s(httpx2.Response(429, headers={"retry-after": "2"})) == 2.0
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=20), usegmt=True)
    assert 10 < server_wait_s(httpx2.Response(503, headers={"retry-after": later})) <= 20  # type: ignore[operator]
    assert server_wait_s(httpx2.Response(429, headers={"retry-after": "whenever"})) is None
    assert 2.0 <= retry_delay(POLICY, 1, idempotent=False, response=httpx2.Response(
        429, headers={"retry-after": "2"})) < 2.1  # type: ignore[operator]
    assert retry_delay(POLICY, 1, idempotent=True, response=httpx2.Response(429, headers={"retry-after": "31"})) is None
    hinted = retry_delay(POLICY, 1, idempotent=True, response=httpx2.Response(429), wait_hint=lambda _: 5.0)
    assert hinted is not None and 5.0 <= hinted < 5.1


def test_retries_stop_at_max_attempts_and_when_told_not_to() -> None:
    assert retry_delay(POLICY, 2, idempotent=True, response=httpx2.Response(500)) is not None
    assert retry_delay(POLICY, 3, idempotent=True, response=httpx2.Response(500)) is None
    assert retry_delay(POLICY, 1, idempotent=True, response=httpx2.Response(
        503, headers={"x-should-retry": "false"})) is None


def test_backoff_grows_capped_with_jitter() -> None:
    for attempt, cap in [(1, 0.1), (2, 0.2), (3, 0.4), (6, 1.0), (20, 1.0)]:
        delays = {POLICY.backoff_s(attempt) for _ in range(50)}
        assert all(0.75 * cap <= d <= cap for d in delays) and len(delays) > 1


# --- registry -----------------------------------------------------------------------------------------


def keyed(name: str, key: str | None = "k", **values: Any) -> Any:
    caps = CATALOG[name].capabilities
    return settings_for(caps).given(key, values.get("base_url", caps.default_base_url))


async def test_registry_opens_the_backends_with_keys_and_picks_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GROQ_API_KEY", "g")
    registry = Registry.open(HttpOptions())
    try:
        assert registry.names == ("groq",) and registry.default == "groq"
        backend, native = registry.resolve("batch_legacy")  # one backend: a bare id is its
        assert (backend.name, native) == ("groq", "batch_legacy")
        assert isinstance(registry.get(), OpenAICompatBackend)
    finally:
        await registry.aclose()


def test_default_backend_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_backend([]) == "digitalocean"
    assert default_backend(["deepinfra"]) == "deepinfra"
    assert default_backend(["openai", "groq"]) == "digitalocean"
    monkeypatch.setenv("BATCH_MCP_BACKEND", "openai")
    assert default_backend(["openai", "groq"]) == "openai"
    assert default_backend(["openai", "groq"], requested="groq") == "groq"
    monkeypatch.setenv("BATCH_MCP_BACKEND", "openia")
    with pytest.raises(ValueError, match="unknown backend 'openia'"):
        default_backend([])


async def test_registry_resolves_namespaced_ids_and_explains_what_it_cannot() -> None:
    registry = Registry.open(HttpOptions(), settings={"openai": keyed("openai"), "deepinfra": keyed("deepinfra"),
                                                      "groq": keyed("groq", None),
                                                      "digitalocean": keyed("digitalocean")})
    try:
        assert registry.names == ("digitalocean", "openai", "deepinfra")
        assert registry.configured == ("openai", "deepinfra", "digitalocean")
        assert registry.default == "digitalocean"
        backend, native = registry.resolve("deepinfra:batch:x")
        assert (backend.name, native) == ("deepinfra", "batch:x")
        with pytest.raises(NotConfigured, match="pass it as <backend>:batch_1") as caught:
            registry.resolve("batch_1")
        assert caught.value.code == "ambiguous_id"
        with pytest.raises(NotConfigured, match="set GROQ_API_KEY") as caught:
            registry.resolve("groq:batch_1")
        assert caught.value.code == "not_configured"
        with pytest.raises(NotConfigured, match="no backend called 'mistral'"):
            registry.get("mistral")
        assert isinstance(registry.get(), DigitalOceanBackend)  # the default, opened from its settings
        facts = {caps.name: configured for caps, configured in registry.capabilities()}
        assert facts == {"digitalocean": True, "openai": True, "deepinfra": True, "groq": False, "anthropic": False}
    finally:
        await registry.aclose()


def test_every_catalog_entry_names_itself_and_its_variables() -> None:
    for name, entry in CATALOG.items():
        caps = entry.capabilities
        assert caps.name == name and caps.token_env and caps.base_url_env
        assert caps.discount is None or 0 < caps.discount < 1
        assert set(caps.line_formats) <= {"openai", "anthropic"}


def test_a_stray_api_key_or_base_url_variable_is_no_backends_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the provider's own variable names count: a generic API_KEY in the environment is not OpenAI's."""
    monkeypatch.setenv("API_KEY", "someone-elses")
    monkeypatch.setenv("BASE_URL", "http://example.invalid")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    read = settings_for(CATALOG["openai"].capabilities)()
    assert read.api_key_value() is None and read.base_url == CATALOG["openai"].capabilities.default_base_url

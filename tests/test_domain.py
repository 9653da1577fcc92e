"""The neutral vocabulary: namespaced ids, timestamps, specs, and the capability checks made before a create."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from batch_mcp.backends.base import (
    TOKEN_METADATA_KEY,
    Capabilities,
    InvalidRequestError,
    Windows,
    check_metadata,
    check_spec,
    window_hours,
)
from batch_mcp.backends.digitalocean import CAPABILITIES as DIGITALOCEAN
from batch_mcp.backends.openai_compat import VARIANTS
from batch_mcp.domain import Counts, CreateSpec, Job, JobStatus, Ref, is_terminal, parse_timestamp

OPENAI, DEEPINFRA, GROQ = (VARIANTS[name].capabilities for name in ("openai", "deepinfra", "groq"))
PLANNED = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def spec(**overrides: object) -> CreateSpec:
    values: dict[str, object] = dict(input_ref="file-1", line_format="openai", endpoint="/v1/chat/completions",
                                     client_token="tok_0123456789", planned_at=PLANNED)
    values.update(overrides)
    return CreateSpec(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "backend", "native"), [
    ("openai:batch_abc", "openai", "batch_abc"),
    ("  deepinfra:batch-1  ", "deepinfra", "batch-1"),
    ("anthropic:msgbatch:with:colons", "anthropic", "msgbatch:with:colons"),
    ("11f1c0de-0000-4000-8000-000000000000", None, "11f1c0de-0000-4000-8000-000000000000"),
    ("Batch:Upper", None, "Batch:Upper"),  # not a backend name: a legacy id that happens to hold a colon
    ("group-1234", None, "group-1234"),
])
def test_ref_parses_namespaced_and_legacy_ids(text: str, backend: str | None, native: str) -> None:
    ref = Ref.parse(text)
    assert (ref.backend, ref.native) == (backend, native)
    assert Ref.parse(str(ref)) == ref


@pytest.mark.parametrize("text", ["", "   ", "openai:"])
def test_ref_refuses_empty_ids(text: str) -> None:
    with pytest.raises(ValueError, match="id"):
        Ref.parse(text)


def test_job_ref_is_namespaced_and_job_round_trips_through_json() -> None:
    job = Job(backend="groq", id="batch_9", status=JobStatus.IN_PROGRESS, raw_status="in_progress",
              counts=Counts(total=3, succeeded=1, processing=2), created_at=1_764_590_400,
              extra={"output_file_id": "file-o"})
    assert job.ref == "groq:batch_9"
    assert not job.is_terminal and is_terminal("cancelled")
    assert Job.model_validate_json(job.model_dump_json()) == job
    assert job.created_at == datetime(2025, 12, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(("value", "expected"), [
    (1_764_590_400, datetime(2025, 12, 1, 12, 0, tzinfo=UTC)),
    ("2026-04-21T17:55:16.123456789Z", datetime(2026, 4, 21, 17, 55, 16, 123456, tzinfo=UTC)),
    ("2026-04-21T17:55:16+02:00", datetime(2026, 4, 21, 15, 55, 16, tzinfo=UTC)),
    ("2026-04-21T17:55:16", datetime(2026, 4, 21, 17, 55, 16, tzinfo=UTC)),  # naive is read as UTC
    ("", None), (None, None), ("yesterday", None),
])
def test_parse_timestamp(value: object, expected: datetime | None) -> None:
    assert parse_timestamp(value) == expected


def test_create_spec_needs_an_aware_planned_time_and_a_plain_token() -> None:
    assert spec(planned_at=datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=1)))).planned_at.tzinfo
    with pytest.raises(ValidationError, match="time zone"):
        spec(planned_at=datetime(2026, 1, 1))
    with pytest.raises(ValidationError, match="client_token"):
        spec(client_token="has spaces in it")


@pytest.mark.parametrize(("windows", "window", "accepted"), [
    (Windows(), "24h", True), (Windows(), "1d", True), (Windows(), "48h", False),
    (Windows("24h", "7d"), "7d", True), (Windows("24h", "7d"), "36h", True), (Windows("24h", "7d"), "8d", False),
    (Windows("24h", "7d"), "12h", False), (Windows(), "24 hours", False), (Windows(), "0h", False),
])
def test_windows_accept_only_their_range(windows: Windows, window: str, accepted: bool) -> None:
    assert windows.accepts(window) is accepted


def test_windows_refuse_unreadable_bounds() -> None:
    assert window_hours("7d") == 168
    with pytest.raises(ValueError, match="24h or 7d"):
        Windows("one day", "7d")


@pytest.mark.parametrize(("caps", "overrides", "code"), [
    (DEEPINFRA, dict(endpoint="/v1/responses"), "unsupported_endpoint"),
    (GROQ, dict(endpoint="/v1/embeddings"), "unsupported_endpoint"),
    (OPENAI, dict(line_format="anthropic"), "unsupported_line_format"),
    (OPENAI, dict(completion_window="48h"), "unsupported_window"),
    (DIGITALOCEAN, dict(completion_window="7d"), "unsupported_window"),
])
def test_check_spec_refuses_what_the_backend_does_not_run(caps: Capabilities, overrides: dict[str, object],
                                                          code: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        check_spec(caps, spec(**overrides))
    assert caught.value.code == code and caught.value.backend == caps.name
    assert caps.label in str(caught.value)


def test_check_spec_accepts_what_the_backend_documents() -> None:
    check_spec(GROQ, spec(completion_window="7d"))
    check_spec(DIGITALOCEAN, spec(line_format="anthropic", endpoint="/v1/responses"))
    check_spec(OPENAI, spec(endpoint="/v1/moderations", metadata={"team": "a"}))


def test_metadata_limits_leave_room_for_our_token() -> None:
    assert OPENAI.reserved_metadata_keys == (TOKEN_METADATA_KEY,)
    assert OPENAI.user_metadata_pairs == 15
    check_metadata(OPENAI, {f"k{i}": "v" for i in range(15)})
    with pytest.raises(InvalidRequestError, match="allows 15 besides") as caught:
        check_metadata(OPENAI, {f"k{i}": "v" for i in range(16)})
    assert caught.value.code == "metadata_too_many"
    assert DIGITALOCEAN.reserved_metadata_keys == ()  # its request_id carries the token instead


@pytest.mark.parametrize(("metadata", "code"), [
    ({TOKEN_METADATA_KEY: "mine"}, "metadata_reserved_key"),
    ({"k" * 65: "v"}, "metadata_key_too_long"),
    ({"k": "v" * 513}, "metadata_value_too_long"),
])
def test_metadata_refused_with_the_reason(metadata: dict[str, str], code: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        check_metadata(OPENAI, metadata)
    assert caught.value.code == code


def test_metadata_without_documented_limits_is_passed_on_and_without_support_refused() -> None:
    check_metadata(GROQ, {f"k{i}": "v" * 600 for i in range(40)})
    assert GROQ.user_metadata_pairs is None
    no_metadata = Capabilities(name="inline", label="Inline", token_env=("X",), base_url_env="X_URL",
                               default_base_url="https://x.example", line_formats=("anthropic",), endpoints=(),
                               max_requests=1, max_bytes=1, windows=Windows(), discount=None, metadata=None,
                               idempotency="none")
    assert no_metadata.user_metadata_pairs == 0
    check_metadata(no_metadata, {})
    with pytest.raises(InvalidRequestError, match="keeps no job metadata"):
        check_metadata(no_metadata, {"k": "v"})

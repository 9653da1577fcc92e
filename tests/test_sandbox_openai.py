"""The OpenAI-family emulators (OpenAI, DeepInfra, Groq) driven by the official ``openai`` SDK in strict mode.

Strict mode validates every JSON answer against the SDK's models; result lines, which the SDK never
parses, are checked against our own envelope model and their bodies against the SDK's response types.
Each sandbox runs on a frozen clock that the tests advance, so the lifecycle is exact on a slow machine.
"""

from __future__ import annotations

import io
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from openai.types import Batch, Completion, CreateEmbeddingResponse, ModerationCreateResponse
from openai.types.chat import ChatCompletion
from openai.types.responses import Response
from pydantic import BaseModel, ConfigDict, model_validator

from batch_mcp.sandbox import SandboxConfig, SandboxServer

BACKENDS = ("openai", "deepinfra", "groq")
TERMINAL = {"completed", "failed", "expired", "cancelled"}
CHAT = "/v1/chat/completions"
SEED = Path(__file__).resolve().parents[2] / "shared" / "reference" / "seeds" / "004-deepinfra-batch-blog.txt"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LineResponse(_Strict):
    status_code: int
    request_id: str | None = None  # DeepInfra documents none
    body: dict[str, Any]


class LineError(_Strict):
    code: str
    message: str


class ResultLine(_Strict):
    """One output or error-file line: exactly one of ``response`` and ``error`` is set."""

    id: str
    custom_id: str
    response: LineResponse | None
    error: LineError | None

    @model_validator(mode="after")
    def _one_outcome(self) -> ResultLine:
        assert (self.response is None) != (self.error is None), "a line holds a response or an error"
        return self


def oai_config(backend: str, **overrides: Any) -> SandboxConfig:
    """One sandbox second per phase and 10 requests per second: 20 lines run for 2 s of the frozen clock."""
    values: dict[str, Any] = dict(backend=backend, validating_s=1, queued_s=1, requests_per_s=10, finalizing_s=1,
                                  cancelling_s=1, failure_rate=0.3, rate_limit_per_minute=1_000_000)
    values.update(overrides)
    return SandboxConfig(**values)


def frozen(server: SandboxServer) -> SandboxServer:
    server.sandbox.clock.freeze()
    return server


def sdk(server: SandboxServer, **options: Any) -> openai.OpenAI:
    return openai.OpenAI(api_key=server.token, base_url=server.base_url, _strict_response_validation=True,
                         **{"max_retries": 0, **options})


def chat_line(custom_id: str, text: str, model: str = "m-1", url: str = CHAT) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": url,
            "body": {"model": model, "messages": [{"role": "user", "content": text}]}}


def jsonl(lines: list[Any]) -> bytes:
    return "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines).encode()


REQUESTS = jsonl([chat_line(f"r{i}", f"Summarise ticket {i}" + (" [[fail]]" if i == 3 else "")) for i in range(20)])


@pytest.fixture(scope="module", params=BACKENDS)
def emulator(request: pytest.FixtureRequest) -> Iterator[SandboxServer]:
    with SandboxServer(oai_config(request.param)) as server:
        yield frozen(server)


def upload(server: SandboxServer, data: bytes = REQUESTS, name: str = "requests.jsonl") -> str:
    """Upload through the strict SDK. DeepInfra's FileObject lacks ``status``, which strict mode must catch."""
    raw = sdk(server).files.with_raw_response.create(file=(name, io.BytesIO(data)), purpose="batch")
    if server.sandbox.config.backend == "deepinfra":
        with pytest.raises(openai.APIResponseValidationError):
            raw.parse()
        return raw.http_response.json()["id"]
    return raw.parse().id


def poll(server: SandboxServer, batch_id: str, step: float = 0.5) -> list[Batch]:
    """Retrieve until terminal, moving the frozen clock ``step`` seconds between polls."""
    seen = [sdk(server).batches.retrieve(batch_id)]
    while seen[-1].status not in TERMINAL:
        assert len(seen) < 200, f"batch stuck in {seen[-1].status}"
        server.sandbox.clock.advance(step)
        seen.append(sdk(server).batches.retrieve(batch_id))
    return seen


def result_lines(server: SandboxServer, file_id: str | None) -> list[ResultLine]:
    if file_id is None:
        return []
    return [ResultLine.model_validate_json(line) for line in sdk(server).files.content(file_id).text.splitlines()]


def create(server: SandboxServer, file_id: str, **options: Any) -> Batch:
    return sdk(server).batches.create(input_file_id=file_id, endpoint=options.pop("endpoint", CHAT),
                                      completion_window=options.pop("completion_window", "24h"), **options)


def test_round_trip(emulator: SandboxServer) -> None:
    """upload → retrieve → create → poll → results: every answer validates strictly, every line is an envelope."""
    backend = emulator.sandbox.config.backend
    file_id = upload(emulator)
    lenient = openai.OpenAI(api_key=emulator.token, base_url=emulator.base_url)
    stored = (lenient if backend == "deepinfra" else sdk(emulator)).files.retrieve(file_id)
    assert (stored.bytes, stored.filename, stored.purpose) == (len(REQUESTS), "requests.jsonl", "batch")
    assert sdk(emulator).files.content(file_id).content == REQUESTS

    batch = create(emulator, file_id, metadata={"job": "round-trip"})
    assert batch.status == "validating" and batch.metadata == {"job": "round-trip"}
    assert batch.request_counts is None if backend == "deepinfra" else batch.request_counts.total == 0
    assert batch.expires_at == (None if backend == "deepinfra" else batch.created_at + 86400)

    history = poll(emulator, batch.id)
    statuses = [b.status for i, b in enumerate(history) if i == 0 or history[i - 1].status != b.status]
    assert statuses == ["validating", "in_progress", "finalizing", "completed"]
    done = history[-1]
    assert done.in_progress_at and done.finalizing_at and done.completed_at and done.model == "m-1"
    counts = done.request_counts
    assert counts.total == 20 and counts.completed + counts.failed == 20 and counts.failed >= 1

    output, errors = result_lines(emulator, done.output_file_id), result_lines(emulator, done.error_file_id)
    assert len(output) == counts.completed and len(errors) == counts.failed
    assert sorted(line.custom_id for line in output + errors) == sorted(f"r{i}" for i in range(20))
    for line in output:
        assert line.response.status_code == 200 and (line.response.request_id is None) == (backend == "deepinfra")
        ChatCompletion.model_validate(line.response.body)
    assert "r3" in {line.custom_id for line in errors}  # the [[fail]] marker always fails
    for line in errors:
        if backend == "deepinfra":  # response: null, error: {code, message}
            assert line.error is not None
        else:  # a non-200 response whose body is an OpenAI error
            assert line.response.status_code >= 400 and set(line.response.body["error"]) >= {"message", "code"}
    results = (lenient if backend == "deepinfra" else sdk(emulator)).files.retrieve(done.output_file_id)
    assert results.purpose == "batch_output" and results.bytes > 0


def test_listing_pages_newest_first(emulator: SandboxServer) -> None:
    file_id = upload(emulator)
    created = [create(emulator, file_id).id for _ in range(3)]
    first = sdk(emulator).batches.list(limit=2)
    assert first.has_more and [b.id for b in first.data] == created[::-1][:2]
    listed = [batch.id for batch in sdk(emulator).batches.list(limit=2)]  # auto-paging with after=<last id>
    jobs = emulator.sandbox.jobs
    assert listed[:3] == created[::-1] and listed == sorted(jobs, key=lambda batch_id: -jobs[batch_id].seq)


def test_cancel_keeps_finished_work_and_reports_the_rest(emulator: SandboxServer) -> None:
    batch = create(emulator, upload(emulator))
    emulator.sandbox.clock.advance(3)  # validated at 1 s, started at 2 s: 10 of 20 requests done
    cancelling = sdk(emulator).batches.cancel(batch.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at is not None
    done = poll(emulator, batch.id)[-1]
    assert done.status == "cancelled" and done.cancelled_at is not None
    ran = done.request_counts.completed + done.request_counts.failed
    assert ran == 10 and done.request_counts.total == 20
    errors = result_lines(emulator, done.error_file_id)
    cut_off = [line for line in errors if line.error is not None and line.error.code == "batch_cancelled"]
    assert len(cut_off) == 10 and all(line.response is None for line in cut_off)
    assert len(result_lines(emulator, done.output_file_id)) == done.request_counts.completed
    with pytest.raises(openai.ConflictError):
        sdk(emulator).batches.cancel(batch.id)


def test_cancel_while_validating_ends_without_results(emulator: SandboxServer) -> None:
    batch = create(emulator, upload(emulator))
    assert sdk(emulator).batches.cancel(batch.id).status == "cancelling"
    done = poll(emulator, batch.id)[-1]
    assert done.status == "cancelled" and done.output_file_id is None and done.error_file_id is None


def test_deleted_files_are_gone(emulator: SandboxServer) -> None:
    file_id = upload(emulator)
    done = poll(emulator, create(emulator, file_id).id)[-1]
    for deleted in (file_id, done.output_file_id):
        answer = sdk(emulator).files.delete(deleted)
        assert answer.deleted and answer.id == deleted
        with pytest.raises(openai.NotFoundError):
            sdk(emulator).files.content(deleted)
    with pytest.raises(openai.NotFoundError):
        sdk(emulator).files.delete(file_id)


def test_wrong_key_unknown_ids_and_bad_requests(emulator: SandboxServer) -> None:
    stranger = openai.OpenAI(api_key="sk-wrong-key", base_url=emulator.base_url, max_retries=0,
                             _strict_response_validation=True)
    with pytest.raises(openai.AuthenticationError) as denied:
        stranger.batches.list()
    assert denied.value.status_code == 401 and denied.value.code == "invalid_api_key"
    assert "sk-wrong-key" not in denied.value.message and denied.value.request_id.startswith("req_")
    client = sdk(emulator)
    for call in (lambda: client.batches.retrieve("batch_nope"), lambda: client.batches.cancel("batch_nope"),
                 lambda: client.files.retrieve("file-nope"), lambda: create(emulator, "file-nope")):
        with pytest.raises(openai.NotFoundError):
            call()
    file_id = upload(emulator)
    refusals = {
        "endpoint": dict(endpoint="/v1/images/generations"),
        "completion_window": dict(completion_window="8d"),
        "metadata": dict(metadata={f"k{i}": "v" for i in range(17)}),
    }
    for param, options in refusals.items():
        with pytest.raises(openai.BadRequestError) as refused:
            create(emulator, file_id, **options)
        assert refused.value.param == param and refused.value.type == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as wrong_purpose:
        client.files.create(file=("x.jsonl", io.BytesIO(REQUESTS)), purpose="fine-tune")
    assert wrong_purpose.value.param == "purpose"


@pytest.mark.parametrize(("backend", "window", "accepted"),
                         [("openai", "48h", False), ("groq", "48h", True), ("groq", "7d", True),
                          ("deepinfra", "7d", False)])
def test_completion_windows(backend: str, window: str, accepted: bool) -> None:
    """Groq takes 24h to 7d; the others only 24h. A 7d window lasts seven 24h windows of the sandbox."""
    with SandboxServer(oai_config(backend)) as server:
        file_id = upload(frozen(server))
        if not accepted:
            with pytest.raises(openai.BadRequestError):
                create(server, file_id, completion_window=window)
            return
        batch = create(server, file_id, completion_window=window)
        hours = int(window[:-1]) * (24 if window.endswith("d") else 1)
        assert batch.expires_at == batch.created_at + hours * 3600


def test_malformed_file_fails_with_line_numbers(emulator: SandboxServer) -> None:
    lines: list[Any] = [
        chat_line("a", "fine"),
        "{not json",
        chat_line("b", "wrong url", url="/v1/completions"),
        {"custom_id": "c", "method": "POST", "url": CHAT, "body": {"model": "m-1"}},
        chat_line("d", "another model", model="m-2"),
        "",
        chat_line("a", "duplicate"),
        chat_line("e", "fine"),
    ]
    done = poll(emulator, create(emulator, upload(emulator, jsonl(lines))).id)[-1]
    assert done.status == "failed" and done.failed_at is not None
    assert [(e.line, e.code) for e in done.errors.data] == [(n, "invalid_input_file") for n in (2, 3, 4, 5, 7)]
    messages = [e.message for e in done.errors.data]
    assert "body.messages" in messages[2] and "one model" in messages[3] and "duplicate custom_id" in messages[4]
    assert done.output_file_id is None and done.error_file_id is None


def test_every_openai_endpoint_answers_its_own_type() -> None:
    bodies = {
        "/v1/embeddings": ({"model": "e-1", "input": ["first text", "second text"], "dimensions": 4},
                           CreateEmbeddingResponse),
        "/v1/completions": ({"model": "c-1", "prompt": "Summarise: the app is slow"}, Completion),
        "/v1/responses": ({"model": "r-1", "input": "Classify the sentiment: great app"}, Response),
        "/v1/moderations": ({"input": "hello there"}, ModerationCreateResponse),
    }
    answers: dict[str, Any] = {}
    with SandboxServer(oai_config("openai", failure_rate=0)) as server:
        for endpoint, (body, model) in bodies.items():
            data = jsonl([{"custom_id": f"x{i}", "method": "POST", "url": endpoint, "body": body} for i in range(3)])
            done = poll(frozen(server), create(server, upload(server, data), endpoint=endpoint).id)[-1]
            lines = result_lines(server, done.output_file_id)
            assert done.status == "completed" and len(lines) == 3, endpoint
            answers[endpoint] = model.model_validate(lines[0].response.body)
    embedded = answers["/v1/embeddings"].data
    assert [len(item.embedding) for item in embedded] == [4, 4] and embedded[0].embedding != embedded[1].embedding
    assert answers["/v1/completions"].choices[0].text.startswith("Summary:")
    assert answers["/v1/responses"].output_text == "positive"
    assert answers["/v1/moderations"].results[0].flagged is False


def test_deepinfra_published_example_runs_unchanged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """The script from DeepInfra's launch post, with only its base URL pointed here and the key from its
    own DEEPINFRA_TOKEN variable; its ``time.sleep(10)`` polls move the sandbox clock instead of waiting."""
    if not SEED.is_file():
        pytest.skip(f"the DeepInfra launch post is not at {SEED}")
    text = SEED.read_text()
    requests = [line for line in text.splitlines() if line.startswith('{"custom_id"')]
    script = text[text.index("import json\n"):text.index('    print(f"{custom_id}: {content}")')]
    script += '    print(f"{custom_id}: {content}")\n'
    with SandboxServer(oai_config("deepinfra", failure_rate=0)) as server:
        frozen(server)
        (tmp_path / "batch_input.jsonl").write_text("\n".join(requests) + "\n")
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("DEEPINFRA_TOKEN", server.token)
        monkeypatch.setattr(time, "sleep", server.sandbox.clock.advance)
        exec(compile(script.replace("https://api.deepinfra.com/v1/openai", server.base_url), "example", "exec"), {})
    printed = capsys.readouterr().out
    assert "status=completed completed=2/2" in printed
    assert re.search(r"^request-0: \S", printed, re.M) and re.search(r"^request-1: \S", printed, re.M)

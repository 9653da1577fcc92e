"""The shared HTTP loop over real loopback HTTP: retries that never duplicate a create, credentials that stay
home, streamed multipart uploads in bounded memory, downloads streamed into the caller's file and started
over on each retry."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from batch_mcp.backends import http
from batch_mcp.backends.base import (
    ConnectionFailed,
    NotFoundError,
    OutcomeUnknown,
    RateLimitedError,
    ServiceError,
)
from batch_mcp.backends.http import HttpClient, HttpOptions, redact_url
from batch_mcp.backends.retries import RetryPolicy

FAST = HttpOptions(retry=RetryPolicy(max_attempts=3, base_delay_s=0.01, max_delay_s=0.05), timeout_s=30.0)
KEY = "sk-test-0123456789"


class Dropped(Exception):
    """Raised mid-response so the server closes the connection."""


class _Quiet(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], Dropped))


class _DropAfterStart(Response):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"100")]})
        await send({"type": "http.response.body", "body": b'{"', "more_body": True})
        raise Dropped


class Recorder:
    """A loopback HTTP server that records what it got and answers from a script of outcomes."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str | None]] = []  # method, path, authorization
        self.script: deque[str] = deque()
        self.committed = 0
        app = Starlette(routes=[
            Route("/v1/flaky", self.flaky, methods=["GET", "POST"]),
            Route("/v1/form", self.form, methods=["POST"]),
            Route("/v1/sink", self.sink, methods=["POST", "PUT"]),
            Route("/v1/data", self.data, methods=["GET"]),
            Route("/v1/missing", self.missing, methods=["GET"]),
            Route("/v1/redirect", self.redirect, methods=["GET"]),
        ])
        logging.getLogger("uvicorn.error").addFilter(_Quiet())
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._socket.bind(("127.0.0.1", 0))
        self.base_url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, ws="none"))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True)
        self.redirect_to = ""
        self.payload = b""

    def __enter__(self) -> Recorder:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self._server.started
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(10)
        self._socket.close()

    def _note(self, request: Request) -> None:
        self.seen.append((request.method, request.url.path, request.headers.get("authorization")))

    async def flaky(self, request: Request) -> Response:
        """``commit-500``, ``commit-drop`` and ``ok`` count as done; ``429`` and ``500`` do not."""
        self._note(request)
        await request.body()
        step = self.script.popleft() if self.script else "ok"
        if step.startswith("commit") or step == "ok":
            self.committed += 1
        if step == "429":
            return JSONResponse({"error": {"message": "slow down", "code": "rate_limit"}}, 429,
                                headers={"retry-after-ms": "10", "x-request-id": "req_429"})
        if step in ("500", "commit-500"):
            return JSONResponse({"error": {"message": "boom", "type": "server_error"}}, 500)
        if step == "commit-drop":
            return _DropAfterStart()
        return JSONResponse({"ok": True, "committed": self.committed})

    async def form(self, request: Request) -> Response:
        self._note(request)
        form = await request.form()
        upload = form["file"]
        content = await upload.read()  # type: ignore[union-attr]
        return JSONResponse({"purpose": form["purpose"], "filename": upload.filename,  # type: ignore[union-attr]
                             "content_type": upload.content_type,  # type: ignore[union-attr]
                             "sha256": hashlib.sha256(content).hexdigest(),
                             "declared": int(request.headers["content-length"])})

    async def sink(self, request: Request) -> Response:
        self._note(request)
        received = 0
        async for chunk in request.stream():
            received += len(chunk)
        return JSONResponse({"received": received, "declared": int(request.headers["content-length"])})

    async def data(self, request: Request) -> Response:
        self._note(request)
        return Response(self.payload, media_type="application/octet-stream")

    async def missing(self, request: Request) -> Response:
        self._note(request)
        return JSONResponse({"error": {"message": "No such file: file-9", "code": "not_found"}}, 404,
                            headers={"x-request-id": "req_404"})

    async def redirect(self, request: Request) -> Response:
        self._note(request)
        return RedirectResponse(self.redirect_to, 302)


@pytest.fixture(scope="module")
def home() -> Iterator[Recorder]:
    with Recorder() as server:
        yield server


@pytest.fixture(scope="module")
def elsewhere() -> Iterator[Recorder]:
    with Recorder() as server:
        yield server


@pytest.fixture
async def client(home: Recorder) -> Any:
    home.seen.clear()
    home.script.clear()
    home.committed = 0
    http = HttpClient(backend="test", base_url=home.base_url + "/v1", credentials={"Authorization": f"Bearer {KEY}"},
                      options=FAST)
    yield http
    await http.aclose()


# --- retries ------------------------------------------------------------------------------------------


async def test_a_create_answered_500_after_commit_is_not_resent(client: HttpClient, home: Recorder) -> None:
    home.script.extend(["commit-500"])
    with pytest.raises(OutcomeUnknown, match="may or may not have taken effect") as caught:
        await client.request("create", "POST", client.url("/flaky"), idempotent=False, json={"a": 1})
    assert caught.value.status_code == 500
    assert len(home.seen) == 1 and home.committed == 1


async def test_a_create_whose_answer_is_lost_is_not_resent(client: HttpClient, home: Recorder) -> None:
    home.script.extend(["commit-drop"])
    with pytest.raises(OutcomeUnknown, match="RemoteProtocolError"):
        await client.request("create", "POST", client.url("/flaky"), idempotent=False, json={"a": 1})
    assert len(home.seen) == 1 and home.committed == 1


async def test_a_create_refused_with_429_is_resent(client: HttpClient, home: Recorder) -> None:
    home.script.extend(["429", "429"])
    response = await client.request("create", "POST", client.url("/flaky"), idempotent=False, json={"a": 1})
    assert response.json() == {"ok": True, "committed": 1}
    assert len(home.seen) == 3


async def test_idempotent_calls_retry_5xx_and_drops(client: HttpClient, home: Recorder) -> None:
    home.script.extend(["500", "commit-drop"])
    response = await client.request("get", "GET", client.url("/flaky"), idempotent=True)
    assert response.status_code == 200 and len(home.seen) == 3


async def test_retries_give_up_with_the_last_answer_explained(client: HttpClient, home: Recorder) -> None:
    home.script.extend(["429"] * 3)
    with pytest.raises(RateLimitedError, match="slow down") as caught:
        await client.request("get", "GET", client.url("/flaky"), idempotent=True)
    assert caught.value.request_id == "req_429" and caught.value.retry_after_s == pytest.approx(0.01)
    home.script.extend(["500"] * 3)
    with pytest.raises(ServiceError, match="boom"):
        await client.request("get", "GET", client.url("/flaky"), idempotent=True)


async def test_a_create_that_never_connected_is_retried_then_reported_as_not_sent() -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    http = HttpClient(backend="test", base_url=f"http://127.0.0.1:{port}", credentials={}, options=FAST)
    try:
        with pytest.raises(ConnectionFailed, match="after 3 attempts") as caught:
            await http.request("create", "POST", http.url("/v1/batches"), idempotent=False, json={})
        assert not isinstance(caught.value, OutcomeUnknown)  # it surely does not exist: safe to try again
    finally:
        await http.aclose()


# --- credentials stay home ------------------------------------------------------------------------------


async def test_the_key_goes_only_to_its_own_origin(client: HttpClient, home: Recorder, elsewhere: Recorder) -> None:
    elsewhere.seen.clear()
    elsewhere.payload = home.payload = b"results\n"
    await client.request("get", "GET", client.url("/data"), idempotent=True)
    await client.request("get", "GET", elsewhere.base_url + "/v1/data", idempotent=True)
    away, unsigned = io.BytesIO(), io.BytesIO()
    await client.download("download", elsewhere.base_url + "/v1/data", away)
    await client.download("download", client.url("/data"), unsigned, authenticated=False)
    assert [auth for *_, auth in home.seen] == [f"Bearer {KEY}", None]
    assert [auth for *_, auth in elsewhere.seen] == [None, None]
    assert away.getvalue() == unsigned.getvalue() == b"results\n"


async def test_redirects_are_not_followed(client: HttpClient, home: Recorder, elsewhere: Recorder) -> None:
    elsewhere.seen.clear()
    home.redirect_to = elsewhere.base_url + "/v1/data?X-Signature=secret"
    with pytest.raises(ServiceError, match="redirect") as caught:
        await client.request("get", "GET", client.url("/redirect"), idempotent=True)
    assert elsewhere.seen == [] and "secret" not in str(caught.value)


def test_redact_url_drops_query_fragment_and_user_info() -> None:
    assert redact_url("https://user:pw@store.example:8443/b/k.jsonl?X-Amz-Signature=s#f") == \
        "https://store.example:8443/b/k.jsonl"


def test_plain_http_off_loopback_is_refused() -> None:
    with pytest.raises(ValueError, match="unencrypted"):
        HttpClient(backend="test", base_url="http://api.example/v1", credentials={}, options=FAST)
    assert KEY not in repr(HttpClient(backend="test", base_url="https://api.example/v1",
                                      credentials={"Authorization": KEY}, options=FAST))


# --- uploads ------------------------------------------------------------------------------------------


async def test_multipart_upload_is_a_valid_form_with_the_exact_length(client: HttpClient, tmp_path: Path) -> None:
    path = tmp_path / 'odd "name".jsonl'
    path.write_bytes(b'{"custom_id": "a"}\n' * 1000)
    seen: list[tuple[int, int]] = []

    async def progress(done: int, total: int) -> None:
        seen.append((done, total))

    response = await client.upload_multipart("upload", client.url("/form"), path, fields={"purpose": "batch"},
                                             on_progress=progress)
    answer = response.json()
    assert answer["purpose"] == "batch" and answer["content_type"] == "application/jsonl"
    assert answer["filename"] == 'odd %22name%22.jsonl'
    assert answer["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert seen[-1] == (path.stat().st_size, path.stat().st_size)


async def test_put_file_sends_no_credentials_by_default(client: HttpClient, home: Recorder, tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"x" * 3_000_000)
    response = await client.put_file("upload", client.url("/sink"), path)
    assert response.json() == {"received": 3_000_000, "declared": 3_000_000}
    assert home.seen[-1] == ("PUT", "/v1/sink", None)


UPLOAD_RSS_SCRIPT = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import anyio
    from batch_mcp.backends.http import HttpClient, HttpOptions

    def peak_kib():  # VmHWM: this program's own peak (ru_maxrss would start at the parent's)
        status = Path("/proc/self/status").read_text().splitlines()
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))

    async def main():
        http = HttpClient(backend="bench", base_url=sys.argv[1], credentials={}, options=HttpOptions())
        before = peak_kib()
        response = await http.upload_multipart("upload", sys.argv[1] + "/v1/sink", Path(sys.argv[2]),
                                               fields={"purpose": "batch"})
        await http.aclose()
        print(json.dumps({"answer": response.json(), "before_kib": before, "peak_kib": peak_kib()}))

    anyio.run(main)
""")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the peak RSS from /proc")
def test_a_200_mb_multipart_upload_stays_under_100_mib(home: Recorder, tmp_path: Path) -> None:
    """In a child process of its own, so the peak RSS is the uploader's alone."""
    path = tmp_path / "big.jsonl"
    line = b'{"custom_id": "r", "method": "POST", "url": "/v1/chat/completions", "body": {}}\n'
    with path.open("wb") as out:
        for _ in range(200_000_000 // (len(line) * 10_000) + 1):
            out.write(line * 10_000)
    size = path.stat().st_size
    assert size >= 200_000_000
    done = subprocess.run([sys.executable, "-c", UPLOAD_RSS_SCRIPT, home.base_url, str(path)],
                          capture_output=True, text=True, timeout=600, check=True)
    report = json.loads(done.stdout)
    assert report["answer"]["received"] == report["answer"]["declared"] > size
    assert report["peak_kib"] / 1024 < 100, report


# --- downloads ----------------------------------------------------------------------------------------


async def test_a_retried_download_starts_the_file_over(client: HttpClient, home: Recorder, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The first answer breaks off after its first bytes; the file holds only the complete second one."""
    monkeypatch.setattr(http, "CHUNK_BYTES", 1)  # so the broken answer's first bytes reach the file
    home.script.extend(["commit-drop", "ok"])
    dest = tmp_path / "out.json"
    with dest.open("wb") as out:
        written = await client.download("download", client.url("/flaky"), out)
    assert json.loads(dest.read_bytes()) == {"ok": True, "committed": 2}
    assert written == dest.stat().st_size


async def test_a_failed_download_explains_itself_and_writes_nothing(client: HttpClient) -> None:
    out = io.BytesIO()
    with pytest.raises(NotFoundError, match="No such file: file-9") as caught:
        await client.download("download", client.url("/missing"), out)
    assert caught.value.request_id == "req_404" and caught.value.status_code == 404
    assert out.getvalue() == b""


async def test_a_download_streams_to_disk_with_progress(client: HttpClient, home: Recorder, tmp_path: Path) -> None:
    home.payload = os.urandom(5 * 1024 * 1024 + 3)
    seen: list[tuple[int, int]] = []

    async def progress(done: int, total: int) -> None:
        seen.append((done, total))

    dest = tmp_path / "out.jsonl"
    with dest.open("wb") as out:
        assert await client.download("download", client.url("/data"), out, on_progress=progress) == len(home.payload)
    assert dest.read_bytes() == home.payload
    assert len(seen) > 1 and seen[-1] == (len(home.payload), len(home.payload))

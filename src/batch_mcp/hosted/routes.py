"""The two HTTP routes of hosted mode's links, beside the MCP endpoint and outside its bearer auth: the link
itself is the credential (like a presigned storage URL), and a download also needs the caller's key.

- ``PUT /uploads/<token>``: the link is consumed (once, in the job store: a second PUT, or one after it
  expired, is refused with 410), the JSONL body is streamed into a new file of the link's account, checked
  with the same preflight as a local file, and kept only if valid; the answer is the report, problems with
  their line numbers.
- ``GET /downloads/<token>``: a result file of the link's account, to a request whose ``X-Api-Key-<Backend>``
  header holds a key of that account (another tenant's key, or none, is refused).
"""

from __future__ import annotations

import hmac
import logging
import os
import stat
from typing import Any

import anyio
from mcp.server import MCPServer
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response

from batch_mcp.backends.registry import CATALOG
from batch_mcp.hosted.tenants import Hosting
from batch_mcp.schemas.preflight import PreflightReport
from batch_mcp.services.links import LinkRefused
from batch_mcp.services.preflight import UnusableInput, preflight
from batch_mcp.services.workspace import NewFile, OutputTaken
from batch_mcp.tools.errors import key_header
from batch_mcp.tools.hosted_tools import DOWNLOADS_PATH, UPLOADS_PATH

log = logging.getLogger(__name__)
_SPENT = ("This upload link is unknown, used already or expired (each takes one PUT): call create_upload_link "
          "for a new one.")


def _refused(status: int, error: str, message: str, **more: Any) -> JSONResponse:
    return JSONResponse({"error": error, "message": message, **more}, status_code=status)


def _report(report: PreflightReport, upload_id: str) -> dict[str, Any]:
    """What the uploader needs of the preflight report: no server path, every problem with its line."""
    problems = [{"line": p.line, "severity": p.severity, "code": p.code, "message": p.message}
                for p in report.problems]
    return {"upload_id": upload_id, "valid": report.valid, "requests": report.requests, "bytes": report.bytes,
            "batches": report.batches, "provider": report.provider, "endpoint": report.endpoint,
            "errors": report.error_count, "warnings": report.warning_count, "problems": problems,
            "truncated": report.truncated}


def register_link_routes(mcp: MCPServer, hosting: Hosting) -> None:
    links, max_upload_bytes = hosting.links, hosting.max_upload_bytes

    @mcp.custom_route(f"{UPLOADS_PATH}/{{token}}", methods=["PUT"])
    async def upload(request: Request) -> Response:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_upload_bytes:  # before the link is spent
            return _refused(413, "too_large", f"This service takes uploads of at most {max_upload_bytes:,} bytes.")
        link = hosting.base.store.consume_link(request.path_params["token"], "upload")
        if link is None:
            return _refused(410, "link_refused", _SPENT)
        backend, upload_id = link.payload["backend"], link.payload["upload_id"]
        target = links.upload_path(link.account, upload_id)
        target.parent.mkdir(parents=True, exist_ok=True)
        limits = hosting.base.limits_for(backend)
        try:
            with NewFile(target, if_taken="this upload link was used already") as new:
                size = 0
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > max_upload_bytes:
                        new.discard()
                        return _refused(413, "too_large", f"This service takes uploads of at most "
                                                          f"{max_upload_bytes:,} bytes; nothing was kept.")
                    new.out.write(chunk)
        except OutputTaken:  # an upload id is made once, so only a planted file can hold its name
            return _refused(409, "upload_exists", _SPENT)
        # checked in place (the rules look at the file's name too); submit_batch checks it again before it sends
        try:
            report = await anyio.to_thread.run_sync(lambda: preflight(target, None, None, limits))
        except UnusableInput as exc:
            target.unlink()
            return _refused(422, "unusable", f"{exc}. Nothing was kept: fix the file, then call "
                                             "create_upload_link for a new link and PUT it there.")
        if not report.valid:
            target.unlink()  # ours, created above: an invalid file is not kept
            return JSONResponse({**_report(report, upload_id), "message": "Nothing was kept: fix the lines named "
                                 "in problems, then call create_upload_link for a new link and PUT the file there."},
                                status_code=422)
        log.info("upload %s received: %d requests, %d bytes", upload_id, report.requests, report.bytes)
        return JSONResponse({**_report(report, upload_id),
                             "message": f"Uploaded. Next: submit_batch with upload_id {upload_id}."}, status_code=201)

    @mcp.custom_route(f"{DOWNLOADS_PATH}/{{token}}", methods=["GET"])
    async def download(request: Request) -> Response:
        try:
            link = links.check(request.path_params["token"])
            path = links.result_file(link.account, link.name)
        except LinkRefused as exc:
            return _refused(exc.status, "link_refused", str(exc))
        header = key_header(CATALOG[link.backend].capabilities)
        key = request.headers.get(header.lower(), "").strip()
        if not key:
            return _refused(401, "key_required", f"Send the {header} header with the key the job was submitted "
                                                 "with: a download link works only for its own account.")
        if not hmac.compare_digest(hosting.account(link.backend, key), link.account):
            return _refused(403, "other_account", f"This link belongs to another account than the key in {header}.")
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            mode = 0
        if not stat.S_ISREG(mode):
            return _refused(404, "gone", "That file is no longer here: call download_batch_results again.")
        media = "text/csv" if path.suffix == ".csv" else "application/jsonl"
        return FileResponse(path, media_type=media, filename=path.name)

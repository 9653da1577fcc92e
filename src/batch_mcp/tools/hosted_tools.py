"""Hosted mode's file tools: a remote agent's paths mean nothing here, so files come in through an upload link
and results go out as download links. Registered only in hosted mode (``register_batch_tools``)."""

from __future__ import annotations

import shlex
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from pydantic import Field

from batch_mcp.backends.registry import CATALOG
from batch_mcp.schemas.jobs import DownloadSummary, SubmitResult, UploadLink
from batch_mcp.services.batches import BatchService
from batch_mcp.services.core import file_stem
from batch_mcp.services.lineage import is_group_id
from batch_mcp.services.links import UPLOAD_ID, LinkRefused, Links, new_upload_id
from batch_mcp.tools.arguments import (
    CREATES_REMOTE,
    ArgumentShapes,
    EndpointArg,
    Metadata,
    NewJob,
    ProviderArg,
    metadata_dict,
    titled,
)
from batch_mcp.tools.context import AppState, TenantView, progress_reporter, results_links, state_of
from batch_mcp.tools.errors import agent_errors, key_header

UploadId = Annotated[str, Field(pattern=UPLOAD_ID.pattern, description="The upload_id of create_upload_link, "
                                                                       "once its file was PUT.")]
UPLOADS_PATH, DOWNLOADS_PATH = "/uploads", "/downloads"


def upload_of(tenant: TenantView, links: Links, upload_id: str, backend: str | None) -> tuple[Path, str]:
    """The uploaded file and its backend, among this caller's accounts only."""
    for name in [backend] if backend else list(tenant.accounts):
        if name in tenant.accounts and (path := links.upload_path(tenant.accounts[name], upload_id)).is_file():
            return path, name
    raise LinkRefused(f"No upload {upload_id!r} for your key{f' on {backend}' if backend else ''}: call "
                      "create_upload_link, PUT the file to its URL (its answer must say valid), then pass its "
                      "upload_id here.", status=404)


def results_backend(service: BatchService, batch_id: str) -> str:
    """The backend whose account holds a job's (or job group's) results."""
    if is_group_id(batch_id) and (group := service.store.get_group(batch_id)) is not None:
        return group.backend
    return service.resolve(batch_id)[0]


def register_hosted_tools(mcp: MCPServer, choosable: ArgumentShapes) -> None:
    @mcp.tool(
        **titled("Create an upload link", CREATES_REMOTE.model_copy(update={"idempotent_hint": False})),
        description="The way to send a JSONL batch file to this hosted service: returns a one-time URL that "
                    "expires, and the curl command that PUTs the file to it. The upload answers with the file's "
                    "validation report (line numbers of any problem). Next: run the curl command, then "
                    "submit_batch with the upload_id.",
    )
    @choosable
    @agent_errors
    async def create_upload_link(ctx: Context[AppState, Any], backend: str | None = None) -> UploadLink:
        state = state_of(ctx)
        tenant, links = state.tenant(), state.links()
        service = tenant.service
        name = service.backend_name(backend)
        service.backend_for(name)  # a backend without the caller's key says which header to send
        upload_id = new_upload_id()
        ttl = timedelta(seconds=links.ttl_s)
        token = service.store.create_link("upload", {"backend": name, "upload_id": upload_id}, ttl,
                                          account=tenant.accounts[name])
        url = f"{tenant.origin}{UPLOADS_PATH}/{token}"
        return UploadLink(upload_id=upload_id, upload_url=url, curl=f"curl -fsS -T requests.jsonl {shlex.quote(url)}",
                          expires_at=datetime.now(UTC) + ttl, backend=name,
                          next_step="Run the curl command with your file's name (once: the link then stops "
                                    f"working), then call submit_batch with upload_id {upload_id}.")

    @mcp.tool(
        **titled("Submit a batch file", CREATES_REMOTE),
        description="The usual way to run a batch: takes a file uploaded through create_upload_link, validates "
                    "it, uploads it to the backend and creates the job in one call. Submitting the same file "
                    "with the same options again returns the existing job instead of paying twice (unless it "
                    "failed, was cancelled or expired, or new=true). Next: wait_for_batch with the batch_id.",
    )
    @choosable
    @agent_errors
    async def submit_batch(upload_id: UploadId, ctx: Context[AppState, Any], provider: ProviderArg = None,
                           endpoint: EndpointArg = None, metadata: Metadata = None, new: NewJob = False,
                           completion_window: str = "24h", backend: str | None = None) -> SubmitResult:
        state = state_of(ctx)
        tenant = state.tenant()
        path, name = upload_of(tenant, state.links(), upload_id, backend)
        return await tenant.service.submit(str(path), provider, endpoint, metadata_dict(metadata), new=new,
                                           backend=name, completion_window=completion_window,
                                           on_progress=progress_reporter(ctx, "bytes uploaded"))

    @mcp.tool(
        **titled("Download batch results", CREATES_REMOTE),  # files of its own on this service, replaced each time
        description="Fetch a finished job's results and errors files onto this service and summarise them: "
                    "succeeded/failed/missing counts, error codes, token usage and a preview. The files and the "
                    "merged table (CSV and JSONL) come back as download links that expire; fetch them with the "
                    "same X-Api-Key header as the job's backend. The table is also the resource "
                    "batch://results/{batch_id}, read in pages.",
    )
    @agent_errors(links=results_links)
    async def download_batch_results(batch_id: Annotated[str, Field(min_length=1, max_length=128,
                                                                    pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")],
                                     ctx: Context[AppState, Any]) -> DownloadSummary:
        state = state_of(ctx)
        tenant, links = state.tenant(), state.links()
        backend = results_backend(tenant.service, batch_id)
        account = tenant.accounts[backend]
        folder = links.results(account) / file_stem(batch_id)
        folder.mkdir(parents=True, exist_ok=True)
        summary = await tenant.service.download(batch_id, str(folder), overwrite=True,
                                                workspace=tenant.service.workspace,
                                                on_progress=progress_reporter(ctx, "bytes downloaded"))

        def link(path: str | None) -> str | None:
            if path is None:
                return None
            token = links.sign(backend, account, Path(path).relative_to(links.results(account)).as_posix())
            return f"{tenant.origin}{DOWNLOADS_PATH}/{token}"

        header = key_header(CATALOG[backend].capabilities)
        outcome = summary.next_step if summary.failed or summary.missing else "All requests succeeded."
        return summary.model_copy(update={
            "output_path": link(summary.output_path), "error_path": link(summary.error_path),
            "table_csv_path": link(summary.table_csv_path), "table_jsonl_path": link(summary.table_jsonl_path),
            "part_files": [link(p) for p in summary.part_files],
            "next_step": f"{outcome} The *_path fields are download links valid for {links.ttl_s / 60:.0f} "
                         f"minutes: fetch each with curl -fsS -H '{header}: <your key>' -o FILE 'URL'.",
        })

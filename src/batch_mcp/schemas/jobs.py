"""What the workflow hands back to agents: compact views of jobs, uploads and results.

Each model is a tool's structured output, so every field is described for a model reading the
schema, and each carries a ``next_step`` that says what to call next.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, SerializerFunctionWrapHandler, model_serializer

from batch_mcp.domain import TERMINAL_STATUSES, Counts, Job

#: The resource listing this server's jobs; one job is ``{JOBS_URI}/{batch_id}``, a later page ``?cursor=...``.
JOBS_URI = "batch://jobs"
#: A downloaded job's merged results table, a page at a time: ``{RESULTS_URI}/{batch_id}``, then ``?cursor=...``.
RESULTS_URI = "batch://results"
_NEXT_STEP = {
    "completed": "Done: call download_batch_results to fetch and summarise the results.",
    "cancelled": "Cancelled: results of requests finished before the cancel are kept; "
                 "call download_batch_results to fetch them.",
    "expired": "Expired (24 h window passed): finished requests are kept; call download_batch_results, "
               "then retry the rest in a new batch.",
    "failed": "The job failed before running: read `errors` (line numbers refer to the input file), "
              "fix the file, then call submit_batch again.",
    "cancelling": "Cancelling: call wait_for_batch until it reaches `cancelled`.",
}
_RUNNING = "Running: call wait_for_batch to wait for it (or get_batch later to check)."
#: Where a job deleted at its provider records when (in ``Job.extra``): it is then shown as last seen.
DELETED_AT = "deleted_at"


class ModelCost(BaseModel):
    model: str
    requests: int
    input_tokens: int
    output_tokens: int
    priced: bool = Field(description="False when the price table does not know this model.")
    input_cost: float | None = None
    output_cost: float | None = None
    total_cost: float | None = None


class CostReport(BaseModel):
    """Cost of a batch, per model, at batch prices."""

    currency: str
    backend: str | None = Field(default=None, description="The backend whose prices were applied.")
    prices_as_of: str = Field(description="Date of the price table used.")
    batch_discount: float | None = Field(description="Discount against real-time prices, e.g. 0.5 for half price; "
                                                     "null when the backend documents none (then nothing is priced).")
    estimated: bool = Field(description="True before submission (estimate); False when computed from usage.")
    models: list[ModelCost]
    total_cost: float | None = Field(default=None, description="Sum over models; null if any model is unpriced.")
    unknown_models: list[str] = Field(default_factory=list, description="Models with no known price.")
    unpriced_reason: str | None = Field(default=None, description="Why there is no total (an unknown model or "
                                                                  "discount), and how to add the missing figure.")
    note: str



class BatchErrorItem(BaseModel):
    code: str | None = None
    message: str | None = None
    line: int | None = None


class BatchView(BaseModel):
    """A batch job as an agent needs to see it."""

    batch_id: str = Field(description="The job's id; pass it to the other batch tools.")
    status: str = Field(description="validating, queued, in_progress, finalizing, cancelling, or a terminal "
                                    "status: completed, failed, expired, cancelled.")
    terminal: bool = Field(description="True when the status will not change any more.")
    provider: str | None = Field(default=None, description="openai or anthropic.")
    endpoint: str | None = Field(default=None, description="The endpoint every request goes to (openai only).")
    total: int = Field(default=0, description="Requests in the job.")
    completed: int = Field(default=0, description="Requests that succeeded so far.")
    failed: int = Field(default=0, description="Requests that failed so far.")
    cancelled: int = Field(default=0, description="Requests that will not run because the job was cancelled.")
    expired: int = Field(default=0, description="Requests that did not run before the job's window ran out.")
    processing: int = Field(default=0, description="Requests not finished yet.")
    percent_done: float = Field(default=0.0, description="Share of requests settled (succeeded, failed, cancelled "
                                                         "or expired), 0-100; 0 while the backend reports none.")
    results_ready: bool = Field(description="True when download_batch_results can fetch results now.")
    created_at: datetime | None = None
    completed_at: datetime | None = None
    expires_at: datetime | None = Field(default=None, description="When the job expires if not finished.")
    metadata: dict[str, str] | None = None
    errors: list[BatchErrorItem] = Field(default_factory=list,
                                         description="Why the job failed (first 20), with input line numbers.")
    parts: list[str] | None = Field(default=None, description="For a job group (an input split because it "
                                    "exceeded the per-batch limits): the batch_id of each part.")
    failed_parts: list[str] = Field(default_factory=list, description="For a job group: parts that failed "
                                    "before running; their requests have no results.")
    parent_batch_id: str | None = Field(default=None, description="For a retry: the job whose failures it reruns.")
    cost: CostReport | None = Field(default=None, description="Actual cost, once results were downloaded.")
    next_step: str = Field(description="What to do next.")

    @property
    def settled(self) -> int:
        """Requests that will not change any more: succeeded, failed, cancelled or expired."""
        return self.completed + self.failed + self.cancelled + self.expired

    @classmethod
    def from_job(cls, job: Job) -> BatchView:
        counts = job.counts or Counts()
        total = counts.total
        settled = counts.succeeded + counts.failed + counts.cancelled + counts.expired
        return cls(
            batch_id=job.ref,
            status=job.status.value,
            terminal=job.is_terminal,
            provider=job.line_format,
            endpoint=job.endpoint,
            total=total,
            completed=counts.succeeded,
            failed=counts.failed,
            cancelled=counts.cancelled,
            expired=counts.expired,
            processing=counts.processing,
            percent_done=_percent(settled, total),
            results_ready=job.results_ready,
            created_at=job.created_at,
            completed_at=job.ended_at,
            expires_at=job.expires_at,
            metadata=job.metadata or None,
            errors=[BatchErrorItem(code=e.code, message=e.message, line=e.line) for e in job.errors[:20]],
            next_step=(f"Deleted at the provider ({job.extra[DELETED_AT]}), results included; this is how it "
                       "ended. Files downloaded before stay where they were saved." if DELETED_AT in job.extra
                       else _NEXT_STEP.get(job.status.value, _RUNNING)),
        )

    @classmethod
    def from_group(cls, group_id: str, parts: list[Job], expected_parts: int) -> BatchView:
        """One view of a split job: counts summed, status the least advanced part's (see group_status)."""
        views = [cls.from_job(part) for part in parts]
        status = group_status([v.status for v in views], expected_parts)
        total = sum(v.total for v in views)
        done = sum(v.settled for v in views)
        errors = [e.model_copy(update={"message": f"{v.batch_id}: {e.message}"}) for v in views for e in v.errors]
        terminal = status in TERMINAL_STATUSES
        failed_parts = [v.batch_id for v in views if v.status == "failed"]
        next_step = _NEXT_STEP.get(status, _RUNNING)
        if failed_parts and status == "completed":
            next_step = (f"{len(failed_parts)} part(s) failed before running (see errors); the others finished. "
                         "Call download_batch_results for their results, then retry_failed_requests to rerun the "
                         "failed parts' requests.")
        return cls(
            batch_id=group_id, status=status, terminal=terminal,
            provider=views[0].provider if views else None, endpoint=views[0].endpoint if views else None,
            total=total, completed=sum(v.completed for v in views), failed=sum(v.failed for v in views),
            cancelled=sum(v.cancelled for v in views), expired=sum(v.expired for v in views),
            processing=sum(v.processing for v in views), percent_done=_percent(done, total),
            results_ready=terminal and any(v.results_ready for v in views),
            created_at=min((v.created_at for v in views if v.created_at), default=None),
            completed_at=max((v.completed_at for v in views if v.completed_at), default=None) if terminal else None,
            metadata=views[0].metadata if views else None, errors=errors[:20],
            parts=[v.batch_id for v in views], failed_parts=failed_parts, next_step=next_step,
        )


def _percent(settled: int, total: int) -> float:
    """Only what the backend counted as settled: nothing is guessed from time or status."""
    return round(100.0 * settled / total, 1) if total else 0.0


_PROGRESS_ORDER = ["validating", "queued", "in_progress", "finalizing"]


def group_status(statuses: list[str], expected_parts: int) -> str:
    """Running while any part runs (as the least advanced one); once all are done, the worst ending wins."""
    if len(statuses) < expected_parts:
        return "validating"
    running = [s for s in statuses if s not in TERMINAL_STATUSES]
    if running:
        if "cancelling" in running:
            return "cancelling"
        return min(running, key=lambda s: _PROGRESS_ORDER.index(s) if s in _PROGRESS_ORDER else 2)
    for ending in ("cancelled", "expired"):
        if ending in statuses:
            return ending
    return "failed" if all(s == "failed" for s in statuses) else "completed"


class UploadResult(BaseModel):
    """A validated input file, uploaded and ready for create_batch."""

    file_id: str = Field(description="Pass this to create_batch.")
    path: str
    bytes: int
    requests: int = Field(description="Request lines in the file.")
    sha256: str
    provider: str = Field(description="Detected or given provider.")
    endpoint: str | None = Field(default=None, description="Detected or given endpoint (openai only).")
    upload_expires_at: datetime | None = Field(default=None, description="When the upload URL expired/expires.")
    reused: bool = Field(description="True if an earlier upload of the same bytes was reused instead of uploading.")
    warnings: list[str] = Field(default_factory=list)
    next_step: str = "Call create_batch with this file_id (or use submit_batch next time to do it in one call)."


class SubmitResult(BaseModel):
    """The outcome of submit_batch or create_batch."""

    batch: BatchView = Field(description="The job.")
    file_id: str | None = Field(default=None, description="The uploaded file (null for a job group).")
    request_id: str | None = Field(default=None, description="Idempotency key: the same call again returns this "
                                                             "same job (null for a job group).")
    reused_existing_job: bool = Field(description="True if this exact submission already existed and was returned.")
    requests: int | None = Field(default=None, description="Request lines submitted.")
    warnings: list[str] = Field(default_factory=list)
    next_step: str = "Call wait_for_batch with this batch_id."


class WaitResult(BaseModel):
    """Where a job stands after waiting."""

    batch: BatchView = Field(description="The job.")
    timed_out: bool = Field(description="True if the wait ended at the timeout; the job goes on running.")
    waited_s: float
    next_step: str


class DeleteResult(BaseModel):
    """An ended job deleted at its provider."""

    batch_id: str
    status: str = Field(description="How the job ended.")
    deleted_now: bool = Field(description="False when an earlier call had deleted it already.")
    deleted_at: str = Field(description="When it was deleted at the provider.")
    kept_files: list[str] = Field(default_factory=list, description="Result files downloaded earlier: they stay "
                                                                    "on disk.")
    next_step: str


class JobSummary(BaseModel):
    """A job as one entry of a list: enough to pick it out. get_batch (or batch://jobs/{batch_id}) has the rest.

    Fields without a value are left out rather than sent as null: a page holds many entries.
    """

    batch_id: str
    status: str
    total: int = Field(default=0, description="Requests in the job.")
    completed: int = Field(default=0, description="Requests that succeeded so far.")
    failed: int = Field(default=0, description="Requests that failed so far.")
    results_ready: bool = Field(description="True when download_batch_results can fetch results now.")
    created_at: datetime | None = None
    provider: str | None = None
    input_path: str | None = Field(default=None, description="The file this server submitted for it.")
    group_id: str | None = Field(default=None, description="For a part of a job group: the group, the id to use.")
    parts: int | None = Field(default=None, description="For a job group: how many batches it runs as.")
    parent_batch_id: str | None = Field(default=None, description="For a retry: the job whose failures it reruns.")

    @model_serializer(mode="wrap")
    def _without_nulls(self, serialize: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {key: value for key, value in serialize(self).items() if value is not None}

    @classmethod
    def of(cls, view: BatchView, *, input_path: str | None = None, group_id: str | None = None) -> JobSummary:
        return cls(batch_id=view.batch_id, status=view.status, total=view.total, completed=view.completed,
                   failed=view.failed, results_ready=view.results_ready, created_at=view.created_at,
                   provider=view.provider, input_path=input_path, group_id=group_id,
                   parts=None if view.parts is None else len(view.parts), parent_batch_id=view.parent_batch_id)


class BatchList(BaseModel):
    """One page of jobs, newest first."""

    batches: list[JobSummary]
    next_cursor: str | None = Field(default=None, description="Pass as `cursor` to get the next page.")
    has_more: bool


class JobsPage(BaseModel):
    """One page of the jobs this server recorded, newest first."""

    jobs: list[JobSummary]
    count: int = Field(description="Jobs on this page.")
    next: str | None = Field(default=None, description="URI of the next (older) page; absent on the last page.")
    note: str | None = None


class ResultLinksView(BaseModel):
    """Short-lived presigned links to a job's result files."""

    batch_id: str
    output_file_url: str | None = Field(default=None, description="Presigned URL of the results JSONL.")
    error_file_url: str | None = Field(default=None, description="Presigned URL of the errors JSONL, if any.")
    expires_at: datetime | None = Field(default=None, description="When the links stop working.")
    parts: list[ResultLinksView] = Field(default_factory=list, description="For a job group: each part's links.")
    next_step: str = ("Download soon: the links expire. download_batch_results streams both files into an "
                      "allowed folder and summarises them.")


class ResultPreview(BaseModel):
    custom_id: str
    succeeded: bool
    text: str | None = Field(default=None, description="The output text, shortened.")
    error: str | None = Field(default=None, description="Error code and message, if it failed.")


class TokenUsage(BaseModel):
    input_tokens: int = 0
    output_tokens: int = 0


class DownloadSummary(BaseModel):
    """Result files saved to disk, and what they hold."""

    batch_id: str
    status: str
    output_path: str | None = Field(default=None, description="Where the results JSONL was written.")
    error_path: str | None = Field(default=None, description="Where the errors JSONL was written, if any.")
    table_csv_path: str | None = Field(default=None, description="Merged table, one row per request: custom_id, "
                                       "status, output text, error, tokens, joined with the input: the source "
                                       "record's columns for a prepared file, else the prompt (first 1,000 "
                                       "characters).")
    table_jsonl_path: str | None = Field(default=None, description="The same table as JSONL.")
    part_files: list[str] = Field(default_factory=list, description="For a job group: every part's result files.")
    succeeded: int
    failed: int
    missing: int = Field(description="Requests of the job with no result line at all (e.g. cancelled, expired).")
    error_codes: dict[str, int] = Field(default_factory=dict, description="Failed requests by error code.")
    usage: TokenUsage = Field(default_factory=TokenUsage)
    cost: CostReport | None = Field(default=None, description="Actual cost from the token usage, per model.")
    preview: list[ResultPreview] = Field(default_factory=list, description="A few results, shortened.")
    warnings: list[str] = Field(default_factory=list, description="Why the table may lack input columns.")
    next_step: str


class RetryResult(BaseModel):
    """A new job for the requests of a finished job that have no successful result."""

    retried: int = Field(description="Requests put into the retry file.")
    failed: int = Field(description="Of those, requests whose result was an error.")
    missing: int = Field(description="Of those, requests with no result at all (cancelled or expired).")
    not_retried: int = Field(default=0, description="Failed requests left out because their error says the "
                                                    "request itself is invalid: fix them in the input instead.")
    retry_file: str | None = Field(default=None, description="The new request file (a subset of the original).")
    submitted: SubmitResult | None = Field(default=None, description="The retry job, linked to its parent.")
    next_step: str


class PrepareResult(BaseModel):
    """A request file rendered from records, validated and ready to submit."""

    path: str = Field(description="The JSONL request file written; pass it to submit_batch.")
    source: str
    records: int = Field(description="Requests written, one per record.")
    columns: list[str] = Field(description="The source's columns (plain text has one: text).")
    skipped_blank: int = Field(description="Blank records skipped.")
    example_prompt: str = Field(description="The first record's rendered prompt, to check the template.")
    example_line: dict[str, Any] = Field(description="The first request line as written.")
    valid: bool = Field(description="The written file passed validation.")
    problems: list[str] = Field(default_factory=list, description="Validation problems, if any.")
    estimated_cost: CostReport | None = None
    next_step: str


class ResultsPage(BaseModel):
    """One page of a downloaded job's merged results table (long cells cut; the files have them whole)."""

    batch_id: str
    rows: list[dict[str, Any]] = Field(description="Table rows: custom_id, status, output_text, error, tokens, "
                                                   "and the input's columns.")
    first_row: int = Field(description="Number of this page's first row (1-based).")
    count: int
    cut_cells: int = Field(default=0, description="Cells shortened on this page.")
    next: str | None = Field(default=None, description="URI of the next page; absent on the last one.")
    table_csv_path: str
    table_jsonl_path: str


class UploadLink(BaseModel):
    """Hosted mode: where to PUT a JSONL file so that submit_batch can take it by upload_id."""

    upload_id: str = Field(description="Pass this to submit_batch once the file is uploaded.")
    upload_url: str = Field(description="One-time, expiring URL on this service that takes the file as an HTTP "
                                        "PUT body; it answers with the file's validation report.")
    curl: str = Field(description="The shell command that uploads a file through it (replace the file name).")
    expires_at: datetime
    backend: str = Field(description="The backend the upload is for.")
    next_step: str

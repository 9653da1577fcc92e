"""Turn every failure into a tool error an agent can act on: what happened, and what to do next."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any, ParamSpec, TypeVar

from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, ResourceLink, TextContent
from pydantic import BaseModel, ValidationError

from batch_mcp.backends import base
from batch_mcp.backends.registry import CATALOG
from batch_mcp.services.errors import (
    FileChanged,
    IncompleteDownload,
    InvalidBatchFile,
    JobHasNoResults,
    JobStillRunning,
    NotDeletable,
    OverBatchLimits,
    ResultsExist,
)
from batch_mcp.services.links import LinkRefused
from batch_mcp.services.once import SubmissionUnresolved
from batch_mcp.services.preflight import UnusableInput
from batch_mcp.services.prepare import PrepareError
from batch_mcp.services.workspace import PathNotAllowed
from batch_mcp.store import ClaimLost, StoreUnavailable

log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")

#: Failures whose message already says what to do.
_SELF_EXPLAINING = (FileChanged, IncompleteDownload, InvalidBatchFile, JobHasNoResults, JobStillRunning, NotDeletable,
                    OverBatchLimits, PrepareError, ResultsExist, UnusableInput, PathNotAllowed, ClaimLost,
                    StoreUnavailable, SubmissionUnresolved, LinkRefused)

#: What an agent does next after a backend error, by the error's kind (the most specific kind listed wins).
_BACKEND_NEXT = (
    (base.NotConfigured, "Set that variable in the MCP server's environment and restart it, or run "
                         "`batch-mcp serve --sandbox` to try every tool offline."),
    (base.CreateNotConfirmed, "The submission is remembered: call the same tool again with the same arguments "
                              "(not new=true); it looks for the job before anything is sent again."),
    (base.OutcomeUnknown, "It may have taken effect: check with get_batch or list_batches before calling again."),
    (base.RecoveryInconclusive, "Look at the candidates with get_batch, cancel any that should not run, and submit "
                                "again with new=true only if none is yours."),
    (base.RateLimitedError, "Wait a minute, then call the tool again; nothing was changed."),
    (base.Redirected, base.Redirected.hint),
    (base.ServiceError, "The service is failing; try again in a few minutes."),
    (base.TimedOut, "The service did not answer in time: try again later, and check the network and the "
                    "backend's base URL if it persists."),
    (base.ConnectionFailed, "Check the network and the backend's base URL, then call the tool again."),
    (base.NotFoundError, "Check the id: list_batches shows this account's jobs (ids look like backend:id)."),
    (base.ConflictError, "The job's state does not allow this: call get_batch to see its status."),
    (base.InvalidRequestError, "Fix what the message names, then call the tool again."),
    (base.ResultsNotReady, "Call wait_for_batch until the job has ended, then download_batch_results."),
    (base.LinkRefused, "Call download_batch_results again in a few minutes; it fetches fresh links."),
)


#: Set for the calls of a hosted server, whose callers send their keys with each request instead.
HOSTED_CALL: ContextVar[bool] = ContextVar("hosted_call", default=False)


def key_header(capabilities: base.Capabilities) -> str:
    """The request header that carries a caller's key for this backend in hosted mode."""
    return f"X-Api-Key-{capabilities.label.replace(' ', '')}"


def _key_advice(exc: base.BackendError) -> str | None:
    """What to do about a missing or refused key, when the caller is the one who supplies it."""
    if exc.backend not in CATALOG or not isinstance(exc, base.NotConfigured | base.AuthenticationError):
        return None
    caps = CATALOG[exc.backend].capabilities
    if HOSTED_CALL.get():
        said = "refused the key sent in" if isinstance(exc, base.AuthenticationError) else "needs a key in"
        return (f"{caps.label} {said} the {key_header(caps)} header: send your own valid key there with every "
                "request (it is never stored), then call the tool again.")
    if isinstance(exc, base.AuthenticationError):
        return (f"{caps.label} refused the key: set a valid {' or '.join(caps.token_env)} in the MCP server's "
                "environment and restart it.")
    return None


def _backend_text(exc: base.BackendError) -> str:
    text = str(exc)
    if isinstance(exc, base.RecoveryInconclusive) and exc.candidates:
        named = (f"{exc.backend}:{c}" if exc.backend and not c.startswith(f"{exc.backend}:") else c
                 for c in exc.candidates)
        text += f" Candidates: {', '.join(named)}."
    follow = _key_advice(exc) or next((hint for kind, hint in _BACKEND_NEXT if isinstance(exc, kind)), exc.hint)
    if exc.code == "upload_url_rejected":
        follow = "Call the same tool again in a few minutes; it fetches fresh upload links."
    if exc.code == "ambiguous_id":
        follow = "Pass the id with its backend prefix, as submit_batch and list_batches return it."
    return f"{text} {follow}"


def explain(exc: BaseException) -> str:
    """The agent-facing text of a failure. Never includes tokens or presigned query strings."""
    if isinstance(exc, base.BackendError):
        return _backend_text(exc)
    if isinstance(exc, _SELF_EXPLAINING):
        return str(exc)
    return (f"Unexpected internal error ({type(exc).__name__}); the server log has details. "
            "Try again; if it persists, report it.")


def invalid_arguments(tool: str, error: ValidationError) -> str:
    """Pydantic's report cut to what a model needs: which argument, what is wrong, and to call again."""
    problems = []
    for item in error.errors(include_url=False):
        where = ".".join(str(part) for part in item["loc"]) or "arguments"
        given = item.get("input")
        shown = "" if isinstance(given, dict) else f" (got {str(given)[:60]!r})"
        problems.append(f"{where}: {item['msg']}{shown}")
    return (f"Invalid arguments for {tool}: {'; '.join(problems)}. Fix {'them' if len(problems) > 1 else 'it'} "
            f"(the tool's input schema describes each argument) and call {tool} again.")


def unknown_arguments(tool: str, unknown: list[str], accepted: list[str]) -> str:
    names = ", ".join(unknown)
    return (f"{tool} does not take {'arguments' if len(unknown) > 1 else 'an argument'} named {names}; it accepts "
            f"{', '.join(accepted) or 'no arguments'}. Check the spelling and call {tool} again without "
            f"{'them' if len(unknown) > 1 else 'it'}.")


#: Extra content blocks for a result (resource links), beside its compact JSON text.
Links = Callable[[BaseModel], list[ResourceLink]]


def compact(result: R, links: Links | None = None) -> R:
    """A model result as structured content plus its text as compact JSON: the SDK would indent the text,
    about a fifth more for every client to carry (and some to truncate). ``links`` adds resource links."""
    if not isinstance(result, BaseModel):
        return result
    text = result.model_dump_json(by_alias=True)
    content: list[TextContent | ResourceLink] = [TextContent(type="text", text=text), *(links(result) if links else [])]
    return CallToolResult(content=content,  # type: ignore[return-value]
                          structured_content=result.model_dump(mode="json", by_alias=True))


def agent_errors(fn: Callable[P, Awaitable[R]] | None = None, *, links: Links | None = None) -> Any:
    """Wrap a tool so that every exception reaches the model as a readable ``isError`` result (as
    ``@agent_errors``, or ``@agent_errors(links=...)`` to add resource links to its results)."""
    if fn is None:
        return functools.partial(agent_errors, links=links)

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return compact(await fn(*args, **kwargs), links)
        except ToolError:
            raise
        except Exception as exc:
            if not isinstance(exc, (base.BackendError, *_SELF_EXPLAINING)):
                log.exception("tool %s failed", fn.__name__)
            raise ToolError(explain(exc)) from None

    return wrapper

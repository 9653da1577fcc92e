"""What the server tells agents about its backends, rendered from their capability records.

Limits, discounts and windows live once, in each backend's ``Capabilities``; the ``batch://backends``
resource, ``INSTRUCTIONS`` and tool descriptions are written from them here, so no text repeats a
number that could drift from the record.
"""

from __future__ import annotations

import json
from typing import Any

from batch_mcp.backends.base import Capabilities
from batch_mcp.backends.registry import Registry

BACKENDS_URI = "batch://backends"

_EXACTLY_ONCE = {
    "request_id": "the API replays a create that carries the same request_id, so a retry after a lost answer "
                  "returns the job made the first time",
    "metadata_tag": "the planned submission is stored first and its token rides in the batch metadata; after a "
                    "lost answer (and on restart) the newest batches are listed back to the planned time and the "
                    "one carrying the token is taken before anything is created again",
    "none": "the planned submission is stored first and the create is never sent twice blindly; after a lost "
            "answer (and on restart) the batches created since the planned time are listed and the one with the "
            "same request count is taken; when several match, they are named and nothing is created",
}


def limits_text(caps: Capabilities) -> str:
    """``50,000 requests, 200 MB``; a limit the backend does not document is said to be so."""
    requests = f"{caps.max_requests:,} requests" if caps.max_requests is not None else "no documented request cap"
    size = f"{caps.max_bytes / 1_000_000:g} MB" if caps.max_bytes is not None else "no documented size cap"
    return f"{requests}, {size}"


def discount_text(caps: Capabilities) -> str:
    """``50 % off real-time prices``, or that no discount is documented (never a guessed one)."""
    return f"{caps.discount:.0%} off real-time prices" if caps.discount is not None else "batch discount unknown"


def backend_facts(caps: Capabilities, *, configured: bool, default: bool) -> dict[str, Any]:
    """One backend as ``batch://backends`` lists it: data only, variable names but never their values."""
    metadata = None if caps.metadata is None else {
        "max_pairs": caps.metadata.max_pairs, "key_chars": caps.metadata.key_chars,
        "value_chars": caps.metadata.value_chars, "reserved_keys": list(caps.reserved_metadata_keys)}
    return {
        "name": caps.name,
        "label": caps.label,
        "configured": configured,
        "default": default,
        "line_formats": list(caps.line_formats),
        "endpoints": list(caps.endpoints),
        "limits": {"max_requests": caps.max_requests, "max_bytes": caps.max_bytes, "text": limits_text(caps)},
        "completion_windows": {"shortest": caps.windows.shortest, "longest": caps.windows.longest},
        "discount": caps.discount if caps.discount is not None else "unknown",
        "one_model_per_file": caps.mixed_models is False,
        "custom_id": "1-64 of [A-Za-z0-9_-]" if caps.custom_id == "anthropic" else "any string, unique in the file",
        "metadata": metadata,
        "upload": caps.upload,
        "exactly_once": {"method": caps.idempotency, "how": _EXACTLY_ONCE[caps.idempotency]},
        "result_retention_days": caps.retention_days,
        "input_retention_days": caps.input_retention_days,
        "deletes_ended_jobs": caps.deletes,
        "token_variables": list(caps.token_env),
        "base_url_variable": caps.base_url_env,
    }


def backends_json(registry: Registry) -> str:
    """Every backend the server knows, configured or not, as compact JSON."""
    facts = [backend_facts(caps, configured=configured, default=caps.name == registry.default)
             for caps, configured in registry.capabilities()]
    return json.dumps({"default": registry.default, "backends": facts}, separators=(",", ":"))


def default_capabilities(registry: Registry) -> Capabilities:
    return next(caps for caps, _ in registry.capabilities() if caps.name == registry.default)


def limits_sentence(registry: Registry) -> str:
    """For tool descriptions: one batch's limits on each configured backend (the default when none is)."""
    shown = [caps for caps, configured in registry.capabilities() if configured] or [default_capabilities(registry)]
    if len(shown) == 1:
        return f"one batch's limits ({limits_text(shown[0])})"
    return "one batch's limits (" + "; ".join(f"{caps.label}: {limits_text(caps)}" for caps in shown) + ")"


#: Hosted mode's flow: a caller's files come and go through links, with its own key on every request.
HOSTED_FLOW = ("Usual flow: create_upload_link → run its curl command → submit_batch with the upload_id → "
               "wait_for_batch (repeat while timed_out) → download_batch_results, whose files are download links. "
               "Every request carries your own provider key in its X-Api-Key-<Backend> header; you see only the "
               "jobs made with it. A file over ")


def instructions(registry: Registry, *, hosted: bool = False) -> str:
    """The server's INSTRUCTIONS: what it does, on which backends, at what price, and the usual flow."""
    configured = [caps for caps, ready in registry.capabilities() if ready]
    default = default_capabilities(registry)
    if len(configured) > 1:
        where = ("Backends here: " + "; ".join(f"{caps.label} ({discount_text(caps)}, results within "
                                               f"{caps.windows})" for caps in configured)
                 + f". Default: {default.name}; the tools that start work take `backend`, the others find it "
                   "from the id. ")
    else:
        where = f"Backend: {default.label} ({discount_text(default)}, results within {default.windows}). "
    flow = HOSTED_FLOW if hosted else (
        "Usual flow: validate_batch_file → submit_batch → wait_for_batch (repeat while timed_out) → "
        "download_batch_results. Files must be JSONL inside the allowed folders; a file over ")
    return (
        "Runs LLM batch inference jobs. " + where + flow
        + limits_sentence(registry) + " runs as a job group through submit_batch. The resource batch://jobs lists "
          f"every job this server made; {BACKENDS_URI} gives each backend's limits, endpoints and rules."
    )

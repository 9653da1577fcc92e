"""Every backend error reaches the agent as its cause plus the next step, in tool names, never as an
"unexpected internal error"."""

from __future__ import annotations

import pytest
from mcp.server.mcpserver.exceptions import ToolError

from batch_mcp.backends import base
from batch_mcp.backends.registry import Registry
from batch_mcp.services.once import SubmissionUnresolved
from batch_mcp.tools.errors import agent_errors, explain

CASES = [
    (base.RateLimitedError("slow down", backend="openai", status_code=429, retry_after_s=30), ["HTTP 429", "30 s",
                                                                                                "Wait a minute"]),
    (base.ServiceError("the API kept failing", status_code=503), ["HTTP 503", "few minutes"]),
    (base.Redirected("storage redirected", status_code=301), ["HTTP 301", "another region"]),
    (base.ConnectionFailed("could not connect"), ["could not connect", "base URL"]),
    (base.TimedOut("no answer in 60 s"), ["no answer in 60 s", "base URL"]),
    (base.NotFoundError("no such batch", status_code=404), ["HTTP 404", "list_batches"]),
    (base.ConflictError("already ended", status_code=409), ["HTTP 409", "get_batch"]),
    (base.InvalidRequestError("bad window", code="unsupported_window"), ["unsupported_window", "Fix what"]),
    (base.ResultsNotReady("results are not ready"), ["wait_for_batch", "download_batch_results"]),
    (base.CreateNotConfirmed("the answer was lost", client_token="tok-12345678"), ["answer was lost",
                                                                                  "not new=true"]),
    (base.OutcomeUnknown("the cancel got no answer"), ["no answer", "get_batch"]),
    (base.RecoveryInconclusive("two jobs carry the token", backend="openai", candidates=("batch_a", "batch_b")),
     ["openai:batch_a, openai:batch_b", "new=true"]),
    (base.LinkRefused("storage refused the link", status_code=403), ["HTTP 403", "download_batch_results again"]),
    (SubmissionUnresolved("groq", "tok-12345678", ("batch_x",), "two candidates"), ["groq:batch_x", "new=true"]),
]


@pytest.mark.parametrize(("error", "wanted"), CASES, ids=[type(case[0]).__name__ for case in CASES])
def test_each_backend_error_names_its_cause_and_the_next_step(error: Exception, wanted: list[str]) -> None:
    text = explain(error)
    assert "Unexpected internal error" not in text
    for part in wanted:
        assert part in text, text


async def test_an_unconfigured_backend_names_its_variable_and_the_sandbox() -> None:
    registry = Registry({}, default="digitalocean")

    @agent_errors
    async def tool() -> None:
        registry.get("groq")

    with pytest.raises(ToolError) as raised:
        await tool()
    assert "GROQ_API_KEY" in str(raised.value) and "serve --sandbox" in str(raised.value)

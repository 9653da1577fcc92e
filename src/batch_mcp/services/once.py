"""One submission, one job, on every backend: a create whose answer was lost is looked for before it is sent again.

DigitalOcean replays its ``request_id``, so there ``recover`` is the create itself. OpenAI-style APIs have
no idempotency key: ``recover`` lists the jobs back to the planned time and finds our token in their
metadata. A listing may lag behind a create that just happened, so "not found" is only believed after
a few looks; until then nothing is created again.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio

from batch_mcp.backends.base import Backend, CreateNotConfirmed, RecoveryInconclusive
from batch_mcp.domain import CreateSpec, Job, Ref

#: The native ids of jobs other submissions made, read when recovery looks (not before: a submission
#: running beside this one may get its answer meanwhile).
OthersJobs = Callable[[], frozenset[str]]

#: How often a lost create is looked for, and how long to wait between looks, before it counts as never made.
RECOVERY_LOOKS = 3
RECOVERY_PAUSE_S = 1.0


class SubmissionUnresolved(Exception):
    """A create's answer was lost and the backend's listing cannot say which job (if any) it made."""

    def __init__(self, backend: str, client_token: str, candidates: tuple[str, ...], reason: str) -> None:
        self.candidates = tuple(str(Ref(backend, native)) for native in candidates)
        listed = f" Candidates: {', '.join(self.candidates)}." if self.candidates else ""
        super().__init__(
            f"The job for submission {client_token} may exist on {backend}, but its listing cannot tell which "
            f"one it is ({reason}); nothing more was created.{listed} Look at the candidates with get_batch, "
            "cancel any that should not run, and submit again with new=true only if none is yours.")


async def recover(backend: Backend, spec: CreateSpec, others: OthersJobs | None = None, *,
                  looks: int = RECOVERY_LOOKS, pause_s: float = RECOVERY_PAUSE_S) -> Job | None:
    """The job ``spec`` made, or None once several looks agree there is none; never creates on its own
    (except on DigitalOcean, where looking is re-sending the same ``request_id``). ``others`` names the
    jobs that are known not to be it."""
    for look in range(looks):
        try:
            found = await backend.recover(spec if others is None else spec.model_copy(update={"not_ours": others()}))
        except RecoveryInconclusive as exc:
            raise SubmissionUnresolved(backend.name, spec.client_token, exc.candidates, exc.message) from exc
        if found is not None:
            return found
        if look + 1 < looks:
            await anyio.sleep(pause_s)
    return None


async def create_once(backend: Backend, spec: CreateSpec, others: OthersJobs | None = None, *,
                      looks: int = RECOVERY_LOOKS, pause_s: float = RECOVERY_PAUSE_S) -> Job:
    """Create the job; if the answer is lost, find it first, and create again only when it was never made.

    The second create may itself be lost: that is raised (the submission stays stored as pending, so
    the next call or a restart looks for it again) rather than looped on.
    """
    try:
        return await backend.create(spec)
    except CreateNotConfirmed:
        if backend.capabilities.idempotency == "request_id":
            raise  # recovering is re-sending, which the request loop already did: settled on the next call
        found = await recover(backend, spec, others, looks=looks, pause_s=pause_s)
        return found if found is not None else await backend.create(spec)

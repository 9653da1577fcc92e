"""An offline emulator of DigitalOcean's Batch Inference HTTP API, presigned storage included.

The same engine also serves the OpenAI Batch API as OpenAI, DeepInfra and Groq speak it (``openai/``)
and Anthropic's Message Batches (``anthropic/``); ``SandboxConfig.backend`` picks one per server.

Users try batch-mcp with it before they have an account, and every test runs against it. It shares
only :mod:`batch_mcp.schemas` with the rest of the package.

Where the contract leaves a choice open, the sandbox answers as follows:

* ``POST /v1/batches`` on a file whose upload never completed (the HEAD check): **400** ``bad_request``;
  an unknown ``file_id``: 404. A body that breaks the schema (``endpoint`` missing for openai or
  present for anthropic, bad provider or window, non-string metadata): 422; a body that is not JSON: 400.
* An idempotent replay (same ``request_id``, same body) answers **201** with the existing job, since
  the spec declares no other success status; the same ``request_id`` with a different body: 409.
* ``GET /v1/batches``: ``limit`` outside 1..100 is **clamped**; a non-integer ``limit``, an unknown
  ``status`` or an ``after`` that names no batch: 400 (through the spec's ``default`` response).
* ``GET /v1/batches/{id}/results`` on a ``failed`` job: **200** with ``result_available: false`` and
  null URLs (it will never have results); before any terminal status: 412.
* ``POST /v1/batches/{id}/cancel`` while ``validating``: 409 (not yet handed to the provider); while
  already ``cancelling``: 200, unchanged.

The account (files, jobs, results) lives in ``SandboxConfig.storage_dir`` when set: a SQLite ledger beside
the bytes, which outlives the process and may be shared by several emulators at once (``serve --sandbox``
keeps one per backend under its state folder). Each job's lifecycle follows from wall-clock time, so it
runs on while no process is alive. Faults, delays, the request log, the rate budget and the clock's
offset belong to the process that serves them. Without ``storage_dir`` the account is a temporary folder.

Test and admin routes, bearer-authenticated and not rate-limited: ``POST /_sandbox/faults``
``{operation, kind: server_error|rate_limit|conflict|redirect|drop|lost_answer|overloaded, times,
retry_after_s}``, ``POST /_sandbox/slow``
``{operation, seconds}``, ``POST /_sandbox/expire-upload-urls`` ``{ttl_s?}``,
``POST /_sandbox/advance-clock`` ``{seconds}``, ``POST /_sandbox/reset-faults``,
``GET /_sandbox/stats`` and ``GET /_sandbox/requests``.
"""

from batch_mcp.sandbox.config import SandboxConfig
from batch_mcp.sandbox.server import SandboxServer, api_base_path, create_app, serve

__all__ = ["SandboxConfig", "SandboxServer", "api_base_path", "create_app", "serve"]

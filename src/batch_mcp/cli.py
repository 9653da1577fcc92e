"""``batch-mcp``: serve the MCP server, run the sandbox, manage the job store, validate a file, or run the demo.

Heavy imports (mcp, uvicorn) happen inside the subcommand that needs them, so ``batch-mcp validate``
starts fast.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

#: The backends the sandbox emulates (spelled out: the registry is imported only by the commands that use it).
EMULATED = ("digitalocean", "openai", "deepinfra", "groq", "anthropic")

if TYPE_CHECKING:
    from batch_mcp.backends.base import Capabilities
    from batch_mcp.config import Settings

QUIET_LOGGERS = ("httpx2", "httpcore2", "uvicorn.access")


#: The SDK logs every refused tool call at INFO; MCP hosts print a stdio server's stderr to the user.
SDK_SERVER_LOGGER = "mcp.server.mcpserver.server"


class _UserErrorsAtDebug(logging.Filter):
    """A tool call refused for the caller's input is the agent's business, not the user's console's: it is
    logged at DEBUG (shown with -v); faults of the server itself keep their level."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and record.msg in ("Tool %r rejected arguments: %r", "Tool %r failed: %r"):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


USER_ERRORS_QUIETLY = _UserErrorsAtDebug()


def configure_logging(verbose: bool) -> None:
    """Logs go to stderr (stdout is the stdio transport). HTTP client loggers are kept quiet: a line
    per request is noise (and their URLs lose query strings anyway, see ``batch_mcp.backends.http``)."""
    level = "DEBUG" if verbose else os.environ.get("BATCH_MCP_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger(SDK_SERVER_LOGGER).addFilter(USER_ERRORS_QUIETLY)


def serve_settings(args: argparse.Namespace) -> Settings:
    """The environment's settings, overridden by the flags given to ``serve`` (a flag given empty counts)."""
    from batch_mcp.config import load_settings

    overrides: dict[str, object] = {}
    if args.allow_dir:
        overrides["allowed_dirs"] = args.allow_dir
    if args.state_dir:
        overrides["state_dir"] = args.state_dir
    if args.sandbox:
        overrides["sandbox"] = True
    if args.auth_token is not None:
        overrides["auth_token"] = args.auth_token
    if args.backend:
        overrides["backend"] = args.backend
    if args.hosted:
        overrides["hosted"] = True
    return load_settings(**overrides)


def _serve(args: argparse.Namespace) -> int:
    import anyio

    from batch_mcp.config import ConfigurationError
    from batch_mcp.server import UnsafeBinding, serve

    try:
        settings = serve_settings(args)
    except ConfigurationError as exc:
        print(f"batch-mcp: invalid configuration: {exc}", file=sys.stderr)
        return 2
    try:
        anyio.run(lambda: serve(settings, args.transport, args.host, args.port))
    except UnsafeBinding as exc:
        print(f"batch-mcp: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


def _sandbox(args: argparse.Namespace) -> int:
    from batch_mcp.sandbox import SandboxConfig, api_base_path, serve

    token = args.token.strip()  # as every client strips its key: a pasted newline must not refuse them all
    if not token:
        print("batch-mcp sandbox: --token (or BATCH_MCP_SANDBOX_TOKEN) is empty; give it any non-blank string",
              file=sys.stderr)
        return 2
    config = SandboxConfig(token=token, backend=args.backend, dialect=args.dialect,
                           failure_rate=args.failure_rate, requests_per_s=args.requests_per_s,
                           storage_dir=args.state_dir)
    shapes = {"digitalocean": f"dialect {args.dialect}", "anthropic": "the Anthropic Message Batches API"}
    shape = shapes.get(args.backend, "the OpenAI Batch API")
    kept = f"kept in {args.state_dir}" if args.state_dir else "forgotten on exit (--state-dir keeps them)"
    print(f"sandbox: {args.backend} at http://{args.host}:{args.port}{api_base_path(config)} ({shape}); "
          f"token from --token; files and jobs {kept}", file=sys.stderr)
    serve(config, args.host, args.port)
    return 0


def _store(args: argparse.Namespace) -> int:
    """``store migrate`` brings the job store's schema up to date (run it once before new replicas start);
    ``store check`` says whether it is reachable and up to date, changing nothing (exit 0 yes, 1 it needs
    ``store migrate``, 2 unusable: unreachable, damaged, or written by a newer batch-mcp)."""
    from batch_mcp.config import ConfigurationError, load_settings
    from batch_mcp.store import SCHEMA_VERSION, JobStore, StoreUnavailable

    try:
        settings = load_settings(**({"state_dir": args.state_dir} if args.state_dir else {}))
    except ConfigurationError as exc:
        print(f"batch-mcp: invalid configuration: {exc}", file=sys.stderr)
        return 2
    store = JobStore.at(settings.state_dir, settings.store_url_value())
    try:
        found = store.database.stored_version()
        if found > SCHEMA_VERSION:
            store.check()  # raises the newer-release explanation
        if args.action == "migrate":
            store.check()
            print(f"job store {store.location}: schema v{SCHEMA_VERSION}"
                  + (f" (migrated from v{found})" if found < SCHEMA_VERSION else " (already up to date)"))
            return 0
    except StoreUnavailable as exc:
        print(f"batch-mcp: {exc}", file=sys.stderr)
        return 2
    finally:
        store.close()
    if found < SCHEMA_VERSION:
        print(f"job store {store.location}: schema v{found}, this batch-mcp uses v{SCHEMA_VERSION}: run "
              "`batch-mcp store migrate` (a server also migrates it when it first opens it)")
        return 1
    print(f"job store {store.location}: schema v{found}, up to date")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from batch_mcp.services.preflight import Limits, UnusableInput, preflight

    try:
        limits = Limits.of(_capabilities(args.backend), max_requests=args.max_requests, max_bytes=args.max_bytes)
        report = preflight(Path(args.path), args.provider, args.endpoint, limits)
    except UnusableInput as exc:
        if args.json:
            print(json.dumps({"valid": False, "unusable": str(exc)}))
        else:
            print(f"unusable input: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(report.model_dump_json(indent=2))
    else:
        print(report.summary())
        for problem in report.problems:
            where = f"line {problem.line}" if problem.line else "file"
            print(f"  {problem.severity:7} {where}: {problem.message}")
        if report.truncated:
            print(f"  ... {report.error_count + report.warning_count - len(report.problems)} more")
    return 0 if report.valid else 1


def _capabilities(name: str | None) -> Capabilities:
    """The rules of the backend ``--backend`` names (DigitalOcean's by default, without loading the others)."""
    from batch_mcp.backends import digitalocean
    from batch_mcp.services.preflight import UnusableInput

    if name is None or name == digitalocean.CAPABILITIES.name:
        return digitalocean.CAPABILITIES
    from batch_mcp.backends.registry import CATALOG

    if name not in CATALOG:
        raise UnusableInput(f"unknown backend {name!r}; use one of {', '.join(CATALOG)}")
    return CATALOG[name].capabilities


def _demo(args: argparse.Namespace) -> int:
    from batch_mcp.demo import run_demo

    if args.backend and args.scenario != "reviews":
        print("batch-mcp demo: --backend goes with --scenario reviews (tickets runs on two backends side by side)",
              file=sys.stderr)
        return 2
    return run_demo(workdir=args.workdir, scenario=args.scenario, backend=args.backend)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="batch-mcp", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging (stderr)")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the MCP server (stdio by default)")
    serve.add_argument("--transport", choices=["stdio", "streamable-http", "sse"], default="stdio")
    serve.add_argument("--host", default="127.0.0.1", help="HTTP bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--sandbox", action="store_true", help="use the embedded sandbox (one emulator per backend): "
                                                              "no account needed")
    serve.add_argument("--backend", metavar="NAME", help="the default backend (or BATCH_MCP_BACKEND; default: the "
                                                         "only configured one, else digitalocean)")
    serve.add_argument("--allow-dir", action="append", type=Path, metavar="DIR",
                       help="a folder the tools may read and write (repeatable; default: the working directory, "
                            "unless it is /, the home folder or a system folder)")
    serve.add_argument("--state-dir", type=Path, help="where the job store lives")
    serve.add_argument("--auth-token", help="require this bearer token on HTTP transports (or "
                                            "BATCH_MCP_AUTH_TOKEN; at least 32 characters off loopback)")
    serve.add_argument("--hosted", action="store_true",
                       help="serve many callers over streamable HTTP, each sending its own provider keys in "
                            "X-Api-Key-<Backend> headers, files through upload/download links (or BATCH_MCP_HOSTED; "
                            "needs BATCH_MCP_ACCOUNT_SECRET)")
    serve.set_defaults(run=_serve)

    sandbox = sub.add_parser("sandbox", help="run the offline emulator of the batch API")
    sandbox.add_argument("--host", default="127.0.0.1")
    sandbox.add_argument("--port", type=int, default=8787)
    sandbox.add_argument("--token", default=os.environ.get("BATCH_MCP_SANDBOX_TOKEN", "sandbox-token"))
    sandbox.add_argument("--backend", choices=EMULATED,
                         default="digitalocean", help="which batch API to emulate")
    sandbox.add_argument("--dialect", choices=["openapi", "godo"], default="openapi",
                         help="digitalocean only: the spec's shapes or the Go client's")
    sandbox.add_argument("--failure-rate", type=float, default=0.03, help="share of requests that fail")
    sandbox.add_argument("--requests-per-s", type=float, default=500.0, help="processing pace")
    sandbox.add_argument("--state-dir", type=Path, help="keep the account's files and jobs in this folder, across "
                                                         "restarts and shared with other sandboxes using it "
                                                         "(default: a temporary folder, removed on exit)")
    sandbox.set_defaults(run=_sandbox)

    store = sub.add_parser("store", help="the job store: migrate its schema, or check it (BATCH_MCP_STORE_URL "
                                         "for PostgreSQL, else SQLite in the state folder)")
    store.add_argument("action", choices=["migrate", "check"])
    store.add_argument("--state-dir", type=Path, help="the state folder of a SQLite store (or BATCH_MCP_STATE_DIR)")
    store.set_defaults(run=_store)

    validate = sub.add_parser("validate", help="check a JSONL batch file (exit 0 valid, warnings "
                              "allowed; 1 invalid; 2 unusable)")
    validate.add_argument("path")
    validate.add_argument("--backend", metavar="NAME", help="check against this backend's rules and limits "
                                                            "(default digitalocean)")
    validate.add_argument("--provider", choices=["openai", "anthropic"], help="the line format (default: detected)")
    validate.add_argument("--endpoint", help="the endpoint every line's url must be (default: detected)")
    validate.add_argument("--json", action="store_true", help="print the full report as JSON")
    validate.add_argument("--max-requests", type=int, help="requests in one batch (default: the backend's limit)")
    validate.add_argument("--max-bytes", type=int, help="bytes in one batch (default: the backend's limit)")
    validate.set_defaults(run=_validate)

    demo = sub.add_parser("demo", help="run the whole workflow on the sandbox through a real MCP client")
    demo.add_argument("--workdir", type=Path, help="folder for the demo's files (default: a temporary one)")
    demo.add_argument("--scenario", choices=["tickets", "reviews"], default="tickets",
                      help="tickets: validate, submit, wait, download; reviews: prepare from a CSV, results "
                           "table, retry failures")
    demo.add_argument("--backend", choices=EMULATED, help="the emulated backend the reviews scenario runs on "
                                                               "(default: digitalocean)")
    demo.set_defaults(run=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    return int(args.run(args) or 0)

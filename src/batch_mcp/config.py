"""Settings, read from the environment (and overridden by CLI flags).

The tokens are ``SecretStr``: they print as ``**********`` in reprs, logs and errors (validation errors
never echo their input), and are revealed only where a request header is built.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import AliasChoices, Field, SecretStr, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from batch_mcp.backends import digitalocean
from batch_mcp.backends.http import check_base_url
from batch_mcp.backends.http import is_loopback as is_loopback  # re-exported: server.py checks bind hosts
from batch_mcp.backends.registry import CATALOG

_DO = digitalocean.CAPABILITIES
TOKEN_VARIABLES = _DO.token_env
#: How each setting is set, for error messages: the environment variable, and the serve flag if there is one.
SOURCES = {
    "allowed_dirs": "BATCH_MCP_ALLOWED_DIRS (or --allow-dir)",
    "state_dir": "BATCH_MCP_STATE_DIR (or --state-dir)",
    "auth_token": "BATCH_MCP_AUTH_TOKEN (or --auth-token)",
    "hosted": "BATCH_MCP_HOSTED (or --hosted)",
}
#: Folders that are never allowed just because the server was started in them: an MCP host that launches
#: the server from / or the home folder did not mean to hand the agent everything below it.
SYSTEM_FOLDERS = ("/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib64", "/mnt", "/opt", "/private", "/proc",
                  "/root", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/var", "/Library", "/System", "/Users",
                  "/Volumes")
#: Shortest bearer token accepted for a server other machines can reach.
MIN_PUBLIC_AUTH_TOKEN = 32
#: Shortest server secret accepted for deriving account fingerprints and signing links in hosted mode.
MIN_ACCOUNT_SECRET = 32
SECRETS = ("token", "auth_token", "account_secret", "store_url", "oauth_client_secret")


class ConfigurationError(ValueError):
    """A setting with an unusable value; the message names its variable and what it must be."""


def too_broad_to_allow_implicitly(folder: Path) -> bool:
    """The file system root, the home folder or one above it, or a top-level system folder."""
    try:
        home = Path.home().resolve()
    except RuntimeError:  # no home folder can be determined
        home = None
    return (folder == Path(folder.anchor) or (home is not None and home.is_relative_to(folder))
            or folder in {Path(name).resolve() for name in SYSTEM_FOLDERS})


def setting_source(field: str) -> str:
    if field in ("token", *TOKEN_VARIABLES):  # the variable the token was read from
        return next((name for name in TOKEN_VARIABLES if name in os.environ), " (or ".join(TOKEN_VARIABLES) + ")")
    return SOURCES.get(field, f"BATCH_MCP_{field.upper()}")


def _checked_secret(value: SecretStr | None) -> str | None:
    """A token as typed, minus surrounding whitespace (a pasted newline); refused if anything else in it
    could not go into an HTTP header. Never quotes the token."""
    if value is None:
        return None
    token = value.get_secret_value().strip()
    for position, char in enumerate(token, start=1):
        if not (char.isascii() and char.isprintable()):
            kind = "a non-ASCII" if not char.isascii() else "a control"
            raise ValueError(f"contains {kind} character (at position {position}), which cannot be sent in an "
                             "HTTP header; copy the token again without stray characters")
    return token


def default_state_dir() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("batch-mcp", appauthor=False))


class Settings(BaseSettings):
    """Everything the server needs to know about its environment."""

    model_config = SettingsConfigDict(env_prefix="BATCH_MCP_", extra="ignore", populate_by_name=True,
                                      hide_input_in_errors=True)

    token: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices(*_DO.token_env),
        description=f"DigitalOcean's API token: {', else '.join(_DO.token_env)}.",
    )
    base_url: str = Field(default=_DO.default_base_url, description="DigitalOcean's batch API base URL.")
    backend: str | None = Field(default=None, description="The default backend (BATCH_MCP_BACKEND, serve --backend); "
                                                          "else the only configured one, else digitalocean.")
    allowed_dirs: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description=f"Folders the tools may read and write ({os.pathsep}-separated); default: the working directory, "
                    "unless it is /, the home folder or a system folder.",
    )
    state_dir: Path = Field(default_factory=default_state_dir, description="Where the job store lives.")
    store_url: SecretStr | None = Field(
        default=None, description="A PostgreSQL job store (postgresql://user:password@host/db) shared by replicas, "
                                  "instead of SQLite in the state folder; needs batch-mcp[postgres].")
    sandbox: bool = Field(default=False, description="Run against the embedded sandbox instead of the real API.")
    auth_token: SecretStr | None = Field(default=None, description="Bearer token required on HTTP transports.")
    max_requests: int | None = Field(default=None, ge=1, description="Requests allowed in one batch file "
                                                                     "(default: the backend's own limit).")
    max_bytes: int | None = Field(default=None, ge=1, description="Bytes allowed in one batch file (default: the "
                                                                  "backend's own limit).")
    poll_interval_s: float = Field(default=5.0, gt=0, description="Default wait_for_batch poll interval.")
    claim_lease_s: float = Field(default=30.0, ge=1, description="Seconds a server's claim on a submission lasts "
                                                                 "unrenewed (renewed every third of that): a "
                                                                 "crashed replica's is taken over after that.")
    resume_interval_s: float = Field(default=60.0, ge=0.1, description="Seconds between sweeps for creates "
                                      "whose answer was lost (one replica of many sweeps at a time).")
    watch_interval_s: float = Field(default=60.0, ge=0.1, description="Seconds between looks at running jobs, "
                                     "so subscribers hear of changes no agent is waiting on (one replica looks).")
    max_attempts: int = Field(default=5, ge=1, description="Attempts per API call before a fault is reported.")
    retry_base_delay_s: float = Field(default=0.5, ge=0, description="First backoff between attempts (doubles).")
    timeout_s: float = Field(default=60.0, gt=0, description="Seconds to wait for an API answer before retrying.")
    hosted: bool = Field(default=False, description="Serve many callers over streamable HTTP: each request brings "
                                                    "its own provider keys (X-Api-Key-<backend> headers), files come "
                                                    "and go through signed links.")
    account_secret: SecretStr | None = Field(default=None, description="Hosted mode: the server secret that turns a "
                                             "provider key into an account fingerprint and signs links.")
    public_url: str | None = Field(default=None, description="Hosted mode: the origin links are built on (e.g. "
                                                            "https://batch.example.com); default: the request's.")
    link_ttl_s: float = Field(default=900.0, gt=0, le=7 * 86400, description="Hosted mode: seconds an upload or "
                                                                             "download link stays valid.")
    max_upload_bytes: int = Field(default=2_000_000_000, ge=1, description="Hosted mode: the largest upload "
                                                                          "accepted through a link.")
    oauth_issuer: str | None = Field(default=None, description="OAuth authorization server whose tokens admit "
                                                              "callers (instead of BATCH_MCP_AUTH_TOKEN).")
    oauth_introspection_url: str | None = Field(default=None, description="Its token introspection endpoint "
                                                                         "(RFC 7662).")
    oauth_client_id: str | None = Field(default=None, description="This service's client id at the introspection "
                                                                 "endpoint.")
    oauth_client_secret: SecretStr | None = Field(default=None, description="This service's client secret there.")
    oauth_scopes: Annotated[list[str], NoDecode] = Field(default_factory=list, description="Scopes a token must "
                                                         "hold (space- or comma-separated).")

    @field_validator("token")
    @classmethod
    def _clean_token(cls, value: SecretStr | None) -> SecretStr | None:
        """An empty API token is no token: the tools then say how to set one."""
        token = _checked_secret(value)
        return SecretStr(token) if token else None

    @field_validator("auth_token")
    @classmethod
    def _clean_auth_token(cls, value: SecretStr | None) -> SecretStr | None:
        """An empty bearer token must not pass for "no authentication wanted"."""
        token = _checked_secret(value)
        if token == "":
            raise ValueError("is empty, which would leave the HTTP server unauthenticated; set it to a random "
                             f"string of at least {MIN_PUBLIC_AUTH_TOKEN} characters "
                             "(python3 -c 'import secrets; print(secrets.token_urlsafe(32))'), or unset it")
        return None if token is None else SecretStr(token)

    @field_validator("account_secret")
    @classmethod
    def _clean_account_secret(cls, value: SecretStr | None) -> SecretStr | None:
        secret = _checked_secret(value)
        if secret is not None and len(secret) < MIN_ACCOUNT_SECRET:
            raise ValueError(f"BATCH_MCP_ACCOUNT_SECRET must be at least {MIN_ACCOUNT_SECRET} random characters "
                             "(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')")
        return SecretStr(secret) if secret else None

    @field_validator("public_url")
    @classmethod
    def _public_origin(cls, url: str | None) -> str | None:
        """Links carry one-time credentials: never in clear text beyond this machine."""
        return check_base_url(url.rstrip("/"), "BATCH_MCP_PUBLIC_URL") if url else None

    @field_validator("oauth_scopes", mode="before")
    @classmethod
    def _split_scopes(cls, value: object) -> object:
        return value.replace(",", " ").split() if isinstance(value, str) else value

    @field_validator("oauth_issuer", "oauth_introspection_url")
    @classmethod
    def _oauth_https(cls, url: str | None, info: ValidationInfo) -> str | None:
        """Tokens travel to the introspection endpoint: never in clear text beyond this machine."""
        return check_base_url(url, f"BATCH_MCP_{str(info.field_name).upper()}") if url else None

    @model_validator(mode="after")
    def _token_from_the_next_variable(self) -> Settings:
        """An empty MODEL_ACCESS_KEY (an MCP host's optional field left blank) hid DIGITALOCEAN_TOKEN: the
        first of the variables that holds a token is the one used, as for every other backend."""
        if self.token is None:
            found = (value.strip() for name in _DO.token_env if (value := os.environ.get(name, "")).strip())
            if token := next(found, None):
                self.token = SecretStr(token)
        return self

    @model_validator(mode="after")
    def _oauth_complete(self) -> Settings:
        wanted = {"BATCH_MCP_OAUTH_ISSUER": self.oauth_issuer, "BATCH_MCP_OAUTH_CLIENT_ID": self.oauth_client_id,
                  "BATCH_MCP_OAUTH_CLIENT_SECRET": self.oauth_client_secret, "BATCH_MCP_PUBLIC_URL": self.public_url}
        if self.oauth_introspection_url is not None and (missing := [name for name, v in wanted.items() if not v]):
            raise ValueError(f"BATCH_MCP_OAUTH_INTROSPECTION_URL also needs {', '.join(missing)}: the issuer is "
                             "advertised to clients, the client credentials authenticate the introspection, and "
                             "the public URL names this resource")
        if self.oauth_introspection_url is not None and self.auth_token is not None:
            raise ValueError("BATCH_MCP_AUTH_TOKEN and BATCH_MCP_OAUTH_INTROSPECTION_URL both set: the service "
                             "takes one kind of bearer token; unset one")
        return self

    @model_validator(mode="after")
    def _hosted_needs_a_secret(self) -> Settings:
        if self.hosted and self.account_secret is None:
            raise ValueError(
                "BATCH_MCP_ACCOUNT_SECRET is required in hosted mode (BATCH_MCP_HOSTED or --hosted): it derives each "
                "caller's account fingerprint from their provider key and signs upload and download links. Set it to "
                "the output of python3 -c 'import secrets; print(secrets.token_urlsafe(32))', the same on every "
                "replica, and keep it: changing it hides every tenant's earlier jobs")
        return self

    @field_validator("store_url")
    @classmethod
    def _postgres_url(cls, value: SecretStr | None) -> SecretStr | None:
        """Only PostgreSQL, and only with its driver installed: said at start, not at the first tool call."""
        url = _checked_secret(value)
        if not url:
            return None
        if not url.startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a postgresql:// URL (unset it to keep the SQLite store in the state folder)")
        try:
            import psycopg_pool  # noqa: F401
        except ImportError:
            raise ValueError("names PostgreSQL, whose driver is not installed: pip install 'batch-mcp[postgres]'"
                             ) from None
        return SecretStr(url)

    @field_validator("base_url")
    @classmethod
    def _https_beyond_loopback(cls, url: str) -> str:
        """The token travels in every API request: never in clear text beyond this machine."""
        return check_base_url(url, "BATCH_MCP_BASE_URL")

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, name: str | None) -> str | None:
        if not name:  # an empty variable counts as unset
            return None
        if name not in CATALOG:
            raise ValueError(f"unknown backend {name!r} (BATCH_MCP_BACKEND or --backend); choose one of "
                             f"{', '.join(CATALOG)}")
        return name

    @field_validator("allowed_dirs", mode="before")
    @classmethod
    def _split_dirs(cls, value: object) -> object:
        if isinstance(value, str):
            return [part for part in value.split(os.pathsep) if part.strip()]
        return value

    @field_validator("allowed_dirs")
    @classmethod
    def _resolve_dirs(cls, dirs: list[Path]) -> list[Path]:
        return [d.expanduser().resolve() for d in dirs]

    def effective_allowed_dirs(self) -> list[Path]:
        """The configured folders, else the working directory unless it is too broad (then none)."""
        if self.allowed_dirs:
            return self.allowed_dirs
        cwd = Path.cwd().resolve()
        return [] if too_broad_to_allow_implicitly(cwd) else [cwd]

    def token_value(self) -> str | None:
        return self.token.get_secret_value() if self.token else None

    def oauth_client_secret_value(self) -> str:
        return self.oauth_client_secret.get_secret_value() if self.oauth_client_secret else ""

    def account_secret_value(self) -> bytes:
        if self.account_secret is None:
            raise ConfigurationError("BATCH_MCP_ACCOUNT_SECRET is not set")
        return self.account_secret.get_secret_value().encode()

    def store_url_value(self) -> str | None:
        return self.store_url.get_secret_value() if self.store_url else None


def environment_variables() -> dict[str, FieldInfo]:
    """Every environment variable the server reads (``Settings`` and each other backend's key and URL),
    with the field it sets.

    server.json and the MCPB manifest are checked against this, so a new setting cannot be left out of them.
    """
    from batch_mcp.backends.settings import settings_for

    sources: list[type[BaseSettings]] = [Settings, *(settings_for(entry.capabilities) for name, entry in
                                                      CATALOG.items() if name != _DO.name)]
    variables: dict[str, FieldInfo] = {}
    for source in sources:
        prefix = source.model_config.get("env_prefix", "")
        for name, field in source.model_fields.items():
            alias = field.validation_alias
            if isinstance(alias, AliasChoices):
                names = [choice for choice in alias.choices if isinstance(choice, str)]
            else:
                names = [alias if isinstance(alias, str) else f"{prefix}{name}".upper()]
            variables.update(dict.fromkeys(names, field))
    return variables


def _problem(error: ErrorDetails) -> str:
    """One validation error as "VARIABLE must be ...", showing the value given unless it is a secret."""
    field = str(error["loc"][0]) if error["loc"] else "settings"
    context = error.get("ctx") or {}
    match error["type"]:
        case "value_error":
            rule = str(context["error"])
        case "greater_than_equal":
            rule = f"must be ≥ {context['ge']}"
        case "greater_than":
            rule = f"must be > {context['gt']}"
        case "int_parsing" | "int_from_float":
            rule = "must be a whole number"
        case "float_parsing":
            rule = "must be a number"
        case "bool_parsing":
            rule = "must be true or false"
        case _:
            rule = f"is invalid: {error['msg']}"
    hidden = field in SECRETS or error["type"] == "value_error"  # a secret, or a message that quotes what matters
    if not error["loc"]:  # a rule across settings names its variables itself
        return rule
    source = setting_source(field)
    named = rule if rule.startswith(source.split()[0]) else f"{source} {rule}"  # some rules name it already
    return named + ("" if hidden else f" (got {str(error['input'])[:80]!r})")


def load_settings(**overrides: Any) -> Settings:
    """The settings from the environment and ``overrides``, or a :class:`ConfigurationError` naming each
    bad variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigurationError("; ".join(_problem(error) for error in exc.errors(include_url=False))) from None

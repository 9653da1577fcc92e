"""Each backend's key and base URL, read from the provider's own conventional variables.

One settings class per backend, made from its capabilities record so the variable names exist once:
``settings_for(CAPABILITIES)`` reads ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL`` for OpenAI, and so on.
"""

from __future__ import annotations

from functools import cache

from pydantic import AliasChoices, Field, SecretStr, ValidationInfo, create_model, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from batch_mcp.backends.base import Capabilities


class BackendSettings(BaseSettings):
    """A key (a SecretStr: it prints as stars) and a base URL; an empty variable counts as unset."""

    #: Read only under the provider's own variable names: by field name, a stray API_KEY or BASE_URL in the
    #: environment would become this backend's key or URL.
    model_config = SettingsConfigDict(extra="ignore", env_ignore_empty=True, populate_by_name=False)

    api_key: SecretStr | None = None
    base_url: str

    @field_validator("base_url")
    @classmethod
    def _safe_url(cls, url: str, info: ValidationInfo) -> str:
        from batch_mcp.backends.http import check_base_url  # here: the preflight reads capabilities without httpx2

        alias = cls.model_fields["base_url"].validation_alias
        return check_base_url(url, str(getattr(alias, "choices", [info.field_name])[0]))

    @classmethod
    def given(cls, api_key: str | None, base_url: str) -> BackendSettings:
        """Settings from values in hand (the sandbox's, the CLI's), ignoring the environment's."""
        key_alias, url_alias = (cls.model_fields[name].validation_alias for name in ("api_key", "base_url"))
        return cls(**{key_alias.choices[0]: api_key, url_alias.choices[0]: base_url})  # type: ignore[union-attr]

    def api_key_value(self) -> str | None:
        return self.api_key.get_secret_value() if self.api_key else None


@cache
def settings_for(capabilities: Capabilities) -> type[BackendSettings]:
    caps = capabilities
    return create_model(
        f"{caps.label.replace(' ', '')}Settings",
        __base__=BackendSettings,
        __doc__=f"{caps.label}: key from {' or '.join(caps.token_env)}, base URL from {caps.base_url_env}.",
        api_key=(SecretStr | None, Field(default=None, validation_alias=AliasChoices(*caps.token_env))),
        base_url=(str, Field(default=caps.default_base_url, validation_alias=AliasChoices(caps.base_url_env))),
    )

"""The service's own auth as an OAuth 2.1 resource server: each request's bearer token is checked with the
authorization server's token introspection endpoint (RFC 7662), through the SDK's ``TokenVerifier``.

This answers who may use the service at all; the provider keys (``X-Api-Key-<Backend>``) stay a separate
matter. The SDK then refuses requests without a valid token (401 with ``WWW-Authenticate`` pointing at the
protected resource metadata it serves under ``/.well-known/oauth-protected-resource``); the link routes are
outside it, the link being a credential of its own.
"""

from __future__ import annotations

import logging
import time

import httpx2
from mcp.server.auth.provider import AccessToken, TokenVerifier
from mcp.server.auth.settings import AuthSettings

from batch_mcp.config import Settings

log = logging.getLogger(__name__)


class IntrospectionVerifier(TokenVerifier):
    """A token is valid when the introspection endpoint says it is active, unexpired, for this resource (when
    it names an audience) and holds the required scopes; any other answer, or none, refuses it."""

    def __init__(self, url: str, client_id: str, client_secret: str, resource: str, timeout_s: float = 10.0) -> None:
        self.url, self.resource = url, resource
        self._auth = httpx2.BasicAuth(client_id, client_secret)
        self._timeout_s = timeout_s

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            async with httpx2.AsyncClient(timeout=self._timeout_s, follow_redirects=False) as http:
                answer = await http.post(self.url, data={"token": token}, auth=self._auth,
                                         headers={"Accept": "application/json"})
            claims = answer.json() if answer.status_code == 200 else {}
        except (httpx2.HTTPError, ValueError) as exc:  # unreachable or not JSON: refused, never waved through
            log.warning("token introspection failed: %s", type(exc).__name__)
            return None
        if not isinstance(claims, dict) or claims.get("active") is not True:
            return None
        expires_at = claims.get("exp")
        if isinstance(expires_at, int | float) and expires_at <= time.time():
            return None
        audience = claims.get("aud")
        if audience is not None and self.resource not in ([audience] if isinstance(audience, str) else audience):
            return None
        return AccessToken(token=token, client_id=str(claims.get("client_id", "")),
                           scopes=str(claims.get("scope", "")).split(),
                           expires_at=int(expires_at) if isinstance(expires_at, int | float) else None,
                           resource=self.resource, subject=claims.get("sub"))


def oauth_of(settings: Settings) -> tuple[IntrospectionVerifier, AuthSettings] | None:
    """The verifier and the SDK's auth settings when the service is an OAuth resource server, else None."""
    if settings.oauth_introspection_url is None:
        return None
    resource = f"{settings.public_url}/mcp"
    verifier = IntrospectionVerifier(settings.oauth_introspection_url, settings.oauth_client_id or "",
                                     settings.oauth_client_secret_value(), resource)
    auth = AuthSettings(issuer_url=settings.oauth_issuer, resource_server_url=resource,  # type: ignore[arg-type]
                        required_scopes=settings.oauth_scopes or None,
                        validate_token_resource=False)  # the verifier checks the audience itself, when named
    return verifier, auth

"""Tenant scoping: which (backend, account) rows a view of the store may write, read and match.

A hosted service serves many tenants from one store. The caller derives an opaque account fingerprint for
each backend key a request brings (the store never sees keys) and works through ``store.scoped(accounts)``:
rows it writes carry ``accounts[row.backend]``, and every read, lookup by id (namespaced or bare), listing,
fingerprint and claim match and upload reuse sees only rows of its own (backend, account) pairs. So a tenant
cannot see, reuse, wait on or claim another tenant's records, even by guessing ids. The unscoped store is
account ``'local'`` on every backend: a single-user install, and every store written before tenants existed.

A record with no backend (a prepared file, a one-time link made without naming an account) belongs to the
view's *owner*: its one account when every backend maps to the same one, else all of its accounts joined
in backend order. A view with other keys does not see it: it fails closed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

#: The account of every row of a single-user install (and of every row stored before tenants).
LOCAL_ACCOUNT = "local"


class NoAccount(LookupError):
    """A view was asked to write a row for a backend it holds no account (key) for."""

    def __init__(self, backend: str) -> None:
        super().__init__(f"No key for {backend} came with this request, so nothing can be stored for it. Send the "
                         f"{backend} key with the request (see the README's hosted mode) and call again.")


@dataclass(frozen=True)
class Scope:
    """The rows one caller may touch: ``accounts`` maps backend -> account; None is 'local' everywhere."""

    accounts: Mapping[str, str] | None = None
    _params: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.accounts is not None:
            object.__setattr__(self, "accounts", MappingProxyType(dict(self.accounts)))
        pairs = sorted((self.accounts or {}).items())
        params = {f"scope_b{i}": backend for i, (backend, _) in enumerate(pairs)}
        params |= {f"scope_a{i}": account for i, (_, account) in enumerate(pairs)}
        object.__setattr__(self, "_params", params)

    def account(self, backend: str) -> str:
        """The account rows on ``backend`` are written under; :class:`NoAccount` when the view has none."""
        if self.accounts is None:
            return LOCAL_ACCOUNT
        if backend not in self.accounts:
            raise NoAccount(backend)
        return self.accounts[backend]

    @property
    def owner(self) -> str:
        """The account of a record that has no backend."""
        if self.accounts is None:
            return LOCAL_ACCOUNT
        distinct = set(self.accounts.values())
        if len(distinct) == 1:
            return distinct.pop()
        return "+".join(self.accounts[backend] for backend in sorted(self.accounts))

    def where(self, alias: str = "") -> str:
        """An SQL condition true for the rows this view may see (its values come in :attr:`params`)."""
        if self.accounts is None:
            return f"{alias}account = '{LOCAL_ACCOUNT}'"
        if not self.accounts:
            return "1 = 0"
        pairs = [f"({alias}backend = :scope_b{i} AND {alias}account = :scope_a{i})" for i in range(len(self.accounts))]
        return f"({' OR '.join(pairs)})"

    def where_owner(self, alias: str = "") -> str:
        """The condition for records that have no backend: the owner's."""
        return f"{alias}account = :scope_owner"

    @property
    def params(self) -> dict[str, Any]:
        return {**self._params, "scope_owner": self.owner}

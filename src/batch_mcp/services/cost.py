"""What a batch costs on a backend: estimated before submission from the preflight report, actual after from usage.

Prices come from a dated table shipped as data (``batch_mcp/data/prices.json``): vendors' real-time list
prices, and per backend which vendors' models it serves, how it spells their names and where its figures
come from. The batch discount is the table's when it names one, else the backend's capabilities'. A model
without a price, or a backend whose discount nobody documents, is reported as unknown, never priced at zero.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from batch_mcp.backends.registry import CATALOG, FALLBACK_BACKEND
from batch_mcp.schemas.jobs import CostReport, ModelCost

_DATE_SUFFIX = re.compile(r"-(\d{8}|\d{4}-\d{2}-\d{2}|latest)$")


@dataclass(frozen=True)
class ModelPrice:
    input_per_million: float
    output_per_million: float


@dataclass(frozen=True)
class BackendPrices:
    """One backend's prices: dated, with their source, the discount that applies and its model-name aliases."""

    backend: str
    label: str
    as_of: str | None
    source: str
    #: Fraction off the real-time price; None when neither the table nor the capabilities know it.
    discount: float | None
    #: Vendor prefixes this backend puts in front of model names (DigitalOcean's ``openai-gpt-4o``).
    strip_prefixes: tuple[str, ...]
    prices: dict[str, ModelPrice]
    #: Which requests the backend does not bill, when it documents that (said in every cost report).
    unbilled: str = ""

    def key(self, model: str) -> str:
        """``openai-gpt-4o-mini`` (on DigitalOcean), ``GPT-4o-Mini`` and ``claude-3.5-haiku-20241022`` match
        their table keys."""
        name = model.strip().lower()
        for prefix in self.strip_prefixes:
            if name.startswith(prefix):
                name = name[len(prefix):]
                break
        return _DATE_SUFFIX.sub("", name.replace(".", "-").replace("_", "-"))

    def price_of(self, model: str) -> ModelPrice | None:
        return self.prices.get(self.key(model))


def _backend_prices(name: str, entry: dict[str, Any], list_prices: dict[str, Any]) -> BackendPrices:
    caps = CATALOG[name].capabilities
    raw_models: dict[str, Any] = {}
    for vendor in entry.get("vendors", []):
        raw_models.update(list_prices[vendor])
    raw_models.update(entry.get("models", {}))
    list_date = list_prices.get("as_of") if entry.get("vendors") else None
    prices = BackendPrices(backend=name, label=caps.label, as_of=entry.get("as_of", list_date),
                           source=entry.get("source", ""), strip_prefixes=tuple(entry.get("strip_prefixes", ())),
                           discount=float(entry["batch_discount"]) if "batch_discount" in entry else caps.discount,
                           prices={}, unbilled=entry.get("unbilled", ""))
    prices.prices.update({prices.key(model): ModelPrice(float(p["input"]), float(p["output"]))
                          for model, p in raw_models.items()})
    return prices


@dataclass(frozen=True)
class PriceTable:
    currency: str
    backends: dict[str, BackendPrices]

    @classmethod
    def load(cls, path: Path | None = None) -> PriceTable:
        text = path.read_text() if path else resources.files("batch_mcp.data").joinpath("prices.json").read_text()
        raw = json.loads(text)
        listed = raw.get("backends", {})
        unknown = set(listed) - set(CATALOG)
        if unknown:
            raise ValueError(f"the prices file names unknown backend(s) {', '.join(sorted(unknown))}; known: "
                             f"{', '.join(CATALOG)}")
        list_prices = raw.get("list_prices", {})
        return cls(currency=raw.get("currency", "USD"),
                   backends={name: _backend_prices(name, listed.get(name, {}), list_prices) for name in CATALOG})

    def of(self, backend: str = FALLBACK_BACKEND) -> BackendPrices:
        if backend not in self.backends:
            raise ValueError(f"no backend called {backend!r}; known: {', '.join(self.backends)}")
        return self.backends[backend]

    def price_of(self, model: str, backend: str = FALLBACK_BACKEND) -> ModelPrice | None:
        return self.of(backend).price_of(model)

    def report(self, usage: dict[str, tuple[int, int, int]], *, estimated: bool,
               backend: str = FALLBACK_BACKEND) -> CostReport:
        """``usage`` maps model -> (requests, input tokens, output tokens), priced at ``backend``'s batch prices."""
        table = self.of(backend)
        discount = table.discount
        rows: list[ModelCost] = []
        for model, (requests, input_tokens, output_tokens) in sorted(usage.items()):
            row = ModelCost(model=model, requests=requests, input_tokens=input_tokens, output_tokens=output_tokens,
                            priced=False)
            price = table.price_of(model)
            if price is not None and discount is not None:
                factor = (1 - discount) / 1_000_000
                input_cost = input_tokens * price.input_per_million * factor
                output_cost = output_tokens * price.output_per_million * factor
                row = row.model_copy(update={"priced": True, "input_cost": round(input_cost, 6),
                                             "output_cost": round(output_cost, 6),
                                             "total_cost": round(input_cost + output_cost, 6)})
            rows.append(row)
        unknown = [model for model in sorted(usage) if table.price_of(model) is None]
        unpriced = _unpriced_reason(table, unknown)
        total = None if unpriced or not rows else round(sum(row.total_cost or 0.0 for row in rows), 6)
        basis = ("Input tokens are estimated (prompt bytes / 4); output tokens are the requests' max_tokens (a "
                 "ceiling). " if estimated else "From the token usage in the results. ")
        dated = f"{table.label} prices as of {table.as_of or 'an unknown date'}"
        with_discount = (f" with the {discount:.0%} batch discount. " if discount is not None
                         else ", batch discount unknown. ")
        return CostReport(currency=self.currency, backend=backend, prices_as_of=table.as_of or "unknown",
                          batch_discount=discount, estimated=estimated, models=rows, total_cost=total,
                          unknown_models=unknown, unpriced_reason=unpriced,
                          note=" ".join(part.strip() for part in (dated + with_discount + basis, unpriced,
                                                                  table.unbilled) if part))


def _unpriced_reason(table: BackendPrices, unknown: list[str]) -> str | None:
    """Why no total is given, and how to get one; None when every model is priced."""
    if table.discount is None:
        return (f"{table.label}'s batch discount is not documented, so no cost is given rather than a guessed one; "
                f"set batch_discount for {table.backend} in a prices file.")
    if unknown:
        return (f"No {table.label} price is known for {', '.join(unknown)}: the total is left out rather than "
                f"understated; add them for {table.backend} in a prices file.")
    return None

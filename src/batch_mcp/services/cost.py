"""What a batch costs: estimated before submission from the preflight report, actual after from token usage.

Prices come from a dated table shipped as data (``batch_mcp/data/prices.json``), overridable with
``BATCH_MCP_PRICES_FILE``. A model the table does not know is reported as unknown, never priced at zero.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from batch_mcp.schemas.jobs import CostReport, ModelCost

_DATE_SUFFIX = re.compile(r"-(\d{8}|\d{4}-\d{2}-\d{2}|latest)$")
_PROVIDER_PREFIX = re.compile(r"^(openai|anthropic)[-/]")


@dataclass(frozen=True)
class ModelPrice:
    input_per_million: float
    output_per_million: float


@dataclass(frozen=True)
class PriceTable:
    as_of: str
    currency: str
    batch_discount: float
    source: str
    prices: dict[str, ModelPrice]

    @classmethod
    def load(cls, path: Path | None = None) -> PriceTable:
        text = path.read_text() if path else resources.files("batch_mcp.data").joinpath("prices.json").read_text()
        raw = json.loads(text)
        prices = {normalise_model(name): ModelPrice(float(p["input"]), float(p["output"]))
                  for name, p in raw["models"].items()}
        return cls(as_of=raw["as_of"], currency=raw.get("currency", "USD"),
                   batch_discount=float(raw.get("batch_discount", 0.5)), source=raw.get("source", ""), prices=prices)

    def price_of(self, model: str) -> ModelPrice | None:
        return self.prices.get(normalise_model(model))

    def report(self, usage: dict[str, tuple[int, int, int]], *, estimated: bool) -> CostReport:
        """``usage`` maps model -> (requests, input tokens, output tokens)."""
        rows: list[ModelCost] = []
        for model, (requests, input_tokens, output_tokens) in sorted(usage.items()):
            price = self.price_of(model)
            if price is None:
                rows.append(ModelCost(model=model, requests=requests, input_tokens=input_tokens,
                                      output_tokens=output_tokens, priced=False))
                continue
            factor = (1 - self.batch_discount) / 1_000_000
            input_cost = input_tokens * price.input_per_million * factor
            output_cost = output_tokens * price.output_per_million * factor
            rows.append(ModelCost(model=model, requests=requests, input_tokens=input_tokens,
                                  output_tokens=output_tokens, priced=True, input_cost=round(input_cost, 6),
                                  output_cost=round(output_cost, 6), total_cost=round(input_cost + output_cost, 6)))
        unknown = [row.model for row in rows if not row.priced]
        total = None if unknown or not rows else round(sum(row.total_cost or 0.0 for row in rows), 6)
        note = (f"Prices as of {self.as_of} with the {self.batch_discount:.0%} batch discount. "
                + ("Input tokens are estimated (prompt bytes / 4); output tokens are the requests' max_tokens "
                   "(a ceiling). " if estimated else "From the token usage in the results. ")
                + (f"No price known for {', '.join(unknown)}: the total is left out rather than understated; "
                   "add them to a prices file (BATCH_MCP_PRICES_FILE). " if unknown else ""))
        return CostReport(currency=self.currency, prices_as_of=self.as_of, batch_discount=self.batch_discount,
                          estimated=estimated, models=rows, total_cost=total, unknown_models=unknown,
                          note=note.strip())


def normalise_model(name: str) -> str:
    """``openai-gpt-4o-mini``, ``GPT-4o-Mini`` and ``claude-3.5-haiku-20241022`` match their table keys."""
    key = _PROVIDER_PREFIX.sub("", name.strip().lower()).replace(".", "-").replace("_", "-")
    return _DATE_SUFFIX.sub("", key)

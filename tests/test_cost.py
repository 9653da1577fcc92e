"""Prices per backend: dated, the discount from the table or else the backend's capabilities, aliases per backend,
and nothing unknown (a model, a discount) ever priced at zero."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from batch_mcp.backends.registry import CATALOG
from batch_mcp.services.cost import PriceTable

USAGE = {"gpt-4o-mini": (10, 1_000_000, 1_000_000)}  # $0.15 in + $0.60 out at list price


@pytest.fixture(scope="module")
def table() -> PriceTable:
    return PriceTable.load()


def test_default_backend_is_digitalocean_at_half_price(table: PriceTable) -> None:
    report = table.report(USAGE, estimated=False)
    assert report.backend == "digitalocean" and report.batch_discount == 0.5
    assert report.total_cost == pytest.approx(0.375) and report.prices_as_of == "2026-11-01"
    assert "DigitalOcean prices as of 2026-11-01 with the 50% batch discount" in report.note


def test_discount_comes_from_capabilities_when_the_table_has_none(table: PriceTable) -> None:
    openai = table.report(USAGE, estimated=True, backend="openai")
    assert openai.batch_discount == CATALOG["openai"].capabilities.discount == 0.5
    assert openai.total_cost == pytest.approx(0.375)
    assert table.of("deepinfra").discount == 0.2


def test_a_table_discount_wins_and_a_backend_gets_its_own_models(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"list_prices": {"as_of": "2026-01-01", "openai": {"gpt-4o-mini": {"input": 1,
                                                                                              "output": 1}}},
                                "backends": {"groq": {"as_of": "2026-02-02", "batch_discount": 0.25,
                                                      "models": {"llama-3.1-8b-instant": {"input": 0.05,
                                                                                          "output": 0.08}}}}}))
    own = PriceTable.load(path)
    groq = own.report({"llama-3.1-8b-instant": (1, 1_000_000, 1_000_000)}, estimated=False, backend="groq")
    assert groq.batch_discount == 0.25 and groq.total_cost == pytest.approx(0.0975)
    assert groq.prices_as_of == "2026-02-02" and groq.unpriced_reason is None
    with pytest.raises(ValueError, match="unknown backend"):
        path.write_text(json.dumps({"backends": {"nope": {}}}))
        PriceTable.load(path)


def test_unknown_discount_is_never_priced(table: PriceTable) -> None:
    assert CATALOG["groq"].capabilities.discount is None
    report = table.report(USAGE, estimated=True, backend="groq")
    assert report.batch_discount is None and report.total_cost is None
    assert all(not row.priced and row.total_cost is None for row in report.models)
    assert "Groq's batch discount is not documented" in report.unpriced_reason
    assert "batch discount unknown" in report.note


def test_unknown_model_is_never_priced_at_zero(table: PriceTable) -> None:
    report = table.report({**USAGE, "meta-llama/Llama-3.3-70B": (2, 100, 100)}, estimated=False, backend="deepinfra")
    assert report.total_cost is None and report.unknown_models == ["gpt-4o-mini", "meta-llama/Llama-3.3-70B"]
    assert "No DeepInfra price is known for" in report.unpriced_reason


def test_aliases_are_per_backend(table: PriceTable) -> None:
    assert table.price_of("openai-gpt-4o-mini") == table.price_of("GPT-4o-Mini") is not None  # DO's catalogue names
    assert table.price_of("anthropic-claude-3.5-haiku-20241022") is not None
    assert table.price_of("openai-gpt-4o-mini", "openai") is None  # DO's prefix is DO's alone
    assert table.price_of("openai/gpt-4o-mini", "openai") is not None  # a gateway's spelling behind OPENAI_BASE_URL
    assert table.price_of("claude-sonnet-4-5", "openai") is None  # OpenAI serves no Anthropic model


def test_unknown_backend_is_refused(table: PriceTable) -> None:
    with pytest.raises(ValueError, match="no backend called 'nope'"):
        table.report(USAGE, estimated=True, backend="nope")

"""Summaries of downloaded result files, read line by line so memory stays flat whatever the size."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from batch_mcp.schemas import ResultRecord
from batch_mcp.schemas.jobs import ResultPreview, TokenUsage

PREVIEW_CHARS = 200


@dataclass
class ResultTally:
    """Per-request outcomes merged across the output and error files (a success wins over a failure)."""

    outcomes: dict[str, bool] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    usage: TokenUsage = field(default_factory=TokenUsage)
    preview: list[ResultPreview] = field(default_factory=list)
    unreadable_lines: int = 0

    @property
    def succeeded(self) -> int:
        return sum(self.outcomes.values())

    @property
    def failed(self) -> int:
        return len(self.outcomes) - self.succeeded

    def error_codes(self) -> dict[str, int]:
        return dict(Counter(code for cid, code in self.failures.items() if not self.outcomes.get(cid)).most_common())

    def add(self, record: ResultRecord, preview_size: int) -> None:
        if self.outcomes.get(record.custom_id):
            return  # already counted as a success
        self.outcomes[record.custom_id] = record.succeeded
        if record.succeeded:
            self.usage.input_tokens += record.usage.input_tokens
            self.usage.output_tokens += record.usage.output_tokens
        else:
            self.failures[record.custom_id] = record.error_code or "unknown_error"
        if len(self.preview) < preview_size:
            self.preview.append(ResultPreview(
                custom_id=record.custom_id,
                succeeded=record.succeeded,
                text=_shorten(record.text),
                error=None if record.succeeded else f"{record.error_code}: {record.error_message or ''}".strip(),
            ))

    def read(self, path: Path | None, preview_size: int = 5) -> None:
        if path is None or not path.exists():
            return
        decoder = msgspec.json.Decoder()
        with path.open("rb") as lines:
            for raw in lines:
                if not raw.strip():
                    continue
                try:
                    line = decoder.decode(raw)
                    self.add(ResultRecord.from_line(line), preview_size)
                except (msgspec.DecodeError, AttributeError, TypeError, ValueError):
                    self.unreadable_lines += 1


def _shorten(text: str | None) -> str | None:
    if text is None or len(text) <= PREVIEW_CHARS:
        return text
    return text[: PREVIEW_CHARS - 1] + "…"


def tally_results(output_path: Path | None, error_path: Path | None, preview_size: int = 5) -> ResultTally:
    tally = ResultTally()
    tally.read(output_path, preview_size)
    tally.read(error_path, preview_size)
    return tally

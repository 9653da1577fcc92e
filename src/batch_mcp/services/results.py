"""Downloaded results, merged and joined with their input into one table (CSV and JSONL).

Result files are indexed, not loaded: for every custom_id the index keeps where its best line is
(a success wins; among equals the newest file wins, so a retry's success replaces its parent's
failure). The table is then written in input order by seeking to each line, so memory stays flat
whatever the size of the files.
"""

from __future__ import annotations

import csv
import itertools
import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import msgspec

from batch_mcp.schemas import ResultRecord
from batch_mcp.schemas.jobs import ResultPreview, TokenUsage
from batch_mcp.services.workspace import NewFile

PREVIEW_CHARS = 200
#: The table's ``prompt`` column identifies the request; the full text stays in the request file.
PROMPT_CHARS = 1000
TABLE_COLUMNS = ["custom_id", "status", "output_text", "error_code", "error_message", "model", "input_tokens",
                 "output_tokens"]
_decode = msgspec.json.Decoder().decode
#: What makes a spreadsheet cell a formula (or, after a tab or carriage return, lets one through).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


@dataclass(frozen=True)
class _Pointer:
    file: int
    offset: int
    succeeded: bool


class ResultIndex:
    """custom_id -> the line holding its best result, over files given oldest first."""

    def __init__(self, files: Iterable[Path]) -> None:
        self.files = [f for f in files if f.exists()]
        self.unreadable_lines = 0
        self._best: dict[str, _Pointer] = {}
        self._handles: list[IO[bytes]] = []
        for number, path in enumerate(self.files):
            self._index(number, path)

    def _index(self, number: int, path: Path) -> None:
        with path.open("rb") as lines:
            offset = 0
            for raw in lines:
                here, offset = offset, offset + len(raw)
                if not raw.strip():
                    continue
                record = self._parse(raw)
                if record is None:
                    continue
                previous = self._best.get(record.custom_id)
                if previous is None or record.succeeded or not previous.succeeded:
                    self._best[record.custom_id] = _Pointer(number, here, record.succeeded)

    def _parse(self, raw: bytes) -> ResultRecord | None:
        try:
            return ResultRecord.from_line(_decode(raw))
        except (msgspec.DecodeError, AttributeError, TypeError, ValueError):
            self.unreadable_lines += 1
            return None

    def __contains__(self, custom_id: str) -> bool:
        return custom_id in self._best

    def ids(self) -> Iterator[str]:
        return iter(self._best)

    def get(self, custom_id: str) -> ResultRecord | None:
        pointer = self._best.get(custom_id)
        if pointer is None:
            return None
        if not self._handles:
            self._handles = [path.open("rb") for path in self.files]
        handle = self._handles[pointer.file]
        handle.seek(pointer.offset)
        return self._parse(handle.readline())

    def close(self) -> None:
        for handle in self._handles:
            handle.close()
        self._handles = []


@dataclass
class ResultTable:
    """What the merged table holds: outcome counts, error codes, usage per model, and a preview."""

    csv_path: Path | None = None
    jsonl_path: Path | None = None
    succeeded: int = 0
    failed: int = 0
    missing: int = 0
    error_codes: Counter[str] = field(default_factory=Counter)
    usage_by_model: dict[str, list[int]] = field(default_factory=dict)  # model -> [requests, in, out]
    preview: list[ResultPreview] = field(default_factory=list)

    @property
    def usage(self) -> TokenUsage:
        return TokenUsage(input_tokens=sum(u[1] for u in self.usage_by_model.values()),
                          output_tokens=sum(u[2] for u in self.usage_by_model.values()))

    def add(self, record: ResultRecord | None, preview_size: int) -> dict[str, Any]:
        """Count one request's outcome and return its table columns."""
        if record is None:
            self.missing += 1
            return {"status": "missing"}
        if record.succeeded:
            self.succeeded += 1
            usage = self.usage_by_model.setdefault(record.model or "unknown", [0, 0, 0])
            usage[0] += 1
            usage[1] += record.usage.input_tokens
            usage[2] += record.usage.output_tokens
        else:
            self.failed += 1
            self.error_codes[record.error_code or "unknown_error"] += 1
        if len(self.preview) < preview_size:
            self.preview.append(ResultPreview(
                custom_id=record.custom_id, succeeded=record.succeeded, text=_shorten(record.text),
                error=None if record.succeeded else f"{record.error_code}: {record.error_message or ''}".strip()))
        return {"status": "succeeded" if record.succeeded else "failed", "output_text": record.text,
                "error_code": record.error_code, "error_message": record.error_message, "model": record.model,
                "input_tokens": record.usage.input_tokens if record.succeeded else None,
                "output_tokens": record.usage.output_tokens if record.succeeded else None}


def build_results_table(index: ResultIndex, requests: Iterator[tuple[str, dict[str, Any]]] | None,
                        csv_path: Path, jsonl_path: Path, preview_size: int = 5, *,
                        overwrite: bool = False) -> ResultTable:
    """Write one row per request (input order), joined with its input columns; results the input lacks last.

    The JSONL table keeps every text as it is; in the CSV, which spreadsheets open, text that would
    run as a formula is made inert.
    """
    table = ResultTable(csv_path=csv_path, jsonl_path=jsonl_path)
    rows = _rows(index, requests)
    first = next(rows, None)
    fields = TABLE_COLUMNS + [k for k in (first[1] if first else {}) if k not in TABLE_COLUMNS]
    with NewFile(csv_path, overwrite=overwrite, text=True) as csv_file, \
            NewFile(jsonl_path, overwrite=overwrite, text=True) as jsonl_file:
        writer, out = csv.writer(csv_file.out), jsonl_file.out
        writer.writerow(map(_spreadsheet_safe, fields))
        for custom_id, columns in itertools.chain([first] if first else [], rows):
            row = {"custom_id": custom_id, **columns, **table.add(index.get(custom_id), preview_size)}
            writer.writerow(map(_spreadsheet_safe, map(row.get, fields)))
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    index.close()
    return table


def _spreadsheet_safe(value: Any) -> Any:
    """``value``, with a quote before text a spreadsheet would run as a formula (OWASP's CSV injection list).

    Plain numbers such as ``-3.5`` stay as they are: a spreadsheet reads them as numbers, not formulas.
    """
    if value.__class__ is str and value.startswith(_FORMULA_START) and not _PLAIN_NUMBER.fullmatch(value):
        return "'" + value
    return value


def _rows(index: ResultIndex, requests: Iterator[tuple[str, dict[str, Any]]] | None
          ) -> Iterator[tuple[str, dict[str, Any]]]:
    seen: set[str] = set()
    for custom_id, columns in requests or ():
        seen.add(custom_id)
        yield custom_id, columns
    for custom_id in list(index.ids()):
        if custom_id not in seen:
            yield custom_id, {}


def write_unfinished(source: Path, index: ResultIndex, target: Path, *,
                     cannot_fix: frozenset[str] = frozenset()) -> tuple[int, int, int]:
    """Copy the request lines of ``source`` that have no successful result into a new file ``target``
    (created only if there are some), except those whose error is one of ``cannot_fix``; return
    (failed, missing, left out)."""
    failed = missing = left_out = 0
    taken = "move it away, then call retry_failed_requests again"
    with source.open("rb") as lines, NewFile(target, if_taken=taken) as new:
        for raw in lines:
            try:
                line = _decode(raw.lstrip(b"\xef\xbb\xbf")) if raw.strip() else None
            except msgspec.DecodeError:
                continue
            if not isinstance(line, dict) or not isinstance(custom_id := line.get("custom_id"), str):
                continue
            result = index.get(custom_id)
            if result is not None and result.succeeded:
                continue
            if result is not None and result.error_code in cannot_fix:
                left_out += 1
                continue
            failed, missing = (failed + 1, missing) if result is not None else (failed, missing + 1)
            new.out.write(raw if raw.endswith(b"\n") else raw + b"\n")
        if failed + missing == 0:
            new.discard()
    index.close()
    return failed, missing, left_out


def request_prompts(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(custom_id, {"prompt": text}) for each line of a request file, for joining results with their input."""
    with path.open("rb") as lines:
        for raw in lines:
            if not raw.strip():
                continue
            try:
                line = _decode(raw.lstrip(b"\xef\xbb\xbf"))
            except msgspec.DecodeError:
                continue
            if isinstance(line, dict) and isinstance(line.get("custom_id"), str):
                yield line["custom_id"], {"prompt": _shorten(_prompt_of(line), PROMPT_CHARS)}


def _prompt_of(line: dict[str, Any]) -> str | None:
    request = line.get("body") or line.get("params") or {}
    if not isinstance(request, dict):
        return None
    if isinstance(request.get("input"), str):
        return request["input"]
    for message in reversed(request.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(b.get("text", "") for b in content if isinstance(b, dict))
    return None


def _shorten(text: str | None, limit: int = PREVIEW_CHARS) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 1] + "…"

"""Turn records (CSV, JSONL or plain text) into a provider-native batch request file.

This is conversational batch submission: "summarise every review in reviews.csv with gpt-4o-mini"
becomes a template over the file's columns, rendered once per record, streamed to disk.
"""

from __future__ import annotations

import csv
import json
import string
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from batch_mcp.schemas import CUSTOM_ID_PATTERN
from batch_mcp.services.workspace import NewFile

SourceFormat = Literal["csv", "jsonl", "text"]
TEXT_COLUMN = "text"
#: A prompt (with its system text) longer than this fits no model's context; refused, not written.
MAX_PROMPT_CHARS = 4_000_000
#: Texts echoed in a tool answer (the example prompt and line) are cut to this many characters.
EXAMPLE_CHARS = 2_000
#: Literal text, then the column whose value follows it (None after the last placeholder).
Piece = tuple[str, str | None]


class PrepareError(Exception):
    """The records or the template cannot make a valid batch file; the message says what to change."""


@dataclass(frozen=True)
class RequestTemplate:
    """How each record becomes one request."""

    prompt: str
    model: str
    provider: Literal["openai", "anthropic"] = "openai"
    endpoint: Literal["/v1/chat/completions", "/v1/responses"] = "/v1/chat/completions"
    system: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    id_column: str | None = None

    @cached_property
    def _pieces(self) -> tuple[list[Piece], list[Piece]]:
        return _parse(self.prompt, "prompt"), _parse(self.system or "", "system")

    def columns(self) -> list[str]:
        """The placeholders the prompt and system texts name, in order of first use."""
        return list(dict.fromkeys(name for pieces in self._pieces for _, name in pieces if name is not None))

    def rendered_chars(self, record: dict[str, str]) -> int:
        """The length of the prompt and system texts for ``record``, counted before they are built."""
        return sum(len(text) + (len(record[name]) if name is not None else 0)
                   for pieces in self._pieces for text, name in pieces)

    def render_prompt(self, record: dict[str, str]) -> str:
        return _fill(self._pieces[0], record)

    def render(self, custom_id: str, record: dict[str, str]) -> dict[str, Any]:
        prompt = self.render_prompt(record)
        system = _fill(self._pieces[1], record) if self.system else None
        sampling = {} if self.temperature is None else {"temperature": self.temperature}
        if self.provider == "anthropic":
            params: dict[str, Any] = {"model": self.model, "max_tokens": self.max_tokens or 1024,
                                      "messages": [{"role": "user", "content": prompt}], **sampling}
            if system:
                params["system"] = system
            return {"custom_id": custom_id, "params": params}
        if self.endpoint == "/v1/responses":
            body: dict[str, Any] = {"model": self.model, "input": prompt, **sampling}
            if system:
                body["instructions"] = system
            if self.max_tokens:
                body["max_output_tokens"] = self.max_tokens
        else:
            messages = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "user", "content": prompt}]
            body = {"model": self.model, "messages": messages, **sampling}
            if self.max_tokens:
                body["max_tokens"] = self.max_tokens
        return {"custom_id": custom_id, "method": "POST", "url": self.endpoint, "body": body}


def _parse(text: str, where: str) -> list[Piece]:
    """``text`` as (literal text, column name or None) pieces; placeholders may only name a column."""
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise PrepareError(f"The {where} template is malformed ({exc}); write placeholders as {{column}} and "
                           "literal braces as {{ and }}.") from None
    pieces: list[Piece] = []
    for literal, name, spec, conversion in parsed:
        if name is not None and (spec or conversion or not name.strip() or "." in name or "[" in name):
            shown = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            raise PrepareError(f"Placeholder {_cut(shown, 80)} in the {where} template is not a column name: a "
                               "placeholder is a name only, like {review}, with no format spec (:...), conversion "
                               "(!r) or .attribute/[index]; write literal braces as {{ and }}.")
        pieces.append((literal, name))
    return pieces


def _fill(pieces: list[Piece], record: dict[str, str]) -> str:
    return "".join(text + record[name] if name is not None else text for text, name in pieces)


def _cut(text: str, limit: int = EXAMPLE_CHARS) -> str:
    """``text``, cut to ``limit`` characters with a note saying how much is left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… [cut: {len(text) - limit:,} more characters]"


def _cut_texts(value: Any) -> Any:
    """A JSON value with every text in it cut for display."""
    if isinstance(value, str):
        return _cut(value)
    if isinstance(value, dict):
        return {key: _cut_texts(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_cut_texts(item) for item in value]
    return value


@dataclass
class PreparedFile:
    path: Path
    source: Path
    source_format: SourceFormat
    records: int
    columns: list[str]
    example_prompt: str
    example_line: dict[str, Any]
    id_column: str | None
    skipped_blank: int = 0
    warnings: list[str] = field(default_factory=list)


def detect_format(path: Path) -> SourceFormat:
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        return "csv"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    return "text"


def read_records(path: Path, source_format: SourceFormat) -> Iterator[tuple[int, dict[str, str]]]:
    """(row number, record) pairs; rows are numbered as a person counts them in the file (header = row 1)."""
    if source_format == "csv":
        with path.open(newline="", encoding="utf-8-sig") as handle:
            dialect = csv.excel_tab if path.suffix.lower() == ".tsv" else csv.excel
            reader = csv.DictReader(handle, dialect=dialect)
            if not reader.fieldnames:
                raise PrepareError(f"{path.name} has no header row; the first row must name the columns.")
            for record in reader:
                missing = [name for name, value in record.items() if value is None]
                if None in record or missing:
                    raise PrepareError(f"Row {reader.line_num} of {path.name} has "
                                       f"{'too many' if None in record else 'too few'} fields for the header "
                                       f"({', '.join(reader.fieldnames)}); fix that row.")
                yield reader.line_num, dict(record)
    elif source_format == "jsonl":
        with path.open(encoding="utf-8-sig") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise PrepareError(f"Line {number} of {path.name} is not valid JSON ({exc.msg}).") from None
                if not isinstance(value, dict):
                    raise PrepareError(f"Line {number} of {path.name} is not a JSON object; each line must be "
                                       "one record like {\"column\": \"value\"}.")
                yield number, {k: v if isinstance(v, str) else json.dumps(v) for k, v in value.items()}
    else:
        with path.open(encoding="utf-8-sig") as handle:
            for number, line in enumerate(handle, start=1):
                yield number, {TEXT_COLUMN: line.rstrip("\r\n")}


class SourceRows:
    """The records of a source file that carry data, each with the custom_id its request gets.

    ``prepare`` writes requests from it, and the results table reads it again to join results with
    the original records: one numbering rule serves both.
    """

    def __init__(self, source: Path, source_format: SourceFormat, id_column: str | None) -> None:
        self.source, self.source_format, self.id_column = source, source_format, id_column
        self.skipped_blank = 0

    def __iter__(self) -> Iterator[tuple[int, str, dict[str, str]]]:
        try:
            yield from self._rows()
        except UnicodeDecodeError as exc:
            raise PrepareError(f"{self.source.name} is not UTF-8 text (byte {exc.start} cannot be decoded); save it "
                               "as UTF-8 (in Excel: 'CSV UTF-8') and prepare again.") from None
        except csv.Error as exc:
            raise PrepareError(f"{self.source.name} is not a readable CSV ({exc}); fix the file and prepare "
                               "again.") from None

    def _rows(self) -> Iterator[tuple[int, str, dict[str, str]]]:
        count = 0
        for row, record in read_records(self.source, self.source_format):
            if not any(str(value).strip() for value in record.values()):
                self.skipped_blank += 1
                continue
            count += 1
            if self.id_column is not None and self.id_column not in record:
                raise PrepareError(f"Column {self.id_column!r} is not in {self.source.name}; its columns are: "
                                   f"{', '.join(record)}.")
            yield row, _custom_id(self.id_column, record, count, row, self.source.name), record

    def joined(self) -> Iterator[tuple[str, dict[str, str]]]:
        """(custom_id, record) pairs, for joining results with the records they came from."""
        return ((custom_id, record) for _, custom_id, record in self)


def prepare(source: Path, output: Path, template: RequestTemplate, *, overwrite: bool = False,
            source_format: SourceFormat | None = None) -> PreparedFile:
    """Render every record of ``source`` into a new file ``output`` (replacing one only with ``overwrite``).

    The example echoed back is cut to a readable size; the file holds every text in full.
    """
    fmt = source_format or detect_format(source)
    wanted = template.columns()
    if not wanted:
        raise PrepareError("The prompt template names no column; put placeholders such as {text} or {review} "
                           "where each record's values go.")
    rows = SourceRows(source, fmt, template.id_column)
    seen_ids: set[str] = set()
    prepared: PreparedFile | None = None
    with NewFile(output, overwrite=overwrite, text=True) as new:
        for row, custom_id, record in rows:
            if prepared is None:
                _check_columns(wanted, record, source)
            if custom_id in seen_ids:
                raise PrepareError(f"Row {row}: id {custom_id!r} from column {template.id_column!r} is "
                                   "used twice; pick a column with unique values, or omit id_column to "
                                   "number the rows.")
            seen_ids.add(custom_id)
            empty = [name for name in wanted if not str(record.get(name, "")).strip()]
            if empty:
                raise PrepareError(f"Row {row} has an empty value for {', '.join(empty)}, which the template "
                                   "uses; fill it in or remove the row.")
            if (chars := template.rendered_chars(record)) > MAX_PROMPT_CHARS:
                raise PrepareError(f"Row {row} makes a prompt of {chars:,} characters, over the {MAX_PROMPT_CHARS:,} "
                                   "(about a million tokens) no model takes; shorten that row or the template.")
            line = template.render(custom_id, record)
            new.out.write(json.dumps(line, ensure_ascii=False) + "\n")
            if prepared is None:
                prepared = PreparedFile(
                    path=output, source=source, source_format=fmt, records=0, columns=list(record),
                    example_prompt=_cut(template.render_prompt(record)), example_line=_cut_texts(line),
                    id_column=template.id_column)
            prepared.records += 1
        if prepared is None:
            raise PrepareError(f"{source.name} holds no records; nothing to prepare.")
    prepared.skipped_blank = rows.skipped_blank
    if rows.skipped_blank:
        prepared.warnings.append(f"{rows.skipped_blank} blank row(s) were skipped.")
    return prepared


def _check_columns(wanted: list[str], record: dict[str, str], source: Path) -> None:
    unknown = [name for name in wanted if name not in record]
    if unknown:
        raise PrepareError(f"The template names column(s) {', '.join(unknown)} that {source.name} does not have; "
                           f"its columns are: {', '.join(record)}.")


def _custom_id(id_column: str | None, record: dict[str, str], count: int, row: int, name: str) -> str:
    if id_column is None:
        return f"row-{count}"
    value = str(record[id_column]).strip()
    if not CUSTOM_ID_PATTERN.fullmatch(value):
        raise PrepareError(f"Row {row} of {name}: id {value[:80]!r} in column {id_column!r} is not 1-64 letters, "
                           "digits, '_' or '-'; clean that column or omit id_column to number the rows.")
    return value

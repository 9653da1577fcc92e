"""The preflight report: what a batch input file contains and what must change before it is submitted.

These models are tool output, so every field is described for the agent that reads the JSON schema, and
every problem carries a stable ``code`` (:class:`ProblemCode`) that callers may branch on.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, Field

from batch_mcp.schemas.lines import Provider

Severity = Literal["error", "warning"]


class ProblemCode(StrEnum):
    """Stable identifiers of every problem the preflight check reports.

    Field problems follow one pattern: ``missing_<field>`` when the key is absent, ``invalid_<field>``
    when it is present with a wrong type or value.
    """

    # Whole file. The two limits are warnings: such a file runs as a job group of several batches.
    EMPTY_FILE = "empty_file"
    FILE_TOO_LARGE = "file_too_large"
    TOO_MANY_REQUESTS = "too_many_requests"
    WRONG_EXTENSION = "wrong_extension"
    UTF8_BOM = "utf8_bom"
    BLANK_LINE = "blank_line"
    # One line's size, encoding and syntax.
    LINE_TOO_LARGE = "line_too_large"
    INVALID_UTF8 = "invalid_utf8"
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    # custom_id.
    MISSING_CUSTOM_ID = "missing_custom_id"
    INVALID_CUSTOM_ID = "invalid_custom_id"
    CUSTOM_ID_FORMAT = "custom_id_format"
    DUPLICATE_CUSTOM_ID = "duplicate_custom_id"
    # Which provider format and endpoint a line uses.
    UNKNOWN_REQUEST_SHAPE = "unknown_request_shape"
    PROVIDER_MISMATCH = "provider_mismatch"
    MIXED_PROVIDERS = "mixed_providers"
    MISSING_METHOD = "missing_method"
    INVALID_METHOD = "invalid_method"
    MISSING_URL = "missing_url"
    UNSUPPORTED_URL = "unsupported_url"
    UNSUPPORTED_ENDPOINT = "unsupported_endpoint"
    UNSUPPORTED_LINE_FORMAT = "unsupported_line_format"
    URL_MISMATCH = "url_mismatch"
    MIXED_URLS = "mixed_urls"
    # The request itself (openai ``body`` or anthropic ``params``).
    MISSING_BODY = "missing_body"
    INVALID_BODY = "invalid_body"
    MISSING_PARAMS = "missing_params"
    INVALID_PARAMS = "invalid_params"
    MIXED_MODELS = "mixed_models"
    MISSING_MODEL = "missing_model"
    INVALID_MODEL = "invalid_model"
    MISSING_MESSAGES = "missing_messages"
    INVALID_MESSAGES = "invalid_messages"
    MISSING_INPUT = "missing_input"
    INVALID_INPUT = "invalid_input"
    MISSING_MAX_TOKENS = "missing_max_tokens"
    INVALID_MAX_TOKENS = "invalid_max_tokens"


class Problem(BaseModel):
    """One thing wrong with the file, and how to fix it."""

    line: int | None = Field(
        description="1-based physical line number in the file (blank lines count); "
        "null for a whole-file problem."
    )
    severity: Severity = Field(
        description="'error' makes the file invalid (it must be fixed before submitting); 'warning' does not."
    )
    code: ProblemCode = Field(description="Stable identifier of the kind of problem.")
    message: str = Field(description="What is wrong and what to change, without the line number prefix.")


class ModelUsage(BaseModel):
    """What the requests for one model ask for, for the cost estimate."""

    requests: int = Field(description="Requests that use this model.")
    input_tokens: int = Field(description="Estimated input tokens (prompt bytes / 4).")
    max_output_tokens: int = Field(description="Sum of the requests' output limits (1000 where none is set).")


class BackendRules(BaseModel):
    """The backend a file was checked against, and the facts of it the check applied."""

    name: str = Field(description="The backend's name, as the tools' `backend` argument takes it.")
    label: str
    line_formats: list[str] = Field(description="Request line formats it takes (openai, anthropic).")
    endpoints: list[str] = Field(description="Endpoints it runs batches for (openai lines).")
    max_requests: int | None = Field(description="Requests in one batch; null when no cap is documented.")
    max_bytes: int | None = Field(description="Bytes in one batch's file; null when no cap is documented.")
    one_model_per_file: bool = Field(description="Every request in a batch must name the same model.")
    custom_id_rule: str = Field(description="What a custom_id may be: 'any' unique string, or the pattern.")


class PreflightReport(BaseModel):
    """Result of checking a JSONL batch input file in one streaming pass."""

    path: str = Field(description="The file that was checked, as given.")
    valid: bool = Field(
        description="True when there is no error (warnings allowed): the file can be submitted."
    )
    provider: Provider | None = Field(
        description="The provider whose line format the file uses: as given, else detected from the first "
        "request."
    )
    endpoint: str | None = Field(
        description="The openai endpoint every line's url must equal: as given, else detected from the first "
        "supported url. Null for anthropic files."
    )
    backend: BackendRules | None = Field(default=None, description="The backend whose rules and limits the file "
                                         "was checked against.")
    requests: int = Field(description="Non-blank lines, i.e. requests the service would count.")
    batches: int = Field(
        default=1,
        description="Batches submit_batch makes of the file: 1 when it fits one batch's limits; more when it is "
        "over them (they run as one job group, which every batch tool accepts); 0 when it holds no request or "
        "could not be read to the end.",
    )
    lines: int = Field(description="Physical lines read, blank lines included.")
    blank_lines: int = Field(description="Lines holding only whitespace; they are skipped.")
    bytes: int = Field(description="File size in bytes.")
    sha256: str = Field(
        description="Hex SHA-256 of the file's bytes; empty when the file was not read to the end "
        "(a line in it is longer than a whole batch may be)."
    )
    has_bom: bool = Field(description="The file starts with a UTF-8 byte order mark.")
    mtime_ns: int | None = Field(default=None, description="Modification time of the file as checked (ns); an "
                                 "upload refuses a file changed since.")
    crlf_lines: int = Field(description="Lines ending in CRLF (Windows line endings); accepted as is.")
    models: dict[str, int] = Field(description="Model name -> number of requests using it.")
    estimated_input_tokens: int = Field(
        description="Rough input-token estimate: bytes of the prompt fields' JSON (messages, input, "
        "instructions, system) divided by 4. Good to a factor of about 1.5 for English text; use it for "
        "budgeting, not billing."
    )
    model_usage: dict[str, ModelUsage] = Field(default_factory=dict,
                                               description="Per model: requests, estimated input tokens, "
                                                           "output-token ceiling.")
    error_count: int = Field(description="All errors found, including those not listed in problems.")
    warning_count: int = Field(description="All warnings found, including those not listed in problems.")
    problems: list[Problem] = Field(
        description="The first problems in line order, errors chosen before warnings, up to the configured "
        "cap (20 by default)."
    )
    truncated: bool = Field(description="More problems were found than are listed.")

    def summary(self) -> str:
        """One paragraph for a person or an agent: verdict, what the file holds, and the first problem."""
        shape = " ".join(part for part in (self.provider, self.endpoint) if part) or "unknown format"
        by_use = sorted(self.models.items(), key=lambda item: -item[1])
        models = ", ".join(f"{name} x{count:,}" for name, count in by_use)
        text = (
            f"{'VALID' if self.valid else 'INVALID'}: {self.path} ({shape}): {self.requests:,} requests "
            f"on {self.lines:,} lines, {self.bytes:,} bytes"
            + (f"; models {models}" if models else "")
            + f"; about {self.estimated_input_tokens:,} input tokens (estimate)"
            + (f"; runs as {self.batches:,} batches in one job group (submit_batch)" if self.batches > 1 else "")
            + (f"; checked for {self.backend.label}" if self.backend else "")
            + f"; {self.error_count:,} error(s), {self.warning_count:,} warning(s)."
        )
        listed = [p for p in self.problems if p.severity == "error"] or self.problems
        if listed:
            first = listed[0]
            where = f"line {first.line}" if first.line is not None else "file"
            text += f" First {first.severity} ({where}): {first.message}"
        return text

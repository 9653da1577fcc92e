"""Preflight check of a JSONL batch input file, in one streaming pass.

The pass reads the file in large chunks, hands each chunk to a helper thread for SHA-256 (the hash covers
exactly the bytes that are parsed), and decodes every line with msgspec into a Struct whose small fields
are typed loosely (``Any``) and whose prompt fields are decoded one level deep, their items left as
:class:`msgspec.Raw`: the bulk of each line is scanned, never turned into Python objects. That type
matches any JSON object, so decoding fails only on real syntax errors; every check is then a cheap
comparison, and messages are built only for lines that are wrong. Pydantic builds the report, never a line.

Decisions worth knowing (the report's messages repeat them to the agent):

* A UTF-8 byte order mark is a **warning**. It is unambiguous (only at byte 0) and many Windows tools
  write it, so it is skipped here and the file stays valid; but strict JSON parsers on the service side
  (Go's ``encoding/json``, Python's ``json.loads``) reject the first line because of it, so the warning
  asks for the BOM to be removed before upload.
* Blank (whitespace-only) lines are skipped with **one warning** at the first of them (the report counts
  them all): the service's behaviour on blank lines is not documented and it may reject the file.
* CRLF line endings are accepted silently and only counted: CR is JSON whitespace.
* A file over one batch's limits (requests or bytes) is **valid with a warning**: submit_batch runs it as a
  job group of parts that fit, and the report says how many (``batches``, counted in a second pass by the
  split's own packing, only for such files). Only a line too long for any part is an error; for a file
  over the size limit that is looked for first, in a pass that never holds a line in memory.
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO, Any, cast, get_args

import msgspec
from msgspec import UNSET

from batch_mcp.backends import digitalocean
from batch_mcp.backends.base import Capabilities
from batch_mcp.schemas.lines import CUSTOM_ID_PATTERN, Provider
from batch_mcp.schemas.preflight import BackendRules, ModelUsage, PreflightReport, Problem, ProblemCode, Severity
from batch_mcp.services.input_file import (
    BOM,
    CHUNK,
    UnusableInput,
    explain_invalid_json,
    hashed_lines,
    open_regular_file,
)
from batch_mcp.services.line_shapes import (
    BODY,
    BODY_MESSAGES,
    BODY_MODEL,
    CUSTOM_ID,
    DECODER,
    INPUT,
    MAX_TOKENS,
    METHOD,
    PARAMS,
    PARAMS_MESSAGES,
    PARAMS_MODEL,
    PROMPT,
    PROMPT_FIELD,
    AnthropicParams,
    OpenAIBody,
    RequestLine,
    RequiredField,
    describe,
    output_ceiling,
    prompt_size,
    quote,
)
from batch_mcp.services.split import count_batches, overlong_line

__all__ = ["Limits", "UnusableInput", "preflight"]

_DO = digitalocean.CAPABILITIES


#: Stands for a limit the backend does not document: no file can reach it.
_UNCAPPED = sys.maxsize


@dataclass(frozen=True)
class Limits:
    """Whose rules a file is checked against (its capabilities), one batch's limits, and how many problems a
    report lists. The limits default to the backend's own; None means it documents none."""

    max_requests: int | None = _DO.max_requests
    max_bytes: int | None = _DO.max_bytes
    max_problems: int = 20
    require_jsonl_suffix: bool = True
    capabilities: Capabilities = _DO

    @classmethod
    def of(cls, capabilities: Capabilities, *, max_requests: int | None = None, max_bytes: int | None = None,
           **rest: Any) -> Limits:
        """``capabilities``' rules and limits; a limit given here (a setting, a flag) replaces its own."""
        return cls(max_requests=max_requests or capabilities.max_requests,
                   max_bytes=max_bytes or capabilities.max_bytes, capabilities=capabilities, **rest)

    @property
    def request_cap(self) -> int:
        return _UNCAPPED if self.max_requests is None else self.max_requests

    @property
    def byte_cap(self) -> int:
        return _UNCAPPED if self.max_bytes is None else self.max_bytes


# --- The pass ------------------------------------------------------------------------------------------
class _Scan:
    """Everything learnt about the file so far. One instance per file; not thread-safe."""

    def __init__(self, path: Path, provider: Provider | None, endpoint: str | None, limits: Limits) -> None:
        self.path = path
        self.limits = limits
        self.caps = caps = limits.capabilities
        self.endpoints, self.line_formats = caps.endpoints, caps.line_formats  # read on every line
        self.url_field = RequiredField("url", ProblemCode.MISSING_URL, ProblemCode.UNSUPPORTED_URL,
                                f"one of {', '.join(caps.endpoints)}, the same on every line")
        self.provider_given = provider is not None
        self.provider = provider
        self.provider_line = 0  # line that fixed the provider, when detected
        self.endpoint_given = endpoint is not None
        self.endpoint = endpoint
        self.endpoint_line = 0  # line that fixed the endpoint, when detected
        self.custom_ids: dict[str, int] = {}
        self.usage: dict[str, list[int]] = {}  # model -> [requests, prompt bytes, max output tokens]
        self.first_model_line = 0
        self.prompt_bytes = 0
        self.size = 0
        self.sha256 = ""
        self.lines = self.requests = self.blank_lines = self.crlf_lines = 0
        self.first_excess_request = limits.request_cap + 1
        self.excess_line = 0  # line of the first request over one batch's count
        self.batches = 0
        self.has_bom = False
        self.errors: list[Problem] = []
        self.warnings: list[Problem] = []
        self.error_count = self.warning_count = 0

    # Problems ------------------------------------------------------------------------------------------
    def add(self, line: int | None, severity: Severity, code: ProblemCode,
            message: str | Callable[[], str]) -> None:
        """Count a problem; list it while there is room. A callable message is built only if listed."""
        if severity == "error":
            self.error_count += 1
            listed = self.errors
        else:
            self.warning_count += 1
            listed = self.warnings
        if len(listed) < self.limits.max_problems:
            text = message() if callable(message) else message
            listed.append(Problem(line=line, severity=severity, code=code, message=text))

    def bad_field(self, line: int, value: Any, field: RequiredField) -> None:
        if value is UNSET:
            self.add(line, "error", field.missing,
                     f"{field.path} is missing; add {field.path}: {field.expected}")
        else:
            self.add(line, "error", field.invalid,
                     f"{field.path} is {describe(value)}; it must be {field.expected}")

    # Whole file ----------------------------------------------------------------------------------------
    def check_name(self) -> None:
        name = self.path.name
        if self.limits.require_jsonl_suffix and not (len(name) > 6 and name.lower().endswith(".jsonl")):
            self.add(None, "error", ProblemCode.WRONG_EXTENSION,
                     f"the file name {quote(name)} does not end in .jsonl, which the upload API requires; "
                     f"rename the file, e.g. to {name.rsplit('.', 1)[0] or 'requests'}.jsonl")

    def line_too_large(self, number: int) -> None:
        self.add(number, "error", ProblemCode.LINE_TOO_LARGE,
                 f"this line alone is over the {self.limits.max_bytes:,}-byte limit of one batch, so no split "
                 "can make the file fit (the lines after it were not checked); make sure the file is JSONL with "
                 "one request per line, and shorten this request")

    def read(self, file: IO[bytes]) -> None:
        """Hash, count and check every line. Stops at a line longer than a whole batch may be."""
        hasher = hashlib.sha256()
        size, max_bytes = 0, self.limits.byte_cap
        check_line = self.check_line
        number = 0
        for number, line in enumerate(hashed_lines(file, hasher, max_bytes), 1):
            size += len(line)
            if len(line) > max_bytes:
                self.lines, self.size = number, max(size, os.fstat(file.fileno()).st_size)
                self.line_too_large(number)
                return
            check_line(number, line)
        self.lines = number
        self.size = size
        self.sha256 = hasher.hexdigest()
        self.batches = 1 if self.requests else 0
        if not self.requests:
            what = "is empty" if not size else f"holds only {self.blank_lines} blank line(s)"
            self.add(None, "error", ProblemCode.EMPTY_FILE,
                     f"the file {what}; write one JSON request object per line")

    def over_limits(self) -> bool:
        return self.requests > self.limits.request_cap or self.size > self.limits.byte_cap

    def runs_as(self, batches: int) -> None:
        """Over one batch's limits, but fine as a job group: warnings listed first, so never cut off."""
        self.batches = batches
        limits = self.limits
        how = (f"submit_batch runs it as {batches} batches in one job group (upload_batch_file and create_batch "
               "take a single batch only)")
        notes = []
        if self.size > limits.byte_cap:
            notes.append(Problem(line=None, severity="warning", code=ProblemCode.FILE_TOO_LARGE,
                                 message=f"the file is {self.size:,} bytes, over one batch's limit of "
                                         f"{limits.max_bytes:,}; {how}"))
        if self.excess_line:
            notes.append(Problem(line=self.excess_line, severity="warning", code=ProblemCode.TOO_MANY_REQUESTS,
                                 message=f"this is request {limits.max_requests + 1:,}, over one batch's limit "
                                         f"of {limits.max_requests:,} requests; {how}"))
        self.warnings[:0] = notes
        self.warning_count += len(notes)

    # One line ------------------------------------------------------------------------------------------
    def check_line(self, number: int, line: bytes) -> None:
        if number == 1 and line.startswith(BOM):
            self.has_bom = True
            line = line[len(BOM):]
            self.add(1, "warning", ProblemCode.UTF8_BOM,
                     "the file starts with a UTF-8 byte order mark (BOM); it was skipped here, but strict "
                     "JSON parsers reject the first line because of it: save the file without a BOM")
        if line.endswith(b"\r\n"):
            self.crlf_lines += 1
        if not line or line.isspace():
            self.blank_lines += 1
            if self.blank_lines == 1:
                self.add(number, "warning", ProblemCode.BLANK_LINE,
                         "blank line, skipped here (blank_lines counts them all); the service does not "
                         "document blank lines and may reject the file: remove every blank line")
            return
        self.requests += 1
        if self.requests == self.first_excess_request:
            self.excess_line = number
        if not line.isascii():
            try:
                line.decode()
            except UnicodeDecodeError as exc:
                self.add(number, "error", ProblemCode.INVALID_UTF8,
                         f"the byte 0x{line[exc.start]:02x} at position {exc.start + 1} of the line is not "
                         "valid UTF-8; save the file as UTF-8 (JSON text must be UTF-8)")
                return
        try:
            request = DECODER.decode(line)
        except (msgspec.MsgspecError, RecursionError) as exc:
            self.add(number, "error", ProblemCode.INVALID_JSON, partial(explain_invalid_json, line, exc))
            return
        if type(request) is not RequestLine:
            self.add(number, "error", ProblemCode.NOT_AN_OBJECT,
                     f"the line is {describe(request)}, not a JSON object; each line must be one request "
                     'object: {"custom_id": ..., "method": "POST", "url": ..., "body": {...}} for openai, '
                     '{"custom_id": ..., "params": {...}} for anthropic')
            return
        provider = self.provider_of(number, request)
        self.check_custom_id(number, request.custom_id)
        if provider == "openai":
            self.check_openai(number, request)
        elif provider == "anthropic":
            self.check_anthropic(number, request)

    def provider_of(self, number: int, request: RequestLine) -> Provider | None:
        """The provider whose rules this line is checked against; None when it cannot be checked further."""
        openai_keys = request.method is not UNSET or request.url is not UNSET or request.body is not UNSET
        anthropic_keys = request.params is not UNSET
        if openai_keys and anthropic_keys:
            self.add(number, "error", ProblemCode.UNKNOWN_REQUEST_SHAPE,
                     'the line mixes "params" (anthropic format) with "method"/"url"/"body" (openai format); '
                     "keep only the keys of the provider you submit to")
            return None
        if not (openai_keys or anthropic_keys):
            if self.provider is None:
                self.add(number, "error", ProblemCode.UNKNOWN_REQUEST_SHAPE,
                         'the line has neither "params" (anthropic format) nor "method"/"url"/"body" (openai '
                         'format); write {"custom_id", "method": "POST", "url", "body"} for openai or '
                         '{"custom_id", "params"} for anthropic')
            return self.provider  # checked as the file's provider, so the missing keys get named
        shape: Provider = "openai" if openai_keys else "anthropic"
        if shape not in self.line_formats:
            self.add(number, "error", ProblemCode.UNSUPPORTED_LINE_FORMAT, partial(self.format_refused, shape))
            return None
        if self.provider is None:
            self.provider, self.provider_line = shape, number
        elif shape != self.provider:
            if self.provider_given:
                self.add(number, "error", ProblemCode.PROVIDER_MISMATCH,
                         f"the line is in {shape} format but the provider is {self.provider}; rewrite it in "
                         f"{self.provider} format, or check and submit the file with provider {shape}")
            else:
                self.add(number, "error", ProblemCode.MIXED_PROVIDERS,
                         f"the line is in {shape} format but line {self.provider_line} (the first request) "
                         f"is in {self.provider} format; a file holds one provider's format: move the "
                         f"{shape} requests to a file of their own")
            return None
        return shape

    def format_refused(self, shape: str) -> str:
        takes = " or ".join(self.caps.line_formats)
        example = ('{"custom_id", "method": "POST", "url": "/v1/chat/completions", "body": {"model", "messages", '
                   '"max_tokens"}}') if "openai" in self.caps.line_formats else '{"custom_id", "params"}'
        return (f"the line is in {shape} format, which {self.caps.label} does not take (it takes {takes} lines); "
                f"rewrite it as {example} (an anthropic params object becomes the body, model and messages "
                f"unchanged), or validate and submit it with a backend that takes {shape} lines (batch://backends)")

    def check_custom_id(self, number: int, custom_id: Any) -> None:
        if type(custom_id) is not str or not custom_id:
            self.bad_field(number, custom_id, CUSTOM_ID)
            return
        first = self.custom_ids.setdefault(custom_id, number)
        if first != number:
            self.add(number, "error", ProblemCode.DUPLICATE_CUSTOM_ID,
                     f"duplicate custom_id {quote(custom_id)} (first used on line {first}); give every "
                     "request a unique custom_id")
        if not CUSTOM_ID_PATTERN.fullmatch(custom_id):
            self.bad_custom_id_format(number, custom_id)

    def bad_custom_id_format(self, number: int, custom_id: str) -> None:
        """An error where such ids are refused (an anthropic-rule backend, anthropic lines, a provider not yet
        known); a warning for openai lines on a backend that accepts any id."""
        flaw = (f"is {len(custom_id)} characters long" if len(custom_id) > 64
                else "has characters other than letters, digits, '_' and '-'")
        if self.provider == "openai" and self.caps.custom_id == "any":
            self.add(number, "warning", ProblemCode.CUSTOM_ID_FORMAT,
                     f"custom_id {quote(custom_id)} {flaw}; openai accepts it, but 1-64 of [A-Za-z0-9_-] "
                     "is safe with every provider: consider renaming it")
        else:
            self.add(number, "error", ProblemCode.CUSTOM_ID_FORMAT,
                     f"custom_id {quote(custom_id)} {flaw}; anthropic accepts only 1-64 characters of "
                     "[A-Za-z0-9_-]: rename it")

    def check_openai(self, number: int, request: RequestLine) -> None:
        if request.method != "POST":
            self.bad_field(number, request.method, METHOD)
        url = request.url
        if url not in self.endpoints:
            self.bad_url(number, url)
            url = self.endpoint
        elif self.endpoint is None:
            self.endpoint, self.endpoint_line = url, number
        elif url != self.endpoint:
            self.url_disagrees(number, url)
        body = request.body
        if type(body) is not OpenAIBody:
            self.bad_field(number, body, BODY)
            return
        needs = PROMPT_FIELD.get(url)  # type: ignore[arg-type]
        if needs == "messages":
            if type(body.messages) is not list or not body.messages:
                self.bad_field(number, body.messages, BODY_MESSAGES)
        elif needs == "input" and (type(body.input) not in (str, list) or not body.input):
            self.bad_field(number, body.input, INPUT)
        elif needs == "prompt" and (type(body.prompt) not in (str, list) or not body.prompt):
            self.bad_field(number, body.prompt, PROMPT)
        self.count_request(number, body.model, BODY_MODEL,
                           prompt_size(body.messages, body.input, body.instructions, body.prompt),
                           output_ceiling(body.max_tokens, body.max_completion_tokens,
                                           body.max_output_tokens))

    def bad_url(self, number: int, url: Any) -> None:
        """An endpoint path this backend does not run batches for is named as such; anything else is a bad url."""
        if type(url) is not str or not url.startswith("/v1/"):
            self.bad_field(number, url, self.url_field)
            return
        self.add(number, "error", ProblemCode.UNSUPPORTED_ENDPOINT,
                 lambda: f"{self.caps.label} does not run batches for {quote(url)}; it accepts "
                         f"{', '.join(self.caps.endpoints)}: change the url, or use a backend that runs this "
                         "endpoint (batch://backends)")

    def url_disagrees(self, number: int, url: str) -> None:
        if self.endpoint_given:
            self.add(number, "error", ProblemCode.URL_MISMATCH,
                     f"url {url} differs from the endpoint {self.endpoint} the file is checked for; every "
                     f"url must equal the job's endpoint: change it to {self.endpoint}, or use endpoint "
                     f"{url}")
        else:
            self.add(number, "error", ProblemCode.MIXED_URLS,
                     f"url {url} differs from {self.endpoint}, used from line {self.endpoint_line}; a batch "
                     f"has a single endpoint: move the {url} requests to a file of their own")

    def check_anthropic(self, number: int, request: RequestLine) -> None:
        params = request.params
        if type(params) is not AnthropicParams:
            self.bad_field(number, params, PARAMS)
            return
        max_tokens = params.max_tokens
        if type(max_tokens) is not int or max_tokens < 1:
            self.bad_field(number, max_tokens, MAX_TOKENS)
        if type(params.messages) is not list or not params.messages:
            self.bad_field(number, params.messages, PARAMS_MESSAGES)
        if params.stream is True:
            self.add(number, "error", ProblemCode.STREAM_REQUESTED,
                     "params.stream is true; batch requests never stream: remove it (or set it to false)")
        if params.betas is not UNSET:
            self.add(number, "error", ProblemCode.BETAS_IN_PARAMS,
                     "params.betas is set; beta flags are not part of a request's params: remove betas (a "
                     "batch takes its beta features from the anthropic-beta header of the create call)")
        self.count_request(number, params.model, PARAMS_MODEL,
                           prompt_size(params.messages, params.system), output_ceiling(max_tokens))

    def count_request(self, number: int, model: Any, field: RequiredField, prompt_bytes: int,
                      max_output_tokens: int) -> None:
        """Check the model; tally the requests, prompt size and output ceiling per model (cost estimate)."""
        self.prompt_bytes += prompt_bytes
        if type(model) is not str or not model:
            self.bad_field(number, model, field)
            return
        usage = self.usage.get(model)
        if usage is None:
            if not self.usage:
                self.first_model_line = number
            elif self.caps.mixed_models is False:
                self.models_differ(number, model)
            usage = self.usage[model] = [0, 0, 0]
        usage[0] += 1
        usage[1] += prompt_bytes
        usage[2] += max_output_tokens

    def models_differ(self, number: int, model: str) -> None:
        """Reported once per extra model, at its first line."""
        first = next(iter(self.usage))
        self.add(number, "error", ProblemCode.MIXED_MODELS,
                 lambda: f"model {quote(model)} differs from {quote(first)}, used from line {self.first_model_line}; "
                         f"{self.caps.label} runs one model per batch: move the {quote(model)} requests to a file "
                         "of their own")

    # Result --------------------------------------------------------------------------------------------
    def report(self) -> PreflightReport:
        room = max(0, self.limits.max_problems - len(self.errors))
        problems = sorted(self.errors + self.warnings[:room], key=lambda p: 0 if p.line is None else p.line)
        return PreflightReport(
            path=str(self.path),
            valid=self.error_count == 0,
            provider=self.provider,
            endpoint=self.endpoint if self.provider == "openai" else None,
            backend=self.rules(),
            requests=self.requests,
            batches=self.batches,
            lines=self.lines,
            blank_lines=self.blank_lines,
            bytes=self.size,
            sha256=self.sha256,
            has_bom=self.has_bom,
            crlf_lines=self.crlf_lines,
            models={model: requests for model, (requests, _, _) in self.usage.items()},
            estimated_input_tokens=self.prompt_bytes // 4,
            model_usage={model: ModelUsage(requests=n, input_tokens=size // 4, max_output_tokens=out)
                         for model, (n, size, out) in self.usage.items()},
            error_count=self.error_count,
            warning_count=self.warning_count,
            problems=problems,
            truncated=self.error_count + self.warning_count > len(problems),
        )


    def rules(self) -> BackendRules:
        caps = self.caps
        return BackendRules(name=caps.name, label=caps.label, line_formats=list(caps.line_formats),
                            endpoints=list(caps.endpoints), max_requests=self.limits.max_requests,
                            max_bytes=self.limits.max_bytes, one_model_per_file=caps.mixed_models is False,
                            custom_id_rule="1-64 of [A-Za-z0-9_-]" if caps.custom_id == "anthropic" else "any")


# --- Entry point ---------------------------------------------------------------------------------------
def _arguments(provider: str | None, endpoint: str | None, caps: Capabilities) -> tuple[Provider | None, str | None]:
    """Validate the caller's provider and endpoint against the backend; an endpoint implies provider openai."""
    if endpoint is not None:
        if endpoint not in caps.endpoints:
            raise UnusableInput(f"unsupported endpoint {endpoint!r}: {caps.label} does not run batches for it; "
                                f"use one of {', '.join(caps.endpoints)}")
        if provider == "anthropic":
            raise UnusableInput("anthropic batches take no endpoint; drop the endpoint or use provider "
                                "openai")
        provider = "openai"
    if provider is not None and provider not in get_args(Provider):
        raise UnusableInput(f"unknown provider {provider!r}; use one of {', '.join(get_args(Provider))}")
    if provider is not None and provider not in caps.line_formats:
        raise UnusableInput(f"{caps.label} takes {' or '.join(caps.line_formats)} lines, not {provider}; rewrite the "
                            f"file in {caps.line_formats[0]} format, or use a backend that takes {provider} lines")
    return cast(Provider | None, provider), endpoint



def preflight(path: Path, provider: str | None = None, endpoint: str | None = None,
              limits: Limits = Limits()) -> PreflightReport:
    """Check a batch input file before it is uploaded; raise :class:`UnusableInput` if it cannot be read.

    ``provider`` and ``endpoint`` are detected from the first request when not given; giving an
    endpoint implies provider openai. Lines are checked against ``limits.capabilities``, a backend's rules.
    """
    provider, endpoint = _arguments(provider, endpoint, limits.capabilities)
    path = Path(path)
    file, size = open_regular_file(path)
    scan = _Scan(path, provider, endpoint, limits)
    scan.check_name()
    with file:
        try:
            if size > limits.byte_cap:
                if (overlong := overlong_line(file, limits.byte_cap)) is not None:
                    scan.size = size
                    scan.line_too_large(overlong)
                    return scan.report()
                file.seek(0)
            scan.read(file)
            if scan.sha256 and scan.over_limits():
                file.seek(0)
                scan.runs_as(count_batches(io.BufferedReader(file, CHUNK), limits.request_cap, limits.byte_cap))
        except OSError as exc:
            raise UnusableInput(f"reading {path} failed: {exc.strerror or exc}; check the file") from None
    return scan.report()

"""The OpenAI Batch input line, held to the emulator's own strict models, one body model per endpoint.

A line is ``{"custom_id", "method": "POST", "url", "body"}``; ``url`` must equal the batch endpoint,
and ``body`` must be a valid non-streaming request for it. DigitalOcean's sandbox checks its
openai-provider lines with the same models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, ValidationError

from batch_mcp.sandbox.validation import NotStreamed, OpenLine, describe


class _Body(OpenLine):
    model: str = Field(min_length=1)
    stream: NotStreamed = None


class _Message(OpenLine):
    role: str = Field(min_length=1)


#: What ``input`` or ``prompt`` may be: text, texts, tokens, or token lists; never empty.
TextInput = str | list[str] | list[int] | list[list[int]]


class ChatBody(_Body):
    messages: list[_Message] = Field(min_length=1)


class ResponsesBody(_Body):
    input: str | list[Any] = Field(min_length=1)


class EmbeddingsBody(_Body):
    input: TextInput = Field(min_length=1)
    dimensions: int | None = Field(default=None, ge=1, le=4096)


class CompletionsBody(_Body):
    prompt: TextInput = Field(min_length=1)


class ModerationsBody(_Body):
    model: str | None = Field(default=None, min_length=1)  # the endpoint has a default model
    input: str | list[Any] = Field(min_length=1)


BODIES: dict[str, type[_Body]] = {
    "/v1/chat/completions": ChatBody,
    "/v1/responses": ResponsesBody,
    "/v1/embeddings": EmbeddingsBody,
    "/v1/completions": CompletionsBody,
    "/v1/moderations": ModerationsBody,
}


class RequestLine(OpenLine):
    custom_id: str = Field(min_length=1)
    method: Literal["POST"]
    url: str
    body: dict[str, Any]


def embedding_inputs(value: Any) -> int:
    """How many embeddings one ``input`` asks for: a text or a token list is one."""
    if isinstance(value, list) and value and not isinstance(value[0], int):
        return len(value)
    return 1


@dataclass
class OpenAILineCheck:
    """Checks the lines of one file for a batch on ``endpoint``, remembering the file's model."""

    endpoint: str
    one_model: bool
    max_embedding_inputs: int | None
    model: str | None = None
    embedding_inputs: int = 0

    def problem(self, obj: Any) -> str | None:
        try:
            line = RequestLine.model_validate(obj)
        except ValidationError as exc:
            return describe(exc)
        if line.url != self.endpoint:
            return f"url '{line.url}' does not match the batch endpoint '{self.endpoint}'"
        try:
            body = BODIES[self.endpoint].model_validate(line.body)
        except ValidationError as exc:
            return describe(exc, within="body")
        model = body.model or "omni-moderation-latest"
        if self.one_model and self.model is not None and model != self.model:
            return f"model '{model}' differs from '{self.model}' named earlier; a batch file holds one model"
        self.model = self.model or model
        if isinstance(body, EmbeddingsBody) and self.max_embedding_inputs is not None:
            self.embedding_inputs += embedding_inputs(body.input)
            if self.embedding_inputs > self.max_embedding_inputs:
                return f"the file asks for more than {self.max_embedding_inputs} embedding inputs in total"
        return None

"""A LangChain chat model scripted by next_call, for the frameworks built on LangChain (LangGraph, mcp-use)."""

from __future__ import annotations

from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from _canonical_job import Seen, ToolCall, next_call, text_of


class ScriptedChatModel(BaseChatModel):
    """A chat model whose tool calls are decided by next_call from the ToolMessages it is given."""

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools: Any, **kwargs: Any) -> ScriptedChatModel:
        return self  # it knows its tools' names already

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        history = [Seen(message.name, text_of(message.content), error=message.status == "error")
                   for message in messages if isinstance(message, ToolMessage)]
        step = next_call(history)
        if isinstance(step, ToolCall):
            call = {"name": step.name, "args": step.arguments, "id": f"call_{len(history)}"}
            reply = AIMessage("", tool_calls=[call])
        else:
            reply = AIMessage(step)
        return ChatResult(generations=[ChatGeneration(message=reply)])


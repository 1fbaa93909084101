"""Tools as plain Python functions, tool-call parsers, and `ToolEnvironment`.

    def calc(expression: str) -> str:
        \"\"\"Evaluate an arithmetic expression.

        Args:
            expression: digits and + - * ( ), e.g. "347 + 589".
        \"\"\"
    env = ToolEnvironment([calc], HermesParser(), score=exact_answer)

Implementation details and their sources:

1. `tool_schema(fn)`: the OpenAI / Hugging Face function schema (`{"type": "function",
   "function": {"name", "description", "parameters"}}`) from the signature (JSON types from the
   annotations, parameters without a default are required) and the docstring (its first
   paragraph is the description; a Google-style `Args:` block describes each parameter), the
   form chat templates take as `tools=` (transformers `get_json_schema` reads the same
   docstring layout).
2. Parsers turn a reply into calls, or into an error text that goes back to the policy as the
   tool's reply (what TRL, verl and the OpenAI API do with a malformed call; counted as an
   invalid call): `HermesParser` reads `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`
   (Hermes / Qwen 2.5 / SmolLM2 chat templates), `SimpleParser` reads a reply that is one call
   `name(argument)` (the simulated world's format: the argument is the tool's first parameter).
   A reply with no call is the final answer.
3. A tool that raises answers with `error: <message>` (counted as a tool error, the episode
   goes on); an unknown tool name is an invalid call.
"""

from __future__ import annotations

import inspect
import json
import re
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from rlhfkit.env.base import StepResult, record_messages
from rlhfkit.types import PromptRecord

__all__ = [
    "HermesParser",
    "ParseError",
    "SimpleParser",
    "ToolCall",
    "ToolEnvironment",
    "ToolParser",
    "tool_schema",
]

_JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean", list: "array",
               dict: "object"}  # fmt: skip


def _json_type(annotation: Any) -> dict[str, Any]:
    if annotation is inspect.Parameter.empty:
        return {}
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _json_type(options[0]) if len(options) == 1 else {}
    if origin is typing.Literal:
        values = list(typing.get_args(annotation))
        return {**_json_type(type(values[0])), "enum": values}
    base = origin or annotation
    return {"type": _JSON_TYPES[base]} if base in _JSON_TYPES else {}


def _doc_parts(doc: str) -> tuple[str, dict[str, str]]:
    """(description, {parameter: description}) of a Google-style docstring."""
    doc = inspect.cleandoc(doc or "")
    head, _, args = doc.partition("\nArgs:\n")
    description = " ".join(head.split("\n\n")[0].split())
    params: dict[str, str] = {}
    name, indent = None, 0
    for line in args.split("\n"):
        if line and not line[0].isspace():  # Returns:, Raises:, ... ends the block
            break
        m = re.match(r"\s+(\w+)(?:\s*\([^)]*\))?:\s*(.*)", line)
        if m and (name is None or len(line) - len(line.lstrip()) <= indent):
            name, indent = m.group(1), len(line) - len(line.lstrip())
            params[name] = m.group(2).strip()
        elif name is not None and line.strip():
            params[name] = f"{params[name]} {line.strip()}".strip()
    return description, params


def tool_schema(fn: Callable[..., Any]) -> dict[str, Any]:
    """The function schema of `fn` from its signature and docstring (module docstring, 1)."""
    description, docs = _doc_parts(fn.__doc__ or "")
    hints = typing.get_type_hints(fn)
    properties: dict[str, Any] = {}
    required = []
    for name, p in inspect.signature(fn).parameters.items():
        prop = _json_type(hints.get(name, p.annotation))
        if name in docs:
            prop["description"] = docs[name]
        properties[name] = prop
        if p.default is inspect.Parameter.empty:
            required.append(name)
    return {
        "type": "function",
        "function": {
            "name": fn.__name__,
            "description": description,
            "parameters": {"type": "object", "properties": properties, "required": required},
        },
    }


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]


class ParseError(ValueError):
    """A reply that tries to call a tool but cannot be read; its message goes to the policy."""


class ToolParser(Protocol):
    def parse(self, text: str, tools: dict[str, Callable[..., Any]]) -> list[ToolCall]:
        """The calls in `text` ([] when it is a final answer); raises `ParseError`."""
        ...


class HermesParser:
    """`<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, any number per reply."""

    pattern = re.compile(r"<tool_call>(.*?)(</tool_call>|$)", re.DOTALL)

    def parse(self, text: str, tools: dict[str, Callable[..., Any]]) -> list[ToolCall]:
        calls = []
        for m in self.pattern.finditer(text):
            try:
                obj = json.loads(m.group(1))
            except json.JSONDecodeError as e:
                raise ParseError(f"tool call is not valid JSON ({e.msg})") from None
            if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
                raise ParseError('tool call needs {"name": ..., "arguments": {...}}')
            args = obj.get("arguments", {})
            if isinstance(args, str):  # some models write the arguments as a JSON string
                try:
                    args = json.loads(args)
                except json.JSONDecodeError:
                    raise ParseError("tool call arguments are not a JSON object") from None
            if not isinstance(args, dict):
                raise ParseError("tool call arguments are not a JSON object")
            calls.append(ToolCall(obj["name"], args))
        return calls


class SimpleParser:
    """A reply that is exactly one call `name(argument)`, e.g. `calc(347 + 589)`; the argument
    (text, unquoted) goes to the tool's first parameter. A reply that names a tool and opens a
    parenthesis without being one well-formed call is a parse error."""

    pattern = re.compile(r"^\s*([A-Za-z_]\w*)\((.*)\)\s*$", re.DOTALL)

    def parse(self, text: str, tools: dict[str, Callable[..., Any]]) -> list[ToolCall]:
        m = self.pattern.match(text)
        if m is None:
            if any(re.match(rf"\s*{re.escape(name)}\s*\(", text) for name in tools):
                raise ParseError("a tool call is one line name(argument), nothing else")
            return []
        name, arg = m.group(1), m.group(2).strip()
        fn = tools.get(name)
        if fn is None:
            return [ToolCall(name, {})]  # an unknown tool: reported by the environment
        first = next(iter(inspect.signature(fn).parameters), None)
        return [ToolCall(name, {} if first is None else {first: arg})]


Score = Callable[[PromptRecord, str], float]


class ToolEnvironment:
    """An episode in which the policy may call `tools` before it answers.

    Each policy turn is parsed: calls are run and their results come back as `tool_role`
    messages (reward −`call_cost` per call, valid or not), a malformed call gets the parser's
    error as its reply; a turn without a call is the final answer, scored by
    `score(record, answer)`, and ends the episode. `max_calls` turns with calls at most (then
    the next turn must answer, or the driver's turn cap ends it). The opening turns are the
    `system_prompt` (if any), the `examples` (worked exchanges shown before the question, a
    few-shot demonstration of the call format) and the record's dialogue.
    """

    def __init__(
        self,
        tools: Sequence[Callable[..., Any]],
        parser: ToolParser,
        score: Score,
        *,
        call_cost: float = 0.0,
        tool_role: str = "tool",
        system_prompt: str | None = None,
        schema_in_template: bool = True,
        examples: Sequence[dict[str, str]] = (),
    ) -> None:
        self.functions = {fn.__name__: fn for fn in tools}
        self.tools = [tool_schema(fn) for fn in tools] if schema_in_template else None
        self.parser, self.score = parser, score
        self.call_cost, self.tool_role, self.system_prompt = call_cost, tool_role, system_prompt
        self.examples = [{"role": m["role"], "content": m["content"]} for m in examples]
        self.record: PromptRecord | None = None

    def reset(self, record: PromptRecord) -> list[dict[str, str]]:
        self.record = record
        system = [] if self.system_prompt is None else [
            {"role": "system", "content": self.system_prompt}
        ]  # fmt: skip
        return system + [dict(m) for m in self.examples] + record_messages(record)

    def step(self, message: dict[str, str]) -> StepResult:
        text = message["content"]
        try:
            calls = self.parser.parse(text, self.functions)
        except ParseError as e:
            reply = {"role": self.tool_role, "content": f"error: {e}"}
            return StepResult([reply], -self.call_cost, False, {"invalid_calls": 1})
        if not calls:
            assert self.record is not None, "step before reset"
            reward = float(self.score(self.record, text))
            return StepResult([], reward, True, {"success": float(reward > 0)})
        replies, invalid, errors = [], 0, 0
        for call in calls:
            fn = self.functions.get(call.name)
            if fn is None:
                invalid += 1
                content = f"error: no tool named {call.name!r}"
            else:
                try:
                    content = str(fn(**call.arguments))
                except Exception as e:  # a tool's failure is the policy's information
                    errors += 1
                    content = f"error: {type(e).__name__}: {e}"
            replies.append({"role": self.tool_role, "content": content})
        info = {"tool_calls": len(calls), "invalid_calls": invalid, "tool_errors": errors}
        return StepResult(replies, -self.call_cost * len(calls), False, info)

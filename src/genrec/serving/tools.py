"""Tools for chat assistants: each task as a function with a JSON-schema definition.

The definitions are generated from the typed signatures and docstrings below (the function-calling
format chat-assistant APIs use: ``{"type": "function", "function": {"name", "description",
"parameters"}}``), and ``call_tool`` validates arguments against them before running anything, so
a malformed call becomes a ``ToolError`` with a clear message, never a crash. The MCP server
serves exactly these tools.
"""

from __future__ import annotations

import inspect
import json
import re
import types
import typing
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import typing_extensions
from typing_extensions import TypedDict  # pydantic (genrec serve) needs this one before Python 3.12

from ..errors import GenrecError
from ..grounding import Match
from ..limits import Limits
from ..tasks.results import ChatResponse, Explanation, Recommendation, RecommendationsRead

__all__ = [
    "ToolError", "tool_definitions", "call_tool", "model_thread", "TOOLS", "RESULTS", "Message", "argument_bounds", "tool_docs",
    "package_version",
]  # fmt: skip

MAX_ARGUMENT_CHARS = 100_000


def model_thread() -> ThreadPoolExecutor:
    """The one thread a server runs its Recommender's tasks on (``genrec serve``, ``genrec mcp``):
    one model, one decoder at a time, and bf16 products on AMX from several threads slowed all of
    them (eval/notes/2026-12-07-lean-decoder.md)."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="genrec-model")


class ToolError(GenrecError):
    """A tool call that cannot be served: bad arguments, or an error the task raised."""


class Message(TypedDict):
    role: Literal["system", "user", "assistant"]
    content: str


def recommend(
    rec: Any,
    history: list[str] | None = None,
    k: int = 10,
    request: str | None = None,
    exclude: list[str] | None = None,
    with_history: bool = False,
    min_match_score: float | None = None,
    strict_history: bool = False,
) -> list[dict] | dict:
    """Recommend catalog items for a user: from the items they liked, a request in plain words, or both.

    Args:
        history: Item IDs or titles the user liked, oldest first.
        k: How many items to return.
        request: What the user is looking for, in their words (e.g. "a funny space adventure for kids").
        exclude: Item IDs or titles never to recommend (already owned, turned down).
        with_history: Answer {items, history, history_used, history_dropped}: how each history entry was read (by ID, by title, or fuzzily with a 0-100 score) and which were left out of the prompt, instead of the list of items alone.
        min_match_score: Refuse history titles matched fuzzily below this score (0-100) as unknown items.
        strict_history: Refuse a history longer than the service reads into a prompt, instead of keeping its newest items.
    """
    recs = rec.recommend(
        history or [], k=k, request=request, exclude=exclude or [], min_match_score=min_match_score, strict_history=strict_history
    )  # fmt: skip
    return recs.to_dict() if with_history else recs.to_dicts()


def rank(rec: Any, candidates: list[str], history: list[str] | None = None, request: str | None = None) -> list[dict]:
    """Order candidate items by how well they fit the user, best first, with scores (log-probabilities).

    Args:
        candidates: Item IDs or titles to order.
        history: Item IDs or titles the user liked, oldest first.
        request: What the user is looking for, in their words.
    """
    return rec.rank(history or [], candidates, request=request).to_dicts()


def explain(rec: Any, item: str, history: list[str] | None = None) -> dict:
    """Explain in a few sentences why an item fits a user; items the explanation names come back grounded.

    Args:
        item: The item ID or title to explain.
        history: Item IDs or titles the user liked, oldest first.
    """
    return rec.explain(history or [], item).to_dict()


def chat(rec: Any, messages: list[Message], k: int = 5) -> dict:
    """Recommend from a conversation; items already mentioned or turned down are not recommended again.

    Args:
        messages: The conversation so far, as role/content turns.
        k: How many items to recommend.
    """
    return rec.chat(messages, k=k).to_dict()


def ground(rec: Any, text: str, limit: int = 5) -> list[dict]:
    """Map free text (an LLM's answer, a user's words) onto catalog items, with match scores from 0 to 100.

    Args:
        text: The text naming one item, e.g. "the matrix".
        limit: At most this many matches.
    """
    return [m.to_dict() for m in rec.ground(text, limit=limit)]


def search_catalog(rec: Any, query: str, limit: int = 10) -> list[dict]:
    """Search the catalog by title (fuzzy), returning items with their attributes.

    Args:
        query: Words of the title.
        limit: At most this many items.
    """
    return [{**rec.catalog.item(m.item_id), "score": m.score} for m in rec.catalog.search(query, k=limit)]


TOOLS: dict[str, Callable[..., Any]] = {
    f.__name__: f for f in (recommend, rank, explain, chat, ground, search_catalog)
}
#: what each tool answers (as JSON: the dataclasses' fields), for typed front ends such as genrec serve
RESULTS: dict[str, Any] = {
    "recommend": list[Recommendation] | RecommendationsRead,
    "rank": list[Recommendation],
    "explain": Explanation,
    "chat": ChatResponse,
    "ground": list[Match],
    "search_catalog": list[dict[str, Any]],
}
_MAX_TEXT = {"text": 4000, "query": 500, "item": 500}  # free text the tools take besides a request


def argument_bounds(limits: Limits) -> tuple[dict[str, tuple[int, int]], dict[str, int], dict[str, int]]:
    """(integer ranges, string lengths, list lengths) of the tool arguments, from ``limits``."""
    # (a search keeps at least k beams, so k is bounded by the beams allowed too)
    ranges = {"k": (1, min(limits.max_k, limits.max_beams)), "limit": (1, limits.max_matches), "min_match_score": (0, 100)}
    lengths = {"request": limits.max_request_chars, **_MAX_TEXT}
    items = {"history": limits.max_history, "candidates": limits.max_candidates, "exclude": limits.max_history, "messages": limits.max_turns}
    return ranges, lengths, items


def _schema(annotation: Any, name: str, limits: Limits) -> dict[str, Any]:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    ranges, lengths, items = argument_bounds(limits)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        return _schema(rest[0], name, limits)
    if annotation is str:
        out: dict[str, Any] = {"type": "string"}
        if name in lengths:
            out["maxLength"] = lengths[name]
        return out
    if annotation is bool:
        return {"type": "boolean"}
    if annotation is int:
        out = {"type": "integer"}
        if name in ranges:
            out["minimum"], out["maximum"] = ranges[name]
        return out
    if annotation is float:
        out = {"type": "number"}
        if name in ranges:
            out["minimum"], out["maximum"] = ranges[name]
        return out
    if origin is list:
        out = {"type": "array", "items": _schema(args[0], name + "[]", limits)}
        if name in items:
            out["maxItems"] = items[name]
        return out
    if origin is Literal:
        return {"type": "string", "enum": list(args)}
    if typing_extensions.is_typeddict(annotation):
        hints = typing.get_type_hints(annotation)
        return {
            "type": "object",
            "properties": {k: _schema(v, k, limits) for k, v in hints.items()},
            "required": sorted(annotation.__required_keys__),
            "additionalProperties": False,
        }
    raise TypeError(f"no JSON schema for {annotation!r} ({name})")


def tool_docs(func: Callable[..., Any]) -> tuple[str, dict[str, str]]:
    """A task's one-line summary and its arguments' descriptions, from its docstring."""
    doc = inspect.getdoc(func) or ""
    summary, _, rest = doc.partition("\n\n")
    params = {m.group(1): " ".join(m.group(2).split()) for m in re.finditer(r"^\s*(\w+): (.+?)(?=^\s*\w+: |\Z)", rest.partition("Args:")[2], re.M | re.S)}
    return " ".join(summary.split()), params


def definition(func: Callable[..., Any], limits: Limits = Limits()) -> dict[str, Any]:
    """The function-calling definition of one tool, from its signature and docstring; the
    bounds on its arguments come from ``limits`` (the Recommender's)."""
    hints = typing.get_type_hints(func)
    summary, param_docs = tool_docs(func)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for name, param in list(inspect.signature(func).parameters.items())[1:]:  # skip the Recommender
        prop = _schema(hints[name], name, limits)
        if name in param_docs:
            prop["description"] = param_docs[name]
        if param.default is inspect.Parameter.empty:
            required.append(name)
        elif param.default is not None:
            prop["default"] = param.default
        properties[name] = prop
    parameters = {"type": "object", "properties": properties, "required": required, "additionalProperties": False}
    return {"type": "function", "function": {"name": func.__name__, "description": summary, "parameters": parameters}}


def tool_definitions(limits: Limits = Limits()) -> list[dict[str, Any]]:
    """Every tool's definition, in the function-calling format."""
    return [definition(f, limits) for f in TOOLS.values()]


def validate_arguments(name: str, arguments: Any, limits: Limits = Limits()) -> dict[str, Any]:
    """The arguments, checked against the tool's schema; a ToolError names the first problem."""
    import jsonschema

    if name not in TOOLS:
        raise ToolError(f"unknown tool {name!r} (tools: {', '.join(TOOLS)})")
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        raise ToolError(f"{name}: arguments must be a JSON object")
    size = len(json.dumps(arguments, default=str))
    if size > MAX_ARGUMENT_CHARS:
        raise ToolError(f"{name}: arguments are {size} characters; the limit is {MAX_ARGUMENT_CHARS}")
    schema = definition(TOOLS[name], limits)["function"]["parameters"]
    try:
        jsonschema.validate(arguments, schema)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "arguments"
        raise ToolError(f"{name}: {where}: {exc.message}") from None
    return arguments


def call_tool(rec: Any, name: str, arguments: Any) -> Any:
    """Validate and run a tool; the result is plain JSON data. Errors become ToolError."""
    arguments = validate_arguments(name, arguments, getattr(rec, "limits", Limits()))
    try:
        return TOOLS[name](rec, **arguments)
    except GenrecError as exc:
        raise ToolError(f"{name}: {exc}") from exc


def package_version() -> str:
    """genrec's installed version, as the MCP server and the HTTP service announce it."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("genrec")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"

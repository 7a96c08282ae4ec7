"""Bounds on what one call may ask for, shared by the Python API, the tool schemas and the CLI.

Each breach is a ``LimitError`` that names the bound (``Limits.max_k``), so a caller knows which
setting to raise; the tool schemas in ``genrec.serving.tools`` are generated from the same values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import LimitError

__all__ = ["Limits"]


@dataclass(frozen=True)
class Limits:
    """Bounds on what one call may ask for; each breach is a LimitError naming the bound."""

    max_k: int = 1000
    max_beams: int = 256
    max_history: int = 10_000
    max_request_chars: int = 4000
    max_candidates: int = 1000
    max_conversation_chars: int = 50_000
    max_turns: int = 200
    max_new_tokens: int = 512
    max_matches: int = 100
    # what one prompt may cost: the newest history items read into it (the older ones are still
    # never recommended), and its tokens (None: the model's context); a service sets both
    max_history_items: int | None = None
    max_prompt_tokens: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_history_items", "max_prompt_tokens"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise LimitError(f"Limits.{name} must be a whole number of at least 1 (or None), got {value!r}")

    def check_k(self, k: Any) -> int:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise LimitError(f"k must be a whole number, got {k!r}")
        if k < 1:
            raise LimitError(f"k must be at least 1, got {k}")
        if k > self.max_k:
            raise LimitError(f"k={k} is above the limit of {self.max_k} (Limits.max_k)")
        return int(k)

    def check_beams(self, beams: int, k: int) -> int:
        if beams > self.max_beams:
            raise LimitError(f"k={k} needs {beams} beams; the limit is {self.max_beams} (Limits.max_beams)")
        return beams

    def check_request(self, request: Any) -> None:
        if request is not None and not isinstance(request, str):
            raise LimitError(f"request must be text, got {type(request).__name__}")
        if request and len(request) > self.max_request_chars:
            raise LimitError(f"request has {len(request)} characters; the limit is {self.max_request_chars}")

    def check_refs(self, refs: Any, what: str = "history") -> Sequence[Any]:
        """A list of item references (IDs or titles) of allowed length."""
        if isinstance(refs, (str, bytes)):
            raise LimitError(f"{what} must be a list of item IDs or titles, not one string")
        bound, name = (self.max_candidates, "max_candidates") if what == "candidates" else (self.max_history, "max_history")
        if len(refs) > bound:
            raise LimitError(f"{len(refs)} {what} items given; the limit is {bound} (Limits.{name})")
        return refs

    def cap_history(self, n_items: int, strict: bool = False) -> int:
        """How many of a history's newest ``n_items`` go into a prompt; over the cap with
        ``strict``, a LimitError instead."""
        cap = self.max_history_items
        if cap is None or n_items <= cap:
            return n_items
        if strict:
            raise LimitError(f"{n_items} history items given; at most {cap} are read into a prompt (Limits.max_history_items)")
        return cap

    def check_max_new_tokens(self, max_new_tokens: int) -> None:
        if not 1 <= max_new_tokens <= self.max_new_tokens:
            raise LimitError(f"max_new_tokens must be 1..{self.max_new_tokens}, got {max_new_tokens}")

    def check_matches(self, limit: Any) -> int:
        if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or not 1 <= limit <= self.max_matches:
            raise LimitError(f"limit must be a whole number from 1 to {self.max_matches} (Limits.max_matches), got {limit!r}")
        return int(limit)

    def check_messages(self, messages: Any) -> list[dict[str, str]]:
        """Chat turns as ``{"role", "content"}`` dicts, within the turn and character bounds."""
        if not isinstance(messages, (list, tuple)) or not messages:
            raise LimitError("messages must be a non-empty list of {'role', 'content'} turns")
        if len(messages) > self.max_turns:
            raise LimitError(f"{len(messages)} turns; the limit is {self.max_turns} (Limits.max_turns)")
        turns = []
        for n, message in enumerate(messages):
            if not isinstance(message, dict) or not isinstance(message.get("content"), str):
                raise LimitError(f"message {n}: expected {{'role': ..., 'content': <text>}}, got {message!r:.80}")
            if message.get("role") not in ("system", "user", "assistant"):
                raise LimitError(f"message {n}: role must be system, user or assistant, got {message.get('role')!r}")
            turns.append({"role": message["role"], "content": message["content"]})
        total = sum(len(t["content"]) for t in turns)
        if total > self.max_conversation_chars:
            raise LimitError(f"the conversation has {total} characters; the limit is {self.max_conversation_chars}")
        if not any(t["role"] == "user" for t in turns):
            raise LimitError("the conversation has no user message")
        return turns

"""What the tasks return: recommendations, explanations and chat replies, each with
``to_dict`` (and, for lists, ``to_dataframe``) for JSON and pandas."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ..grounding import Match

__all__ = ["Recommendation", "Recommendations", "HistoryEntry", "RecommendationsRead", "Explanation", "ChatResponse"]


@dataclass(frozen=True)
class Recommendation:
    """One recommended item. ``score`` orders the list: the log-probability of the model writing its
    title (beam search, ranking), or the mixture content search orders by (``tasks/content_search.py``)."""

    item_id: str
    title: str
    score: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class HistoryEntry:
    """How one history entry was read: the catalog item it became and how it was matched
    (``id``; ``title``, the same title as written up to case, accents and punctuation; or
    ``fuzzy``, the closest title, with the matcher's 0-100 ``score``), and whether it went into the
    prompt (``left_out``: ``cap``, past ``Limits.max_history_items``, or ``context``, cut to fit the
    prompt's tokens; such items are still never recommended)."""

    given: str
    item_id: str
    title: str
    match: str
    score: float
    left_out: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RecommendationsRead:
    """Recommendations with how their history was read (``Recommendations.to_dict``): what the
    recommend tool answers when asked ``with_history``."""

    items: list[Recommendation]
    history: list[HistoryEntry]
    history_used: int
    history_dropped: int


class Recommendations(list):
    """A list of Recommendation, best first, with what happened on the way:

    - ``history_used`` / ``history_dropped``: history items in the prompt, and the oldest ones left
      out (past the history cap, or cut to fit the prompt's tokens);
    - ``history``: how each history entry was read (``HistoryEntry``), oldest first;
    - unconstrained mode only: ``outputs`` (every generated text, best beam first), ``ungrounded``
      (those that matched no catalog item) and ``history_repeats`` (those that named an excluded
      item: one of the history, or of ``exclude=``).
    """

    def __init__(
        self,
        items: Iterable[Recommendation] = (),
        *,
        history_used: int = 0,
        history_dropped: int = 0,
        ungrounded: Sequence[str] = (),
        outputs: Sequence[str] = (),
        history_repeats: Sequence[str] = (),
        prompt_text: str = "",
        history: Sequence[HistoryEntry] = (),
    ) -> None:
        super().__init__(items)
        self.history = list(history)
        self.history_used = history_used
        self.history_dropped = history_dropped
        self.ungrounded = list(ungrounded)
        self.outputs = list(outputs)
        self.history_repeats = list(history_repeats)
        self.prompt_text = prompt_text

    def to_dataframe(self):
        import pandas as pd

        return pd.DataFrame([r.to_dict() for r in self], columns=["item_id", "title", "score"])

    def to_dicts(self) -> list[dict[str, Any]]:
        return [r.to_dict() for r in self]

    def to_dict(self) -> dict[str, Any]:
        """The items and how the history was read, as JSON."""
        return {"items": self.to_dicts(), "history": [h.to_dict() for h in self.history],
                "history_used": self.history_used, "history_dropped": self.history_dropped}  # fmt: skip


@dataclass(frozen=True)
class Explanation:
    """Why an item fits a user: the text, and the catalog items it names (grounded)."""

    item_id: str
    title: str
    text: str
    mentions: list[Match]

    def __str__(self) -> str:
        return self.text

    def to_dict(self) -> dict[str, Any]:
        return {"item_id": self.item_id, "title": self.title, "text": self.text, "mentions": [m.to_dict() for m in self.mentions]}


@dataclass(frozen=True)
class ChatResponse:
    """The assistant's reply and the catalog items it recommends, each grounded to an item ID;
    ``mentioned`` are the items named in the conversation (never recommended again), of which
    ``rejected`` are those the user turned down."""

    text: str
    items: list[Recommendation]
    mentioned: list[Match]
    rejected: list[Match]

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "items": [r.to_dict() for r in self.items],
            "mentioned": [m.to_dict() for m in self.mentioned],
            "rejected": [m.to_dict() for m in self.rejected],
        }

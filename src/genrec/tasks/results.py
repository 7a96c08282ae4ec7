"""What the tasks return: recommendations, explanations and chat replies, each with
``to_dict`` (and, for lists, ``to_dataframe``) for JSON and pandas."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ..grounding import Match

__all__ = ["Recommendation", "Recommendations", "Explanation", "ChatResponse"]


@dataclass(frozen=True)
class Recommendation:
    """One recommended item. ``score`` is the log-probability of the model writing its title."""

    item_id: str
    title: str
    score: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Recommendations(list):
    """A list of Recommendation, best first, with what happened on the way:

    - ``history_used`` / ``history_dropped``: history items in the prompt, and the oldest ones cut
      to fit the model's context window;
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
    ) -> None:
        super().__init__(items)
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

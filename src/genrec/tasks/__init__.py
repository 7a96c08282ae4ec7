"""The tasks, one module each: ``recommend`` (next item, with or without a request), ``rank``,
``explain`` and ``chat``. Each turns its inputs into prompts through the shared
``PromptPipeline``, calls the decoder or the scorer, and builds its result type. The
``Recommender`` facade delegates to them; any object with a ``TaskHost``'s attributes can run them
(``genrec.tasks.rank.rank(host, history, candidates)``)."""

from .host import TaskHost
from .pipeline import PreparedPrompt, PromptPipeline
from .results import ChatResponse, Explanation, HistoryEntry, Recommendation, Recommendations, RecommendationsRead

__all__ = [
    "PromptPipeline",
    "PreparedPrompt",
    "TaskHost",
    "Recommendation",
    "Recommendations",
    "HistoryEntry",
    "RecommendationsRead",
    "Explanation",
    "ChatResponse",
]

"""What a task needs from the object that runs it (the ``Recommender`` facade, or a test double)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from ..catalog import Catalog
from ..content import ContentScores
from ..decoding import OutputVocabulary, PrefixCache, TitleIndex
from ..limits import Limits
from ..model import LoadedModel
from ..prompts import PromptLibrary
from ..words import Words
from .pipeline import PromptPipeline
from .prior import Prior

if TYPE_CHECKING:  # (content_search takes a TaskHost)
    from ..log_model import LogModel
    from .content_search import ContentSearch

__all__ = ["TaskHost", "output_vocabulary"]


class TaskHost(Protocol):
    """A loaded model with its catalog, prompt pipeline and decoding settings."""

    lm: LoadedModel
    catalog: Catalog
    prompts: PromptLibrary
    pipeline: PromptPipeline
    limits: Limits
    num_beams: int
    length_penalty: float
    lookahead: bool
    max_per_family: int | None  # titles of one family of variants per list (None: no cap)
    family_share: float
    batch_size: int
    grounding_threshold: float
    free_text_slack: int
    end_ids: tuple[int, ...]
    pad_token_id: int
    default_prior: Prior  # what a call without a prior of its own mixes in (no scores: the model alone)
    output_vocabulary: str  # "full" or "catalog" (decoding.vocabulary)
    search: str  # "auto", "beam", "content" or "log" (content_search.py)
    content_search: ContentSearch
    fine_tuned: bool  # a model genrec fine-tuned on an interaction log (its directory holds genrec.json)
    log_model: LogModel | None  # the mixture Recommender.fit fitted on an interaction log

    def prefix_cache(self, template: str) -> PrefixCache: ...

    def content_scores(self) -> ContentScores: ...

    def words(self) -> Words: ...


def output_vocabulary(host: TaskHost, index: TitleIndex) -> OutputVocabulary | None:
    """The tokens title log-probabilities are normalised over when decoding ``index``'s titles
    (None: the model's whole vocabulary)."""
    return OutputVocabulary.of_index(index, host.lm.device) if host.output_vocabulary == "catalog" else None

"""Recommending from words when no interaction log says anything (``search="content"``): the items
whose words are nearest the history and the request (``genrec.content``) are proposed, and the
model scores each proposed title exactly, in the context beam search would write it. The list is
ordered by the mixture of the two experts' probabilities,

    log((1 - w) * p_model(title) + w * p_content(item))

with ``p_content`` the similarities' softmax over every item the user may be recommended (as a
log-score, ``log(similarity + 1e-6)``). A whole title's probability under the model is tiny, so at
any weight above 0 the list is in effect content's order, and the model decides among the items
whose words the history barely touches. Measured on new-item rows (eval/RESULTS.md), this beats the
model writing titles over the whole catalog from scratch; and no mixture the harness tried
(product, sum, per token, pointwise mutual information) gave the 135M model's opinion more weight
than this without losing accuracy on new-item validation rows.

``search="auto"`` (the default) uses it when nothing learned from an interaction log is at hand:
no active prior, and a model that genrec did not fine-tune. Content reads the history only; a
request reaches the model's prompt, so it orders the candidates content cannot tell apart. A
history with no word in common with any item it may recommend (or none: a request alone) leaves
the choice to beam search over the whole catalog.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..content import log_similarity
from ..decoding import score_continuations
from ..errors import ConfigError, DeadlineError
from .host import TaskHost, output_vocabulary
from .pipeline import PreparedPrompt
from .prior import Prior
from .results import Recommendation, Recommendations

__all__ = ["SEARCHES", "ContentSearch", "check_search", "uses_content", "decode_content"]

#: ``beam``: the model writes titles over the whole catalog; ``content``: the items nearest in words
#: proposed, the model reranking them; ``auto``: content unless a prior or a fine-tuned model is at hand
SEARCHES = ("auto", "beam", "content")


@dataclass(frozen=True)
class ContentSearch:
    """How ``search="content"`` proposes and orders: its ``candidates`` most similar items, mixed
    at ``weight`` (see the module); the history's profile from its last ``window`` items (0: all)
    weighted ``decay ** age`` (what the content baseline chose on the validation rows of D3 and
    Amazon Scientific; MovieLens chose a window of 10 with the same decay)."""

    candidates: int = 50
    weight: float = 0.5
    window: int = 0
    decay: float = 0.7

    def __post_init__(self) -> None:
        if self.candidates < 1 or not 0.0 <= self.weight <= 1.0:
            raise ConfigError(f"content search needs candidates >= 1 and a weight in [0, 1], got {self.candidates} and {self.weight}")


def check_search(search: str) -> str:
    if search not in SEARCHES:
        raise ConfigError(f"search must be one of {', '.join(SEARCHES)}, got {search!r}")
    return search


def uses_content(search: str, prior: Prior, fine_tuned: bool) -> bool:
    """Whether a constrained call with this ``search`` and ``prior`` proposes from content."""
    if check_search(search) == "auto":
        return not prior.active and not fine_tuned
    return search == "content"


def decode_content(
    host: TaskHost, scores: np.ndarray, jobs: Sequence[PreparedPrompt], k: int, settings: ContentSearch, *,
    deadline: float | None = None,
) -> list[Recommendations | None]:  # fmt: skip
    """Each job's ``k`` items (None where content has no word in common with anything it may
    recommend: beam search's turn); ``scores``: the jobs' content similarities, one row each.
    ``deadline`` (``time.monotonic()``): a DeadlineError once a job starts past it."""
    catalog, pipeline = host.catalog, host.pipeline
    titles = catalog.position_titles  # each position's title number
    out: list[Recommendations | None] = []
    for n, (job, row) in enumerate(zip(jobs, scores)):
        if deadline is not None and time.monotonic() > deadline:
            raise DeadlineError(f"content search passed its deadline after {n} of {len(jobs)} users")
        allowed = ~np.isin(titles, list(job.banned_titles))
        if not allowed.any() or row[allowed].max() <= 0.0:
            out.append(None)
            continue
        ranked = np.flatnonzero(allowed)[np.argsort(-row[allowed], kind="stable")]  # ties: catalog order
        proposed = ranked[: settings.candidates]
        index = pipeline.index(job.ctx)
        sequences = [index.sequence(int(titles[p])) for p in proposed]
        model = np.asarray(
            score_continuations(host.lm.model, job.prompt_ids, sequences, vocabulary=output_vocabulary(host, index)), dtype=np.float64
        )  # fmt: skip
        log_content = log_similarity(row)
        log_content = log_content[proposed] - np.logaddexp.reduce(log_content[allowed])
        mixed = _mixture(model, log_content, settings.weight)
        order = np.argsort(-mixed, kind="stable")[:k]
        recs = [Recommendation(catalog.ids[int(proposed[i])], catalog.titles[int(proposed[i])], float(mixed[i])) for i in order]
        out.append(Recommendations(
            recs, history_used=job.history_used, history_dropped=job.history_dropped, prompt_text=job.prompt_text,
            history=job.history,
        ))  # fmt: skip
    return out


def _mixture(model: np.ndarray, log_content: np.ndarray, weight: float) -> np.ndarray:
    if weight >= 1.0:
        return log_content
    if weight <= 0.0:
        return model
    return np.logaddexp(np.log1p(-weight) + model, np.log(weight) + log_content)

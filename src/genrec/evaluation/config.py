"""The settings that decide a run's numbers (``EvalConfig``), checked once; a resumed run, or a
run that reuses another's fitted baselines and tuning, must match them."""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from ..baselines.fit import SASREC_EPOCHS, SCORED
from ..decoding import check_family_cap
from ..decoding.prior import AGGREGATIONS
from ..errors import DataError
from ..ranking.protocol import PROTOCOL_VERSION
from .fusion import is_rerank
from .rerank import MIXTURES

__all__ = ["EvalConfig", "METHODS", "ALIASES", "SCORED", "DTYPES", "method_order", "config_defaults"]

METHODS = ("pop", "markov", "itemknn", "sasrec-bce", "sasrec-ce", "sasrec", "genrec", "genrec-free")
#: method names that stand for another method (said in the report)
ALIASES = {"sasrec": "sasrec-ce"}

DTYPES = (None, "float32", "bfloat16", "float16")


@dataclass
class EvalConfig:
    """Everything that decides a run's numbers; a resumed run must match it exactly."""

    dataset: str
    methods: list[str]
    k: int = 20
    users: int | None = None
    seed: int = 0
    tie_break: str = "file_order"
    max_history: int = 20
    model: str | None = None
    template: str = "next_item"
    batch_size: int = 8
    sasrec_epochs: int = SASREC_EPOCHS
    data: dict[str, str] = field(default_factory=dict)
    protocol: int = PROTOCOL_VERSION
    prior_grid: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 0.9, 1.0)
    tune_users: int = 100  # validation rows the prior weight is tuned on (seeded sample)
    prior_aggregations: tuple[str, ...] = ("logsumexp",)  # tried on validation with every weight
    # history lengths shown to genrec methods, tuned on validation; empty: max_history, untuned
    history_grid: tuple[int, ...] = ()
    max_per_family: int | None = None  # genrec lists: at most this many variants of one product
    # genrec's weights (float32, bfloat16, float16); None: the Recommender's default, which is
    # float32 on a CPU and bf16 on a GPU (float32 there decodes as a CPU run does)
    dtype: str | None = None
    # genrec's beam width (a search keeps max(num_beams, k) beams): part of a run's settings, as a
    # wider beam finds titles a narrow one prunes (eval/notes/2026-12-02-wider-beam.md)
    num_beams: int = 10
    rerank_candidates: int = 50  # genrec-rerank+ and genrec-union+<baseline>: the baseline's top items the model scores
    # genrec-rerank+ and genrec-union+<baseline>'s weights. Free to try (a row is scored once for all of them), and
    # crowded near 1: w mixes the two log-scores in the ratio w / (1 - w), titles' log-probabilities
    # differ by nats while a prior normalised over its top items may differ by a fraction of one
    # (SASRec-CE's best share on products was w = 0.95; ItemKNN's near-ties there gave way even at 0.995)
    rerank_grid: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 1.0)
    # how they combine the two scores (rerank.MIXTURES), tried with every weight, as free to try
    rerank_mixtures: tuple[str, ...] = MIXTURES

    def histories(self) -> tuple[int, ...]:
        """The history lengths genrec methods try on validation (one: nothing to tune)."""
        return tuple(self.history_grid) or (self.max_history,)

    def check(self) -> None:
        from .methods import check_names  # (the registry, which takes this config)

        check_names(self.methods)
        if not self.methods:
            raise DataError("no methods to evaluate")
        if self.k < 10:
            raise DataError(f"k must be at least 10 (NDCG@10 is the headline metric), got {self.k}")
        bad = [a for a in self.prior_aggregations if a not in AGGREGATIONS]
        if bad or not self.prior_aggregations:
            raise DataError(f"prior aggregations must be some of {', '.join(AGGREGATIONS)}, got {', '.join(bad) or 'none'}")
        if any(h < 1 for h in (self.max_history, *self.history_grid)):
            raise DataError(f"history lengths must be at least 1, got {', '.join(map(str, (self.max_history, *self.history_grid)))}")
        check_family_cap(self.max_per_family)
        for option, grid in (("prior grid", self.prior_grid), ("rerank grid", self.rerank_grid)):
            if not grid or any(not 0.0 <= w <= 1.0 for w in grid):
                raise DataError(f"{option} weights must be in [0, 1], got {', '.join(map(str, grid)) or 'none'}")
        bad = [m for m in self.rerank_mixtures if m not in MIXTURES]
        if bad or not self.rerank_mixtures:
            raise DataError(f"rerank mixtures must be some of {', '.join(MIXTURES)}, got {', '.join(bad) or 'none'}")
        if self.rerank_candidates < self.k:
            raise DataError(f"rerank candidates must be at least k ({self.k}), got {self.rerank_candidates}")
        if self.max_per_family is not None and any(is_rerank(m) for m in self.methods):
            raise DataError("the family cap applies to beam search; a reranking method's lists would not honour it")
        if self.dtype not in DTYPES:
            raise DataError(f"dtype must be one of {', '.join(d for d in DTYPES if d)}, got {self.dtype!r}")
        if self.num_beams < 1:
            raise DataError(f"the beam width must be at least 1, got {self.num_beams}")


def method_order(name: str) -> tuple[int, str]:
    """The order methods are listed in: the named ones as ``METHODS`` lists them, then the rest."""
    return (METHODS.index(name) if name in METHODS else len(METHODS), name)


def config_defaults() -> dict[str, Any]:
    """Each setting's default, as it reads back from JSON: a setting added since a folder was
    written counts as its default there."""
    import json

    return json.loads(json.dumps({f.name: f.default for f in fields(EvalConfig) if f.default is not MISSING}))

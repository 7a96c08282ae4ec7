"""The settings that decide a run's numbers (``EvalConfig``), checked once; a resumed run, or a
run that reuses another's fitted baselines and tuning, must match them."""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from ..baselines.fit import SASREC_EPOCHS, SCORED
from ..decoding import check_family_cap
from ..decoding.runtime import RUNTIMES
from ..decoding.prior import AGGREGATIONS
from ..data.cold import ONLY, check_cold
from ..data.splits import HOLDOUTS, TIE_BREAKS, legacy_holdout
from ..errors import DataError
from ..options import option
from ..ranking.protocol import PROTOCOL_VERSION
from .fusion import is_rerank
from .rerank import MIXTURES

__all__ = ["EvalConfig", "METHODS", "ALIASES", "SCORED", "DTYPES", "method_order", "config_defaults"]

METHODS = (
    "pop", "markov", "itemknn", "sasrec-bce", "sasrec-ce", "sasrec", "content", "hybrid", "genrec", "genrec-free", "genrec-content",
    "genrec-log", "genrec-embed",
)  # fmt: skip
#: method names that stand for another method (said in the report)
ALIASES = {"sasrec": "sasrec-ce"}

DTYPES = (None, "float32", "bfloat16", "float16")


@dataclass
class EvalConfig:
    """Everything that decides a run's numbers; a resumed run must match it exactly. Each
    ``option`` field is also an option of ``eval/run.py`` (``options.py``)."""

    dataset: str
    methods: list[str]
    k: int = option(20, "list length, at least 10 (metrics at the cut-offs 1, 5, 10, 20 up to k)", flag="-k")
    users: int | None = option(None, "evaluate a random sample of this many users")
    seed: int = option(0, "user sample, tie order and SASRec seed")
    tie_break: str = option("file_order", "how events at the same time are ordered in the split", choices=TIE_BREAKS)
    holdout: str = option(
        "latest", "D3 files: validation rows are the training file's latest 10%% (default) or a seeded random 10%% (leaks)",
        choices=HOLDOUTS,
    )  # fmt: skip
    # new items (data/cold.py): a seeded share of the catalog no training interaction may hold
    cold_items: float = option(0.0, "turn this seeded fraction of the catalog into new items: every training interaction with them removed")
    only: str = option("all", "evaluate only the test rows whose target is new (or known)", choices=ONLY)
    max_history: int = option(20, "history items shown in prompts")
    model: str | None = option(None, "model for genrec methods (default: the embedded SmolLM2-135M-Instruct)")
    template: str = "next_item"  # eval/run.py: the one a fine-tuned model was trained with, by default
    batch_size: int = option(8, "users decoded together by genrec")
    sasrec_epochs: int = option(SASREC_EPOCHS, "the most a SASRec trains (validation stops it earlier)")
    data: dict[str, str] = field(default_factory=dict)
    protocol: int = PROTOCOL_VERSION
    prior_grid: tuple[float, ...] = option(
        (0.0, 0.25, 0.5, 0.75, 0.9, 1.0), "genrec+<baseline>'s prior weights tried on validation (a beam search each)"
    )  # fmt: skip
    tune_users: int = option(100, "validation rows (a seeded sample) that tune genrec methods' weights and settings")
    # a cold-start run (--only new) tunes for the rows it evaluates: new items are a few percent of
    # all validation rows, too few to steer a weight chosen on all of them
    tune_on: str = option(
        "all", "tune every method on only the validation rows whose target is new (or known); SASRec's epochs still stop on all",
        choices=ONLY,
    )  # fmt: skip
    # new items the run holds few of (D3's natural ones: 30 validation rows) leave the choice to noise
    tune_cold: float = option(
        0.0, "a seeded fraction of the known items also made new while the scored and genrec-embed methods choose their "
        "settings (more new-item validation rows); each is then fitted again on the run's training part with its choice",
    )  # fmt: skip
    prior_aggregations: tuple[str, ...] = option(
        ("logsumexp",), "how a title prefix gathers its titles' prior scores, tried on validation with every weight: "
        "logsumexp, max, or both (logsumexp,max)",
    )  # fmt: skip
    history_grid: tuple[int, ...] = option(
        (), "history lengths shown to genrec methods, tried on validation (e.g. 5,10,20; default: --max-history only)"
    )  # fmt: skip
    max_per_family: int | None = option(
        None, "genrec lists hold at most N variants of one product (titles sharing half their tokens; default: no cap)"
    )  # fmt: skip
    # float32 on a CPU and bf16 on a GPU by default (float32 there decodes as a CPU run does)
    dtype: str | None = option(
        None, "genrec's weights (default: float32 on a CPU, bf16 on a GPU; float32 on a GPU decodes as a CPU run does)",
        choices=[d for d in DTYPES if d],
    )  # fmt: skip
    # the same lists as torch's to float rounding, still recorded: a run resumes in the runtime it began with
    runtime: str = option(
        "torch", "genrec's model calls: torch (the lean decoder where the model allows), transformers (its forward), or onnxruntime (float32 on the CPU; genrec[onnx])",
        choices=list(RUNTIMES),
    )  # fmt: skip
    # part of a run's settings, as a wider beam finds titles a narrow one prunes (eval/notes/2026-12-02-wider-beam.md)
    num_beams: int = option(10, "genrec's beam width; a search keeps max(this, k) beams (default: %(default)s)")
    rerank_candidates: int = option(
        50, "genrec-rerank+ and genrec-union+<baseline>: how many of the baseline's top items the model scores"
    )  # fmt: skip
    # free to try (a row is scored once for all of them), and crowded near 1: w mixes the two
    # log-scores in the ratio w / (1 - w), titles' log-probabilities differ by nats while a prior
    # normalised over its top items may differ by a fraction of one (SASRec-CE's best share on
    # products was w = 0.95; ItemKNN's near-ties there gave way even at 0.995)
    rerank_grid: tuple[float, ...] = option(
        (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 1.0),
        "genrec-rerank+ and genrec-union+<baseline>'s weights tried on validation (one scoring pass for all; default: %(default)s)",
    )  # fmt: skip
    rerank_mixtures: tuple[str, ...] = option(
        MIXTURES, "how they combine the two scores, tried with every weight: product (log-scores added), sum "
        "(probabilities added), per-token (the product with the model's log-probability per title token), pmi (the product "
        "with the model's log-probability less its log-probability after no history) (default: %(default)s)",
    )  # fmt: skip

    # the layers the harness reads items at; the most useful one differs by model and catalog
    embed_layers: tuple[int, ...] = option(
        (8, 15, 22), "genrec-embed: the model layers whose hidden states are tried as item vectors on validation (default: %(default)s)"
    )  # fmt: skip
    embed_epochs: int = option(8, "genrec-embed: the most epochs its map trains on the training part (validation keeps the best; 0: untrained)")

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
        for setting, grid in (("prior grid", self.prior_grid), ("rerank grid", self.rerank_grid)):
            if not grid or any(not 0.0 <= w <= 1.0 for w in grid):
                raise DataError(f"{setting} weights must be in [0, 1], got {', '.join(map(str, grid)) or 'none'}")
        bad = [m for m in self.rerank_mixtures if m not in MIXTURES]
        if bad or not self.rerank_mixtures:
            raise DataError(f"rerank mixtures must be some of {', '.join(MIXTURES)}, got {', '.join(bad) or 'none'}")
        if self.rerank_candidates < self.k:
            raise DataError(f"rerank candidates must be at least k ({self.k}), got {self.rerank_candidates}")
        if self.max_per_family is not None and any(is_rerank(m) or m in ("genrec-content", "genrec-log") for m in self.methods):
            raise DataError("the family cap applies to beam search; a reranking method's lists would not honour it")
        if self.dtype not in DTYPES:
            raise DataError(f"dtype must be one of {', '.join(d for d in DTYPES if d)}, got {self.dtype!r}")
        if self.runtime not in RUNTIMES:
            raise DataError(f"runtime must be one of {', '.join(RUNTIMES)}, got {self.runtime!r}")
        check_cold(self.cold_items, self.only, self.tune_cold)
        refitted = [m for m in self.methods if m != "genrec-content" and not m.startswith("genrec-embed")
                    and ALIASES.get(m, m) not in SCORED]  # fmt: skip
        if self.tune_cold and refitted:
            raise DataError(f"--tune-cold is for the scored and genrec-embed methods (each fitted again after its choice); "
                            f"{', '.join(refitted)} would not be")  # fmt: skip
        if self.num_beams < 1:
            raise DataError(f"the beam width must be at least 1, got {self.num_beams}")
        if not self.embed_layers or any(layer < 0 for layer in self.embed_layers) or self.embed_epochs < 0:
            raise DataError(f"embed layers must be 0 or more and epochs 0 or more, got {self.embed_layers} and {self.embed_epochs}")


def method_order(name: str) -> tuple[int, str]:
    """The order methods are listed in: the named ones as ``METHODS`` lists them, then the rest."""
    return (METHODS.index(name) if name in METHODS else len(METHODS), name)


def config_defaults(previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """Each setting's default, as it reads back from JSON: a setting added since a folder was
    written counts as its default there, or as what the code did then (``previous``: that
    folder's settings)."""
    import json

    defaults = json.loads(json.dumps({f.name: f.default for f in fields(EvalConfig) if f.default is not MISSING}))
    return {**defaults, "holdout": legacy_holdout(previous or {})}

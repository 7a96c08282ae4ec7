"""The harness's methods, one class per kind, and the registry that names them.

Every kind answers four questions for ``run_evaluation``: what it fits (``fit``), what it chooses
on validation rows (``tune``), how it ranks the test rows (``evaluate``) and what the report says
about it (``describe``). Adding a method is one class and one line of ``REGISTRY``.

- ``ScoredBaseline``: pop, markov, itemknn, sasrec-bce, sasrec-ce (and the alias sasrec);
- ``GenrecBeam``: genrec (constrained beam search) and genrec-free (free text, grounded);
- ``GenrecPrior``: genrec+<baseline>, the baseline as a prior inside the beam;
- ``GenrecRerank``: genrec-rerank+<baseline>, the model reranking the baseline's top candidates;
- ``GenrecUnion``: genrec-union+<baseline>, the same over those and the beam's own titles;
- ``GenrecEmbed`` (``embed.py``): genrec-embed and genrec-embed+<baseline>, the model's item vectors.

What they share (``RunContext``) and their base (``Method``) live in ``context.py``.
"""

from __future__ import annotations

import time
from typing import Any

from ..baselines.fit import SCORED
from ..baselines.scored import ScoredMethod
from ..errors import DataError
from ..model_record import trained_vocabulary
from ..ranking.metrics import UserResult, mean_ndcg
from ..ranking.rows import evaluate_genrec, evaluate_scored, genrec_ndcg
from ..tasks.content_search import ContentSearch
from .config import ALIASES, METHODS, EvalConfig
from .context import Method, Rows, RunContext, Store, build_recommender
from .embed import EMBED_PREFIX, GenrecEmbed
from .fusion import FUSED_PREFIX, RERANK_PREFIX, UNION_PREFIX, tune_on_validation
from .rerank import BaseScores, RerankRow, evaluate_rerank, load_rows, mixed_list, save_rows, score_rows, with_lengths

__all__ = ["RunContext", "build_recommender", "Method", "ScoredBaseline", "GenrecEmbed", "GenrecBeam", "GenrecPrior", "GenrecRerank", "GenrecUnion",
           "REGISTRY", "method_for", "check_names"]  # fmt: skip

class ScoredBaseline(Method):
    """A baseline that scores the full catalog (``baselines/``)."""

    @classmethod
    def accepts(cls, name: str) -> bool:
        return ALIASES.get(name, name) in SCORED

    def fit(self, ctx: RunContext) -> None:
        ctx.baseline(self.name)

    def evaluate(self, ctx: RunContext, rows: Rows, tuned: dict[str, Any] | None, store: Store) -> None:
        evaluate_scored(ctx.baseline(self.name), rows, protocol=ctx.protocol, on_batch=store, progress=ctx.progress, name=self.name)

    def describe(self, ctx: RunContext, tuned: dict[str, Any] | None) -> dict[str, Any]:
        method, canonical = ctx.baseline(self.name), ALIASES.get(self.name, self.name)
        described: dict[str, Any] = {"alias_of": canonical} if canonical != self.name else {}
        described["fit_s"] = round(method.fit_s, 2)
        if method.tuned:
            described["tuned"] = method.tuned
        # the same method on every validation row, by the same protocol: a validation figure far
        # above the test one says the validation rows leak what the method memorises
        found: list[UserResult] = []
        rows = list(enumerate(ctx.split.valid))
        evaluate_scored(method, rows, protocol=ctx.protocol, on_batch=found.extend, progress=False, name=self.name)
        if found:
            described["valid_NDCG@10"] = round(mean_ndcg(r.rank for r in found), 4)
            described["valid_rows"] = len(found)
        return described


CONTENT_MODE = (
    f"content search: the items nearest the history in words (TF-IDF mixed with the model's reading of the items at "
    f"{ContentSearch().reading:.3g} of its depth, w = {ContentSearch().reading_weight}), the model's rerank at weight "
    f"{1 - ContentSearch().weight:g}; the Recommender's defaults"
)


LOG_MODE = (
    "Recommender.fit on the training sequences, its settings chosen on the run's validation rows, ranked by "
    "search='log': the hybrid baseline mixed with the model's item vectors under a trained map"
)


class GenrecBeam(Method):
    """The language model alone: constrained beam search (``genrec``), or free text grounded
    onto the catalog (``genrec-free``); or the library's search from words (``genrec-content``:
    ``Recommender(search="content")`` with its default settings, untuned: TF-IDF mixed with the
    model's reading of the items); or the library's mixture fitted on the training part
    (``genrec-log``: ``Recommender.fit``, choosing on the run's validation rows as every method
    does: the library's code path for what ``genrec-embed+hybrid`` measures). Tuned only when the
    run tries several history lengths."""

    mode = "constrained beam search"

    @classmethod
    def accepts(cls, name: str) -> bool:
        return name in ("genrec", "genrec-free", "genrec-content", "genrec-log")

    @property
    def constrained(self) -> bool:
        return self.name != "genrec-free"

    @property
    def search(self) -> str:
        return {"genrec-content": "content", "genrec-log": "log"}.get(self.name, "beam")

    def fit(self, ctx: RunContext) -> None:
        if self.name == "genrec-log":
            started = time.perf_counter()
            rec = ctx.recommender()
            valid = [(e.history, e.target) for e in ctx.tuning_split().valid]
            rec.fit(ctx.split.train, valid=valid, epochs=ctx.config.embed_epochs, seed=ctx.config.seed, progress=ctx.progress)
            self.fit_s = time.perf_counter() - started

    def prior(self, ctx: RunContext) -> ScoredMethod | None:
        return None

    def tune(self, ctx: RunContext) -> dict[str, Any] | None:
        if len(ctx.config.histories()) == 1:
            return None
        return self._tune_beam(ctx, weights=(0.0,))

    def _tune_beam(self, ctx: RunContext, weights: tuple[float, ...]) -> dict[str, Any]:
        """Prior weight and aggregation (with a prior) and history length, by validation NDCG@10."""
        rec, valid, prior = ctx.recommender(), ctx.valid(), self.prior(ctx)

        def validation_ndcg(weight: float, aggregation: str, history: int) -> float:
            return genrec_ndcg(
                rec, valid, constrained=self.constrained, max_history=history, prior=prior, prior_weight=weight,
                prior_aggregation=aggregation, progress=ctx.progress, search=self.search,
                name=f"{self.name} validation (w={weight}, {aggregation}, history {history})", **ctx.decoding(),
            )  # fmt: skip

        return tune_on_validation(
            validation_ndcg, ctx.out_dir / "tuning" / f"{self.name}.json", len(valid), histories=ctx.config.histories(),
            weights=weights, aggregations=ctx.config.prior_aggregations,
            alone=ctx.alone if self.constrained else {},  # free generation is another decode than the beam's
        )  # fmt: skip

    def evaluate(self, ctx: RunContext, rows: Rows, tuned: dict[str, Any] | None, store: Store) -> None:
        tuned = tuned or {}
        evaluate_genrec(
            ctx.recommender(), rows, constrained=self.constrained,
            max_history=tuned.get("max_history", ctx.config.max_history), on_batch=store, progress=ctx.progress,
            name=self.name, prior=self.prior(ctx), prior_weight=tuned.get("prior_weight", 0.0),
            prior_aggregation=tuned.get("prior_aggregation"), search=self.search, **ctx.decoding(),
        )  # fmt: skip

    def describe(self, ctx: RunContext, tuned: dict[str, Any] | None) -> dict[str, Any]:
        config = ctx.config
        mode = {"genrec-free": "free generation + grounding", "genrec-content": CONTENT_MODE, "genrec-log": LOG_MODE}.get(self.name) or self.mode_text(config)
        if tuned is not None:
            mode += self.tuned_text(tuned)
            if len(config.histories()) > 1:
                mode += f", last {tuned['max_history']} history items (tuned on validation)"
        described = {
            "model": config.model or "SmolLM2-135M-Instruct (default, zero-shot)",
            "mode": mode,
            "template": config.template,
            "output_vocabulary": trained_vocabulary(config.model),  # what Recommender(model=...) decodes with
        }
        if tuned is not None:
            described["tuned"] = tuned
        if self.name == "genrec-log":
            described["fit"] = {"fit_s": round(self.fit_s, 1), **ctx.recommender().log_model.tuned}
        return described

    def mode_text(self, config: EvalConfig) -> str:
        return self.mode

    def tuned_text(self, tuned: dict[str, Any]) -> str:
        return ""


class GenrecPrior(GenrecBeam):
    """``genrec+<baseline>``: the baseline's scores as a prior inside the beam, weight (and
    aggregation, and history length) tuned on validation."""

    prefix = FUSED_PREFIX

    @classmethod
    def accepts(cls, name: str) -> bool:
        return name.startswith(cls.prefix) and ScoredBaseline.accepts(name[len(cls.prefix) :])

    @property
    def base(self) -> str:
        base = self.name[len(self.prefix) :]
        return ALIASES.get(base, base)

    def fit(self, ctx: RunContext) -> None:
        ctx.baseline(self.base)

    def prior(self, ctx: RunContext) -> ScoredMethod | None:
        return ctx.baseline(self.base)

    def tune(self, ctx: RunContext) -> dict[str, Any] | None:
        return self._tune_beam(ctx, weights=ctx.config.prior_grid)

    def tuned_text(self, tuned: dict[str, Any]) -> str:
        return f", prior {self.base} (weight tuned on validation)"


class GenrecRerank(GenrecPrior):
    """``genrec-rerank+<baseline>``: the model scores the baseline's top candidates exactly and
    the two scores are mixed (weight and mixture tuned on validation)."""

    prefix = RERANK_PREFIX
    beam = False  # the union also decodes the model's own top k

    def mode_text(self, config: EvalConfig) -> str:
        return f"the model reranks {self.base}'s top {config.rerank_candidates}"

    def tuned_text(self, tuned: dict[str, Any]) -> str:
        return f", {tuned['mixture']} of the two scores (weight tuned on validation)"

    def tune(self, ctx: RunContext) -> dict[str, Any] | None:
        """Each validation row is scored (and, for a union, decoded) once per history length, and
        every setting is read off those scores. The scores are kept
        (``tuning/<name>.rows-<history>.npz``): copied into a new output folder that tries another
        grid or mixture, they are read, not scored again. Weight 0 is the model ordering the
        candidates, not the model alone, so nothing is shared with ``genrec``."""
        rec, valid, prior, config = ctx.recommender(), ctx.valid(), ctx.baseline(self.base), ctx.config
        scored: dict[int, list[RerankRow]] = {}
        base = BaseScores(rec, ctx.protocol, config.template) if "pmi" in config.rerank_mixtures else None

        def validation_ndcg(weight: float, mixture: str, history: int) -> float:
            if history not in scored:
                kept = ctx.out_dir / "tuning" / f"{self.name}.rows-{history}.npz"
                if kept.exists():
                    rows = with_lengths(load_rows(kept), rec, valid, protocol=ctx.protocol, max_history=history, template=config.template)
                    if base is not None and any(r.base is None for r in rows):  # kept before pmi was tried
                        rows = base.add_to(rows)
                        save_rows(kept, rows)
                    scored[history] = rows
                else:
                    scored[history] = score_rows(
                        rec, valid, prior, protocol=ctx.protocol, candidates=config.rerank_candidates, max_history=history,
                        template=config.template, beam=self.beam, decode_batch_size=config.batch_size,
                        progress=ctx.progress, name=f"{self.name} validation (history {history})", base=base,
                    )  # fmt: skip
                    save_rows(kept, scored[history])
            credits = [
                ctx.protocol.credit(e.target, mixed_list(r, weight, ctx.protocol, mixture))
                for (_, e), r in zip(valid, scored[history])
            ]
            return mean_ndcg(credits)

        # the beam's aggregation shapes its per-step prior only; a reranked list depends on the mixture instead
        return tune_on_validation(
            validation_ndcg, ctx.out_dir / "tuning" / f"{self.name}.json", len(valid), histories=config.histories(),
            weights=config.rerank_grid, aggregations=config.rerank_mixtures, alone={}, weighted=True, setting="mixture",
        )  # fmt: skip

    def evaluate(self, ctx: RunContext, rows: Rows, tuned: dict[str, Any] | None, store: Store) -> None:
        assert tuned is not None
        config = ctx.config
        evaluate_rerank(
            ctx.recommender(), rows, ctx.baseline(self.base), weight=tuned["prior_weight"], mixture=tuned["mixture"],
            protocol=ctx.protocol, candidates=config.rerank_candidates, max_history=tuned["max_history"],
            template=config.template, on_batch=store, beam=self.beam, batch_size=config.batch_size,
            progress=ctx.progress, name=self.name,
        )  # fmt: skip


class GenrecUnion(GenrecRerank):
    """``genrec-union+<baseline>``: the rerank over the baseline's candidates and the beam's own top k."""

    prefix = UNION_PREFIX
    beam = True

    def mode_text(self, config: EvalConfig) -> str:
        return f"the model reranks {self.base}'s top {config.rerank_candidates} and its own top {config.k}"


#: every kind of method, asked in order whether it takes a name
REGISTRY: tuple[type[Method], ...] = (ScoredBaseline, GenrecBeam, GenrecEmbed, GenrecRerank, GenrecUnion, GenrecPrior)


def method_for(name: str) -> Method:
    for kind in REGISTRY:
        if kind.accepts(name):
            return kind(name)
    check_names([name])
    raise AssertionError("unreachable: check_names refuses what no kind accepts")


def check_names(names: list[str]) -> None:
    """A DataError naming every method no kind of the registry takes."""
    unknown = [n for n in names if not any(kind.accepts(n) for kind in REGISTRY)]
    if unknown:
        raise DataError(
            f"unknown method(s) {', '.join(unknown)} (have: {', '.join(METHODS)}, "
            f"and {FUSED_PREFIX}<baseline>, {RERANK_PREFIX}<baseline>, {UNION_PREFIX}<baseline> or {EMBED_PREFIX}<baseline> "
            f"for a baseline of {', '.join(SCORED)})"
        )

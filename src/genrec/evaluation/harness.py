"""The evaluation harness: methods side by side on the same split, same users, same ranking rules.

``run_evaluation`` writes, under an output folder:

- ``users/<method>.jsonl``: one line per user as it finishes; a killed run resumes from there;
- ``results.json``: ``{"dataset", "n_users", "split", "k", "methods": {name: metrics}}``;
- ``report.md``: the methods side by side, and the plots ``ndcg_at_k.png`` and ``popularity.png``.

Every method is measured by one protocol (``protocol.py``): the same exclusions per row (its
history and their title-mates), the same tie order, a rank credited only from the method's own
top-k list (checked for every row), metrics only at cut-offs up to k. Scored methods (pop, markov,
itemknn, sasrec-bce, sasrec-ce) rank the full catalog; prompt-based methods (genrec, genrec-free)
see the last ``max_history`` items of the history in their prompt.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_file, atomic_write_text
from ..catalog import Catalog
from ..decoding import DEFAULT_FAMILY_SHARE, check_family_cap
from ..decoding.prior import AGGREGATIONS
from ..errors import DataError
from .baselines import ItemKNN, Markov, Popularity, ScoredMethod
from .datasets import Dataset, Example
from .fusion import FUSED_PREFIX, RERANK_PREFIX, UNION_PREFIX, is_fused, is_rerank, is_union, log_scores, prior_of, tune_on_validation
from .metrics import UserResult, ndcg, popularity_percentiles, summarize, top_k
from .protocol import PROTOCOL_TEXT, PROTOCOL_VERSION, Protocol, check_credit, cutoffs
from .rerank import MIXTURES, RerankRow, load_rows, mixed_list, save_rows, score_rows, with_lengths
from .report import write_report
from .significance import paired_comparison
from .splits import Split, sample_examples, split_dataset

__all__ = [
    "EvalConfig", "METHODS", "ALIASES", "SCORED", "fit_scored", "run_evaluation", "evaluate_scored", "evaluate_genrec", "genrec_ndcg", "load_results",
]  # fmt: skip

METHODS = ("pop", "markov", "itemknn", "sasrec-bce", "sasrec-ce", "sasrec", "genrec", "genrec-free")
#: method names that stand for another method (said in the report)
ALIASES = {"sasrec": "sasrec-ce"}
SCORED = ("pop", "markov", "itemknn", "sasrec-bce", "sasrec-ce")
_CONFIG_FILE = "run_config.json"


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
    sasrec_epochs: int = 200
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
        unknown = [m for m in self.methods if m not in METHODS and not (is_fused(m) and prior_of(m) in SCORED + tuple(ALIASES))]
        if unknown:
            raise DataError(
                f"unknown method(s) {', '.join(unknown)} (have: {', '.join(METHODS)}, "
                f"and {FUSED_PREFIX}<baseline>, {RERANK_PREFIX}<baseline> or {UNION_PREFIX}<baseline> "
                f"for a baseline of {', '.join(SCORED)})"
            )
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


def _compare_with_best_baseline(summaries: dict[str, dict[str, Any]], results: dict[str, list[UserResult]]) -> None:
    """Each genrec method paired against the run's best scored baseline by NDCG@10: whether a
    lead in the table is more than noise (``vs_best_baseline`` in its summary)."""
    baselines = [n for n in summaries if not n.startswith("genrec") and "NDCG@10" in summaries[n]]
    if not baselines:
        return
    best = max(baselines, key=lambda n: summaries[n]["NDCG@10"])
    for name, summary in summaries.items():
        if name.startswith("genrec") and results[name]:
            summary["vs_best_baseline"] = paired_comparison(results[name], results[best], names=(name, best)).to_dict()


# ---------------------------------------------------------------------- per-user results on disk
def load_results(out_dir: Path, method: str) -> list[UserResult]:
    """A finished or partial run's per-row results for one method (``OUT/users/<method>.jsonl``),
    read without touching the file (a run may still be writing it)."""
    path = Path(out_dir) / "users" / f"{method}.jsonl"
    if not path.exists():
        found = sorted(p.stem for p in (Path(out_dir) / "users").glob("*.jsonl"))
        raise DataError(f"no results for {method!r} in {out_dir} (it has: {', '.join(found) or 'none'})")
    return sorted(_parse_done(path)[0], key=lambda r: r.row)


def _read_done(path: Path) -> list[UserResult]:
    """Results already written; a half-written last line (a kill mid-write) is cut off."""
    if not path.exists():
        return []
    done, good_bytes = _parse_done(path)
    if good_bytes != path.stat().st_size:
        with open(path, "r+b") as fh:
            fh.truncate(good_bytes)
    return done


def _parse_done(path: Path) -> tuple[list[UserResult], int]:
    """The complete result lines at the start of ``path``, and how many bytes they take."""
    done: list[UserResult] = []
    good_bytes = 0
    with open(path, "rb") as fh:
        for line in fh:
            if not line.endswith(b"\n"):
                break
            try:
                done.append(UserResult.from_dict(json.loads(line)))
            except (json.JSONDecodeError, TypeError, KeyError):
                break
            good_bytes += len(line)
    return done, good_bytes


def _append(path: Path, results: Sequence[UserResult]) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        for r in results:
            fh.write(json.dumps(r.to_dict(), ensure_ascii=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


# ---------------------------------------------------------------------- methods
def evaluate_scored(
    method: ScoredMethod,
    examples: Sequence[tuple[int, Example]],
    *,
    protocol: Protocol,
    on_batch: Callable[[list[UserResult]], None],
    batch_size: int = 256,
    progress: bool = True,
    name: str | None = None,
) -> None:
    """Each row's top-k of the full catalog minus its exclusions, by ``method``'s scores."""
    from tqdm.auto import tqdm

    bar = tqdm(total=len(examples), desc=name or method.name, unit="user", disable=not progress)
    for start in range(0, len(examples), batch_size):
        batch = examples[start : start + batch_size]
        t0 = time.perf_counter()
        scores = method.score([e.history for _, e in batch])
        results = []
        for n, (row, example) in enumerate(batch):
            best = top_k(scores[n], protocol.excluded_mask(example.history), protocol.ties, protocol.k)
            items = [method.catalog.ids[i] for i in best]
            results.append(_result(row, example, items, protocol.credit(example.target, items), n_outputs=len(items)))
        per_user = (time.perf_counter() - t0) / len(batch)
        for r in results:
            r.latency_s = per_user
        on_batch(results)
        bar.update(len(batch))
    bar.close()


def _result(row: int, example: Example, items: list[str], rank: int | None, **counts: Any) -> UserResult:
    history = set(example.history)
    return UserResult(
        user_id=example.user_id,
        target=example.target,
        items=items,
        rank=rank,
        n_outputs=counts.pop("n_outputs"),
        n_duplicates=counts.pop("n_duplicates", len(items) - len(set(items))),
        n_history_repeats=counts.pop("n_history_repeats", sum(i in history for i in items)),
        row=row,
        **counts,
    )


def evaluate_genrec(
    rec: Any,
    examples: Sequence[tuple[int, Example]],
    *,
    protocol: Protocol,
    constrained: bool,
    max_history: int,
    template: str,
    batch_size: int,
    on_batch: Callable[[list[UserResult]], None],
    progress: bool = True,
    name: str = "genrec",
    prior: ScoredMethod | None = None,
    prior_weight: float = 0.0,
    prior_aggregation: str | None = None,
    workers: int = 1,
    ray_address: str | None = None,
    model: str | None = None,
    dtype: str | None = None,
) -> None:
    """Prompt the model with the last ``max_history`` items; the whole history is excluded
    (genrec bans by title, as the protocol does); IDs sharing a title follow the tie order.
    ``prior``: a fitted baseline mixed into beam search with ``prior_weight`` and
    ``prior_aggregation`` (its scores see the whole history). Each batch of ``batch_size`` users
    is one part of ``genrec batch``'s path: decoded here (``workers=1``), or by a pool of Ray
    actors each loading ``model`` in ``dtype`` — the same batches, so the same lists."""
    from tqdm.auto import tqdm

    from ..batch import DecodeSettings, RecommenderSpec, UserJob, decode_parts

    catalog = rec.catalog
    settings = DecodeSettings(
        k=protocol.k, batch_size=batch_size, max_history=max_history, template=template, constrained=constrained,
        prior_weight=prior_weight, prior_aggregation=prior_aggregation,
    )  # fmt: skip
    batches = [list(examples[start : start + batch_size]) for start in range(0, len(examples), batch_size)]

    def parts():  # lazily: a prior row per user is a whole catalog of scores
        for number, batch in enumerate(batches):
            rows = log_scores(prior, [e.history for _, e in batch]) if prior is not None and prior_weight > 0 else None
            yield number, [
                UserJob(str(row), list(e.history), exclude=list(e.history), prior=rows[n] if rows is not None else None)
                for n, (row, e) in enumerate(batch)
            ]

    # the workers' Recommenders decode as this one does
    spec = RecommenderSpec(
        catalog, model=model, dtype=dtype, num_beams=getattr(rec, "num_beams", RecommenderSpec.num_beams),
        max_per_family=getattr(rec, "max_per_family", None), family_share=getattr(rec, "family_share", DEFAULT_FAMILY_SHARE),
    )  # fmt: skip
    bar = tqdm(total=len(examples), desc=name, unit="user", disable=not progress)
    for outcome in decode_parts(spec, settings, parts(), workers=workers, ray_address=ray_address, rec=rec):
        batch = batches[outcome.part]
        if outcome.failures:
            raise DataError(f"{name}: user row {next(iter(outcome.failures))}: {next(iter(outcome.failures.values()))}")
        per_user = outcome.seconds / len(batch)
        on_batch([
            _genrec_result(row, example, outcome.recommendations[str(row)], protocol, constrained, catalog, per_user)
            for row, example in batch
        ])  # fmt: skip
        bar.update(len(batch))
    bar.close()


def genrec_ndcg(
    rec: Any, examples: Sequence[tuple[int, Example]], *, progress: bool = False, name: str = "validation", **decoding: Any
) -> float:
    """Mean NDCG@10 of ``rec``'s lists on ``examples`` (validation rows: the harness's tuning and
    training's checkpoint selection); ``decoding`` is what ``evaluate_genrec`` takes beside them."""
    found: list[UserResult] = []
    evaluate_genrec(rec, examples, on_batch=found.extend, progress=progress, name=name, **decoding)
    return float(np.mean([ndcg(r.rank, 10) for r in found])) if found else 0.0


def _genrec_result(
    row: int, example: Example, recs: Any, protocol: Protocol, constrained: bool, catalog: Catalog, latency_s: float
) -> UserResult:
    items = protocol.order_ties([r.item_id for r in recs], [r.score for r in recs])
    if constrained:
        counts = {"n_outputs": len(items), "n_invalid": sum(i not in catalog for i in items)}
    else:
        distinct_titles = len({r.title for r in recs})
        n_out = len(recs.outputs)
        counts = {
            "n_outputs": n_out,
            "n_invalid": len(recs.ungrounded),
            "n_history_repeats": len(recs.history_repeats),
            "n_duplicates": max(n_out - len(recs.ungrounded) - len(recs.history_repeats) - distinct_titles, 0),
        }
    result = _result(row, example, items, protocol.credit(example.target, items), **counts)
    result.latency_s = latency_s
    result.extra = {"history_dropped": recs.history_dropped}
    return result


# ---------------------------------------------------------------------- the run
def _prepare_out_dir(out_dir: Path, config: EvalConfig, overwrite: bool) -> None:
    (out_dir / "users").mkdir(parents=True, exist_ok=True)
    path = out_dir / _CONFIG_FILE
    wanted = json.loads(json.dumps(asdict(config)))  # as it reads back (tuples become lists)
    if path.exists() and not overwrite:
        previous = json.loads(path.read_text(encoding="utf-8"))
        # methods may be added to a folder; everything that decides the numbers must match
        # (a setting added since the folder was written counts as its default)
        defaults = json.loads(json.dumps({f.name: f.default for f in fields(EvalConfig) if f.default is not MISSING}))
        differs = {k for k in wanted if k != "methods" and previous.get(k, defaults.get(k)) != wanted[k]}
        if differs:
            raise DataError(
                f"{out_dir} holds a run with other settings ({', '.join(sorted(differs))}); "
                f"use another --out, or --overwrite to start over"
            )
        wanted["methods"] = sorted(set(previous.get("methods", [])) | set(config.methods), key=_method_order)
    elif overwrite:
        for stale in (out_dir / "users").glob("*.jsonl"):
            stale.unlink()
        for stale in (*out_dir.glob("*.pt"), *out_dir.glob("tuning/*.json"), *out_dir.glob("tuning/*.partial.jsonl"),
                      *out_dir.glob("tuning/*.npz")):
            stale.unlink()
    atomic_write_text(path, json.dumps(wanted, indent=2))


def _recommender(catalog: Catalog, config: EvalConfig, factory: Callable[[Catalog], Any] | None) -> Any:
    if factory is not None:
        rec = factory(catalog)
        rec.max_per_family = config.max_per_family  # the run's settings decide its numbers
        rec.num_beams = config.num_beams
        return rec
    from ..recommender import Recommender

    return Recommender(
        catalog, model=config.model, dtype=config.dtype, num_beams=config.num_beams, max_per_family=config.max_per_family
    )


def _method_order(name: str) -> tuple[int, str]:
    return (METHODS.index(name) if name in METHODS else len(METHODS), name)


def fit_scored(name: str, catalog: Catalog, split: Split, config: EvalConfig, out_dir: Path, progress: bool) -> ScoredMethod:
    """A scored baseline, trained on the split's training part (tuned on its validation part)."""
    if name in ("sasrec-bce", "sasrec-ce"):
        return _fit_sasrec(name, catalog, split, config, out_dir, progress)
    method = {"pop": Popularity, "markov": Markov, "itemknn": ItemKNN}[name](catalog)
    started = time.perf_counter()
    method.fit(split)
    method.fit_s = time.perf_counter() - started
    return method


def _fit_sasrec(name: str, catalog: Catalog, split: Split, config: EvalConfig, out_dir: Path, progress: bool):
    import torch

    from .sasrec import SASRec, SASRecConfig

    loss = name.split("-")[1]
    settings = SASRecConfig.for_loss(loss, seed=config.seed, max_epochs=config.sasrec_epochs)
    method = SASRec(catalog, settings, progress=progress)
    saved = out_dir / f"{name}.pt"
    if saved.exists():
        method.load_state(torch.load(saved, weights_only=False))
        return method
    started = time.perf_counter()
    method.fit(split)
    method.fit_s = time.perf_counter() - started
    with atomic_file(saved, suffix=".pt") as tmp:
        torch.save(method.state(), tmp)
    return method


def _tune(
    name: str,
    rec: Any,
    valid: Sequence[tuple[int, Example]],
    prior: ScoredMethod | None,
    config: EvalConfig,
    protocol: Protocol,
    out_dir: Path,
    alone: dict[int, float],
    *,
    workers: int,
    ray_address: str | None,
    progress: bool,
) -> dict[str, Any]:
    """A genrec method's decoding settings (prior weight and aggregation when it has a prior,
    history length when the run gives several) chosen by NDCG@10 on the validation rows."""
    constrained = name != "genrec-free"
    if is_rerank(name):
        assert prior is not None
        return _tune_rerank(name, rec, valid, prior, config, protocol, out_dir, progress=progress)

    def validation_ndcg(weight: float, aggregation: str, history: int) -> float:
        return genrec_ndcg(
            rec, valid, protocol=protocol, constrained=constrained, max_history=history, template=config.template,
            batch_size=config.batch_size, prior=prior, prior_weight=weight, prior_aggregation=aggregation,
            workers=workers, ray_address=ray_address, model=config.model, dtype=config.dtype,
            progress=progress, name=f"{name} validation (w={weight}, {aggregation}, history {history})",
        )  # fmt: skip

    return tune_on_validation(
        validation_ndcg, out_dir / "tuning" / f"{name}.json", len(valid), histories=config.histories(),
        weights=config.prior_grid if prior is not None else (0.0,), aggregations=config.prior_aggregations,
        alone=alone if constrained else {},  # free generation is another decode than the beam's
    )  # fmt: skip


def _tune_rerank(
    name: str, rec: Any, valid: Sequence[tuple[int, Example]], prior: ScoredMethod, config: EvalConfig,
    protocol: Protocol, out_dir: Path, *, progress: bool,
) -> dict[str, Any]:
    """A reranking method's weight and mixture (and history length) on the validation rows: each
    row is scored (and, for a union, decoded) once per history length, and every setting is read
    off those scores. The scores are kept (``tuning/<name>.rows-<history>.npz``): copied into a new
    output folder that tries another grid or mixture, they are read, not scored again. Its weight 0
    is the model ordering the candidates, not the model alone, so nothing is shared with ``genrec``."""
    scored: dict[int, list[RerankRow]] = {}

    def validation_ndcg(weight: float, mixture: str, history: int) -> float:
        if history not in scored:
            kept = out_dir / "tuning" / f"{name}.rows-{history}.npz"
            if kept.exists():
                scored[history] = with_lengths(
                    load_rows(kept), rec, valid, protocol=protocol, max_history=history, template=config.template
                )  # fmt: skip
            else:
                scored[history] = score_rows(
                    rec, valid, prior, protocol=protocol, candidates=config.rerank_candidates, max_history=history,
                    template=config.template, beam=is_union(name), decode_batch_size=config.batch_size,
                    progress=progress, name=f"{name} validation (history {history})",
                )  # fmt: skip
                save_rows(kept, scored[history])
        credits = [
            protocol.credit(e.target, mixed_list(r, weight, protocol, mixture)) for (_, e), r in zip(valid, scored[history])
        ]
        return float(np.mean([ndcg(c, 10) for c in credits])) if credits else 0.0

    # the beam's aggregation shapes its per-step prior only; a reranked list depends on the mixture instead
    return tune_on_validation(
        validation_ndcg, out_dir / "tuning" / f"{name}.json", len(valid), histories=config.histories(),
        weights=config.rerank_grid, aggregations=config.rerank_mixtures, alone={}, weighted=True, setting="mixture",
    )  # fmt: skip


def evaluate_rerank(
    rec: Any,
    examples: Sequence[tuple[int, Example]],
    prior: ScoredMethod,
    *,
    weight: float,
    mixture: str = "product",
    protocol: Protocol,
    candidates: int,
    max_history: int,
    template: str,
    on_batch: Callable[[list[UserResult]], None],
    beam: bool = False,
    batch_size: int = 8,
    progress: bool = True,
    name: str = "genrec-rerank",
) -> None:
    """Each row's list: ``prior``'s top ``candidates`` (with ``beam``, and the model's own top k)
    reordered by the ``mixture`` at ``weight`` (see ``rerank.py``); results are handed over
    ``batch_size`` rows at a time."""
    from tqdm.auto import tqdm

    bar = tqdm(total=len(examples), desc=name, unit="user", disable=not progress)
    for start in range(0, len(examples), batch_size):
        batch = list(examples[start : start + batch_size])
        rows = score_rows(
            rec, batch, prior, protocol=protocol, candidates=candidates, max_history=max_history, template=template,
            beam=beam, decode_batch_size=batch_size, progress=False,
        )  # fmt: skip
        results = []
        for (row, example), scored in zip(batch, rows):
            items = mixed_list(scored, weight, protocol, mixture)
            result = _result(row, example, items, protocol.credit(example.target, items), n_outputs=len(items))
            result.latency_s = scored.seconds
            results.append(result)
        on_batch(results)
        bar.update(len(batch))
    bar.close()


def run_evaluation(
    dataset: Dataset,
    config: EvalConfig,
    out_dir: str | Path,
    *,
    progress: bool = True,
    overwrite: bool = False,
    recommender_factory: Callable[[Catalog], Any] | None = None,
    workers: int = 1,
    ray_address: str | None = None,
) -> dict[str, Any]:
    """Evaluate ``config.methods`` on ``dataset``; write and return the results.

    ``recommender_factory(catalog)`` builds the Recommender for the genrec methods (default:
    ``Recommender(catalog, model=config.model, dtype=config.dtype)``). ``workers`` > 1 (or ``ray_address``) decodes
    the genrec methods on a pool of Ray actors that each load ``config.model`` (the factory, if
    any, serves this process only): the same batches, so the same metrics.
    """
    config.check()
    out_dir = Path(out_dir)
    _prepare_out_dir(out_dir, config, overwrite)
    split = split_dataset(dataset, tie_break=config.tie_break, seed=config.seed)
    examples = sample_examples(split.test, config.users, config.seed)
    catalog = dataset.catalog
    popularity = split.popularity()
    pop_pct = popularity_percentiles(popularity, catalog.ids)
    protocol = Protocol.for_run(catalog, config.k, config.seed)
    rows = list(enumerate(examples))
    summaries: dict[str, dict[str, Any]] = {}
    all_results: dict[str, list[UserResult]] = {}
    fitted: dict[str, ScoredMethod] = {}
    rec = None
    valid: list[tuple[int, Example]] = []  # the seeded validation rows every genrec method tunes on
    alone: dict[int, float] = {}  # the model alone's validation NDCG@10 by history length, shared
    for name in config.methods:
        canonical = ALIASES.get(name, name)
        base = ALIASES.get(prior_of(name), prior_of(name)) if is_fused(name) else None
        path = out_dir / "users" / f"{name}.jsonl"
        done = {r.row: r for r in _read_done(path)}
        pending = [(row, e) for row, e in rows if row not in done]
        new: list[UserResult] = []

        def store(results: list[UserResult], path: Path = path, new: list[UserResult] = new) -> None:
            _append(path, results)
            new.extend(results)

        for scored in (canonical, base):
            if scored in SCORED and scored not in fitted:
                fitted[scored] = fit_scored(scored, catalog, split, config, out_dir, progress)
        tuned = None
        if base is not None or (name.startswith("genrec") and len(config.histories()) > 1):
            rec = rec or _recommender(catalog, config, recommender_factory)
            valid = valid or list(enumerate(sample_examples(split.valid, config.tune_users, config.seed)))
            tuned = _tune(
                name, rec, valid, fitted.get(base), config, protocol, out_dir, alone, workers=workers, ray_address=ray_address,
                progress=progress,
            )
        if pending:
            if canonical in SCORED:
                evaluate_scored(fitted[canonical], pending, protocol=protocol, on_batch=store, progress=progress, name=name)
            elif is_rerank(name):
                evaluate_rerank(
                    rec, pending, fitted[base], weight=tuned["prior_weight"], mixture=tuned["mixture"], protocol=protocol,
                    candidates=config.rerank_candidates, max_history=tuned["max_history"], template=config.template,
                    on_batch=store, beam=is_union(name), batch_size=config.batch_size, progress=progress, name=name,
                )  # fmt: skip
            else:
                rec = rec or _recommender(catalog, config, recommender_factory)
                evaluate_genrec(
                    rec, pending, protocol=protocol, constrained=name != "genrec-free",
                    max_history=tuned["max_history"] if tuned else config.max_history,
                    template=config.template, batch_size=config.batch_size, on_batch=store, progress=progress, name=name,
                    prior=fitted.get(base), prior_weight=tuned.get("prior_weight", 0.0) if tuned else 0.0,
                    prior_aggregation=tuned.get("prior_aggregation") if tuned else None,
                    workers=workers, ray_address=ray_address, model=config.model, dtype=config.dtype,
                )  # fmt: skip
        by_row = {**done, **{r.row: r for r in new}}
        results = [by_row[row] for row, _ in rows if row in by_row]
        check_credit(name, results, config.k)
        all_results[name] = results
        # each user's latency is its share of its batch's wall time: their sum is the run's
        # decoding time, resumed runs included (fitting a baseline is reported apart)
        summary = summarize(results, catalog_size=len(catalog), popularity_pct=pop_pct, ks=cutoffs(config.k))
        if canonical != name:
            summary["alias_of"] = canonical
        if name.startswith("genrec"):
            summary["model"] = config.model or "SmolLM2-135M-Instruct (default, zero-shot)"
            summary["mode"] = (
                "free generation + grounding" if name == "genrec-free"
                else f"the model reranks {base}'s top {config.rerank_candidates} and its own top {config.k}" if is_union(name)
                else f"the model reranks {base}'s top {config.rerank_candidates}" if is_rerank(name)
                else "constrained beam search"
            )  # fmt: skip
            summary["template"] = config.template
            from ..recommender import trained_vocabulary  # lazily, as _recommender imports the facade

            summary["output_vocabulary"] = trained_vocabulary(config.model)  # what Recommender(model=...) decodes with
        if tuned is not None:
            if is_rerank(name):
                summary["mode"] += f", {tuned['mixture']} of the two scores (weight tuned on validation)"
            elif base is not None:
                summary["mode"] += f", prior {base} (weight tuned on validation)"
            if len(config.histories()) > 1:
                summary["mode"] += f", last {tuned['max_history']} history items (tuned on validation)"
            summary["tuned"] = tuned
        method = fitted.get(canonical)
        if method is not None:
            summary["fit_s"] = round(method.fit_s, 2)
            if method.tuned:
                summary["tuned"] = method.tuned
        summaries[name] = summary
    _compare_with_best_baseline(summaries, all_results)
    results_doc = {
        "dataset": config.dataset,
        "n_users": len(examples),
        "n_users_available": len(split.test),
        "n_items": len(catalog),
        "k": config.k,
        "split": {**split.info, "users_sampled": config.users, "sample_seed": config.seed,
                  "max_history_in_prompt": config.max_history, "history_grid": list(config.histories()),
                  "beams": max(config.num_beams, config.k), "ranking": PROTOCOL_TEXT,
                  "targets_in_history": sum(protocol.target_excluded(e.history, e.target) for e in examples),
                  "cutoffs": cutoffs(config.k)},
        "methods": summaries,
    }  # fmt: skip
    atomic_write_text(out_dir / "results.json", json.dumps(results_doc, indent=2))
    write_report(results_doc, all_results, pop_pct, [e.target for e in examples], out_dir)
    return results_doc

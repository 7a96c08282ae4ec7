"""Decoding one part of a batch job: the per-batch function every worker runs, in-process or as a
Ray actor. A part is a fixed slice of the users, decoded by one ``recommend_batch`` call, so a
user's result depends on the part it is in and never on how many workers ran."""

from __future__ import annotations

import logging
import os
import pickle
import resource
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..catalog import Catalog
from ..decoding import DEFAULT_FAMILY_SHARE
from ..errors import GenrecError, UnknownItemError
from .inputs import UserJob

__all__ = ["RecommenderSpec", "DecodeSettings", "PartOutcome", "decode_part", "PartRunner"]


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecommenderSpec:
    """How a worker builds its Recommender: everything is picklable, the model is loaded by the
    worker itself. ``prior`` (per-item log-scores, catalog order) is mixed in with ``prior_weight``
    for every user that brings no prior row of its own."""

    catalog: Catalog
    model: str | None = None
    prompts_dir: str | None = None
    device: str | None = None
    dtype: str | None = None
    runtime: str = "torch"  # "onnxruntime": each worker exports (once, into the cache) and decodes in ONNX Runtime
    num_beams: int = 10
    cache_dir: str | None = None
    prior: np.ndarray | None = field(default=None, repr=False)
    prior_weight: float = 0.0
    max_per_family: int | None = None  # variants of one product per list (None: no cap)
    family_share: float = DEFAULT_FAMILY_SHARE
    log_fit: str | None = None  # a folder a fitted log was saved to (Recommender.save_fit), loaded by each worker

    def build(self) -> Any:
        from ..recommender import Recommender

        rec = Recommender(
            self.catalog, model=self.model, prompts_dir=self.prompts_dir, device=self.device, dtype=self.dtype,
            runtime=self.runtime, num_beams=self.num_beams, cache_dir=self.cache_dir, prior=self.prior, prior_weight=self.prior_weight,
            max_per_family=self.max_per_family, family_share=self.family_share,
        )  # fmt: skip
        return rec if self.log_fit is None else rec.load_fit(self.log_fit)


@dataclass(frozen=True)
class DecodeSettings:
    """What decides each user's list (recorded in the job's manifest)."""

    k: int = 10
    batch_size: int = 8  # users decoded together
    max_history: int = 50  # most recent history items shown in the prompt (all of them are excluded)
    template: str = "next_item"
    constrained: bool = True
    prior_weight: float | None = None  # for users with their own prior row; None: the spec's
    prior_aggregation: str | None = None  # None: the spec's Recommender's
    search: str | None = None  # "beam", "content" or "auto" (tasks/content_search.py); None: the spec's Recommender's


@dataclass
class PartOutcome:
    """What decoding one part gave: per user, its recommendations or the error that stopped it,
    and the history entries that are not catalog items (left out, reported)."""

    part: int
    user_ids: list[str]
    recommendations: dict[str, Any]  # user_id -> Recommendations
    failures: dict[str, str]  # user_id -> message
    unknown: dict[str, list[str]]  # user_id -> entries not in the catalog
    seconds: float
    worker: str
    peak_rss_mb: float

    def rows(self) -> list[dict[str, Any]]:
        """One row per user and rank (users in part order, best item first)."""
        out = []
        for user_id in self.user_ids:
            for rank, r in enumerate(self.recommendations.get(user_id, ()), start=1):
                out.append({"user_id": user_id, "rank": rank, "item_id": r.item_id, "title": r.title, "score": r.score})
        return out


def decode_part(rec: Any, part: int, users: list[UserJob], settings: DecodeSettings) -> PartOutcome:
    """Recommendations for ``users``: one ``recommend_batch`` call over those that can be served.
    A user whose history holds no catalog item (and who brings no request), or whose prompt the
    library refuses, fails alone with the message; unknown history entries are left out and
    reported, the user served from the rest."""
    started = time.perf_counter()
    failures: dict[str, str] = {}
    unknown: dict[str, list[str]] = {}
    jobs: list[tuple[UserJob, list[str], list[str]]] = []
    for user in users:
        history, missing = _known(rec, user.history)
        exclude, missing_ex = _known(rec, user.exclude) if user.exclude is not None else (history, [])
        if missing or missing_ex:
            unknown[user.user_id] = missing + missing_ex
        if user.history and not history and not user.request:
            failures[user.user_id] = f"none of its {len(user.history)} history item(s) is in the catalog (first: {user.history[0]!r})"
            continue
        jobs.append((user, history, exclude))
    recs: dict[str, Any] = {}
    while jobs:
        try:
            out = _decode(rec, jobs, settings)
        except GenrecError:
            bad = _first_refused(rec, jobs, settings)
            if bad is None:
                raise
            failures[jobs[bad][0].user_id] = _refusal(rec, jobs[bad], settings)
            del jobs[bad]
            continue
        recs = {user.user_id: r for (user, _, _), r in zip(jobs, out)}
        break
    return PartOutcome(
        part=part, user_ids=[u.user_id for u in users], recommendations=recs, failures=failures, unknown=unknown,
        seconds=time.perf_counter() - started, worker=_worker(), peak_rss_mb=_peak_rss_mb(),
    )  # fmt: skip


def _known(rec: Any, refs: list[str]) -> tuple[list[str], list[str]]:
    """(item IDs of the entries the catalog knows, entries it does not); IDs first, then titles."""
    known, missing = [], []
    for ref in refs:
        if ref in rec.catalog:
            known.append(ref)
            continue
        try:
            known.extend(rec.resolve([ref]))
        except UnknownItemError:
            missing.append(ref)
    return known, missing


def _decode(rec: Any, jobs: list[tuple[UserJob, list[str], list[str]]], settings: DecodeSettings) -> list[Any]:
    n = settings.max_history
    rows = [user.prior for user, _, _ in jobs]
    prior = None
    if any(r is not None for r in rows):
        if any(r is None for r in rows):
            raise GenrecError("a part mixes users with and without their own prior rows")
        prior = np.stack(rows)
    return rec.recommend_batch(
        [history[-n:] if n else [] for _, history, _ in jobs],
        settings.k,
        requests=[user.request for user, _, _ in jobs],
        excludes=[exclude for _, _, exclude in jobs],
        constrained=settings.constrained,
        template=settings.template,
        batch_size=settings.batch_size,
        prior=prior,
        prior_weight=settings.prior_weight if prior is not None else None,
        prior_aggregation=settings.prior_aggregation,
        search=settings.search,
    )


def _first_refused(rec: Any, jobs: list[tuple[UserJob, list[str], list[str]]], settings: DecodeSettings) -> int | None:
    for i, job in enumerate(jobs):
        if _refusal(rec, job, settings):
            return i
    return None


def _refusal(rec: Any, job: tuple[UserJob, list[str], list[str]], settings: DecodeSettings) -> str:
    """Why the library refuses this one user's prompt ('' when it does not)."""
    user, history, exclude = job
    n = settings.max_history
    try:
        rec.limits.check_k(settings.k)
        rec.pipeline.prepare(history[-n:] if n else [], settings.template, request=user.request, exclude=exclude, k=settings.k)
    except GenrecError as exc:
        return str(exc)
    return ""


class PartRunner:
    """The per-batch function: holds one Recommender (model, title index and prompt cache loaded
    once) and decodes the parts it is given. Ray Data runs it as an actor class through
    ``map_batches``; without Ray it is called in-process on the same payloads."""

    def __init__(self, spec: RecommenderSpec, settings: DecodeSettings, threads: int | None = None, rec: Any = None) -> None:
        if threads:
            import torch

            torch.set_num_threads(threads)  # N actors on one machine must not oversubscribe its cores
        self.rec = rec if rec is not None else spec.build()
        self.settings = settings
        if settings.constrained:
            self.rec.warm(settings.template)  # the same prompt-prefix cache in every worker

    def run(self, part: int, users: list[UserJob]) -> PartOutcome:
        """The part's outcome; an error no single user explains fails the part's users, never the job."""
        started = time.perf_counter()
        try:
            return decode_part(self.rec, part, users, self.settings)
        except Exception as exc:  # noqa: BLE001 - reported per user, in the failures file
            message = str(exc) if isinstance(exc, GenrecError) else f"{type(exc).__name__}: {exc} ({_where(exc)})"
            if not isinstance(exc, GenrecError):
                log.warning("part %d failed:\n%s", part, "".join(traceback.format_exception(exc)))
            return PartOutcome(
                part=part, user_ids=[u.user_id for u in users], recommendations={},
                failures={u.user_id: message for u in users}, unknown={}, seconds=time.perf_counter() - started,
                worker=_worker(), peak_rss_mb=_peak_rss_mb(),
            )  # fmt: skip

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Ray Data batch in, batch out: ``part`` numbers and pickled user lists -> pickled outcomes."""
        outcomes = [self.run(int(p), pickle.loads(payload)) for p, payload in zip(batch["part"], batch["payload"])]
        return {"part": np.array([o.part for o in outcomes]), "outcome": np.array([pickle.dumps(o) for o in outcomes], dtype=object)}


def _where(exc: BaseException) -> str:
    """Where an unexpected error was raised (its innermost frame), so a failures file names the
    line: a part's users share one message, and the traceback stays in the worker's log."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "no traceback"
    last = frames[-1]
    return f"at {Path(last.filename).name}:{last.lineno} in {last.name}"


def _worker() -> str:
    """``host:pid``, led by the Ray node's ID inside a Ray worker (two nodes may share a host)."""
    name = f"{os.uname().nodename}:{os.getpid()}"
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        return f"{ray.get_runtime_context().get_node_id()[:8]}/{name}"
    return name


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux

"""The batch job: users in, one part file per slice of users out, on a pool of workers.

With ``workers > 1`` (or a Ray address) Ray Data streams the parts through ``map_batches`` on a
pool of actors, each holding one Recommender; with ``workers == 1`` the same per-part function runs
in this process. Parts are fixed slices of the input decoded by one ``recommend_batch`` call each,
so the results are the same whatever the number of workers and whether Ray is installed.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DataError, GenrecError, require
from .inputs import UserJob
from .parts import FORMATS, LAYOUT, MANIFEST, PartPlan, completed_parts, plan_parts, prepare_out_dir, users_sha, write_json, write_jsonl, write_part
from .runner import DecodeSettings, PartOutcome, PartRunner, RecommenderSpec
from .stream import StreamInput, stream_parts

__all__ = ["BatchSummary", "run_batch", "run_batch_stream", "decode_parts", "fingerprint"]


@dataclass
class BatchSummary:
    """What a run did: users served, failed and skipped (done by an earlier run), time, rates."""

    out_dir: str
    users: int
    served: int
    failed: int
    with_unknown_items: int
    skipped: int
    parts: int
    wall_s: float
    workers: dict[str, dict[str, float]] = field(default_factory=dict)  # per worker: users, seconds, users_per_s, peak_rss_mb

    @property
    def users_per_s(self) -> float:
        decoded = self.users - self.skipped
        return decoded / self.wall_s if self.wall_s > 0 else 0.0

    def __str__(self) -> str:
        lines = [
            f"{self.users} users in {self.parts} parts -> {self.out_dir}",
            f"  served {self.served}, failed {self.failed} (failures.jsonl), served without some history items "
            f"{self.with_unknown_items} (unknown_items.jsonl), done by an earlier run {self.skipped}",
            f"  {self.users - self.skipped} users decoded in {self.wall_s:.1f} s: {self.users_per_s:.2f} users/s overall",
        ]
        for name, w in sorted(self.workers.items()):
            lines.append(f"  worker {name}: {w['users']:.0f} users, {w['users_per_s']:.2f} users/s, peak RSS {w['peak_rss_mb']:.0f} MB")
        return "\n".join(lines)


def fingerprint(
    spec: RecommenderSpec, settings: DecodeSettings, *, part_size: int | None, fmt: str, inputs: dict[str, Any], user_buckets: int | None = None
) -> dict[str, Any]:
    """Everything that decides the output files; a rerun into the same folder must match it."""
    prior = None
    if spec.prior is not None:
        prior = hashlib.sha256(spec.prior.astype("float64").tobytes()).hexdigest()[:16]
    return {
        **inputs,
        "catalog": spec.catalog.content_hash,
        "model": spec.model or "default",
        "prompts": _folder_hash(spec.prompts_dir),
        "num_beams": spec.num_beams,
        "dtype": spec.dtype,
        "prior": prior,
        "prior_weight": spec.prior_weight,
        # (absent without a cap or a fitted log, so folders written before either existed still match)
        **({"max_per_family": spec.max_per_family, "family_share": spec.family_share} if spec.max_per_family is not None else {}),
        **({"log_fit": _folder_hash(spec.log_fit, "*")} if spec.log_fit is not None else {}),
        **({"runtime": spec.runtime} if spec.runtime != "torch" else {}),
        **{f"settings.{k}": v for k, v in asdict(settings).items()},
        "part_size": part_size,
        "format": fmt,
        "layout": LAYOUT,
        "user_buckets": user_buckets,
    }


def _folder_hash(folder: str | None, pattern: str = "*.jinja") -> str | None:
    if folder is None:
        return None
    digest = hashlib.sha256()
    for path in sorted(Path(folder).glob(pattern)):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def decode_parts(
    spec: RecommenderSpec,
    settings: DecodeSettings,
    parts: Iterable[tuple[int, list[UserJob]]],
    *,
    workers: int = 1,
    ray_address: str | None = None,
    threads_per_worker: int | None = None,
    rec: Any = None,
) -> Iterator[PartOutcome]:
    """Each part's outcome as it completes (in any order with several workers). ``rec``: an
    already built Recommender for the in-process path (one worker, no Ray address). In-process,
    ``parts`` is consumed lazily; Ray is handed all of them at once."""
    if workers < 1:
        raise DataError(f"--workers must be at least 1, got {workers}")
    if workers == 1 and ray_address is None:
        runner = PartRunner(spec, settings, rec=rec)
        for number, users in parts:
            yield runner.run(number, users)
        return
    parts = list(parts)
    if parts:

        def dataset() -> Any:
            import ray.data

            items = [{"part": number, "payload": pickle.dumps(users)} for number, users in parts]
            return ray.data.from_items(items, override_num_blocks=len(items))

        yield from _ray_outcomes(spec, settings, dataset, workers, ray_address, threads_per_worker)


def _ray_outcomes(
    spec: RecommenderSpec,
    settings: DecodeSettings,
    parts: Callable[[], Any],
    workers: int,
    address: str | None,
    threads: int | None,
) -> Iterator[PartOutcome]:
    """Each part's outcome from a pool of ``workers`` actors; ``parts()`` makes the Ray Dataset of
    ``{part, payload}`` rows once Ray is up (a list's parts, or a streamed input's)."""
    ray = require("ray", "ray", "running on several workers (--workers N or --ray-address)")
    import ray.data

    threads = threads or (max(1, (os.cpu_count() or 1) // workers) if address is None else 2)
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(
            address=address,
            # a local instance big enough for the pool asked for, even past the core count
            num_cpus=None if address else max(os.cpu_count() or 1, workers * threads),
            include_dashboard=False,
            log_to_driver=False,
            logging_level="ERROR",
        )
    try:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the job shows its own, in users
        outcomes = parts().map_batches(
            PartRunner,
            fn_constructor_kwargs={"spec": spec, "settings": settings, "threads": threads},
            batch_size=1,
            concurrency=workers,
            num_cpus=threads,
        )
        try:
            for row in outcomes.iter_rows():
                yield pickle.loads(row["outcome"])
        except Exception as exc:
            bad_input = _genrec_cause(exc)
            if bad_input is not None:  # a bad row of a streamed input: its own message, as in one process
                raise type(bad_input)(str(bad_input)) from None
            # a worker that cannot start (model not found ...): one clear line
            first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
            raise GenrecError(f"the Ray workers failed: {first} (parts already written are kept; rerun to resume)") from exc
    finally:
        if started_here:
            ray.shutdown()


def _genrec_cause(exc: BaseException) -> GenrecError | None:
    """The GenrecError a Ray task raised, through Ray's wrappers (``cause``, ``__cause__``)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, GenrecError):
            return exc
        seen.add(id(exc))
        exc = getattr(exc, "cause", None) or exc.__cause__
    return None


def run_batch(
    spec: RecommenderSpec,
    users: list[UserJob],
    out_dir: str | Path,
    settings: DecodeSettings = DecodeSettings(),
    *,
    part_size: int = 256,
    fmt: str = "parquet",
    workers: int = 1,
    ray_address: str | None = None,
    threads_per_worker: int | None = None,
    inputs: dict[str, Any] | None = None,
    user_buckets: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    rec: Any = None,
) -> BatchSummary:
    """Recommendations for every user, written to ``out_dir`` as part files plus a manifest; parts
    an earlier run of the same settings completed are kept, not redone. ``inputs`` describes the
    input (file and its hash), for the fingerprint. ``user_buckets`` N: the data files partitioned
    by a hash of the user ID into N folders (``data/user_bucket=B/``)."""
    if not users:
        raise DataError("no users to recommend for")
    job = _Job.start(out_dir, fingerprint(spec, settings, part_size=part_size, fmt=fmt, inputs=inputs or {}, user_buckets=user_buckets),
                     fmt, user_buckets, overwrite)  # fmt: skip
    plans = plan_parts([u.user_id for u in users], part_size)
    job.records = completed_parts(job.out, plans, job.run_id)
    job.manifest(plans)
    todo = [p for p in plans if p.number not in job.records]
    outcomes = decode_parts(
        spec, settings, [(p.number, users[p.start : p.end]) for p in todo], workers=workers, ray_address=ray_address,
        threads_per_worker=threads_per_worker, rec=rec,
    )  # fmt: skip
    skipped = sum(p.users for p in plans if p.number in job.records)
    by_number = {p.number: p for p in plans}
    job.write(outcomes, lambda outcome: by_number[outcome.part], total=sum(p.users for p in todo), progress=progress)
    return job.finish(plans, users=len(users), skipped=skipped)


def run_batch_stream(
    spec: RecommenderSpec,
    source: StreamInput,
    out_dir: str | Path,
    settings: DecodeSettings = DecodeSettings(),
    *,
    parts: int | None = None,
    fmt: str = "parquet",
    workers: int = 1,
    ray_address: str | None = None,
    threads_per_worker: int | None = None,
    user_buckets: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> BatchSummary:
    """``run_batch`` for an input read and grouped by user inside Ray Data (``stream``): part n
    holds the users whose ID hashes to n modulo ``parts`` (default: one per MiB of input), in ID
    order. The driver never holds the input; a rerun skips the parts already complete."""
    n_parts = parts or source.default_parts()
    if n_parts < 1:
        raise DataError(f"parts must be at least 1, got {n_parts}")
    prints = fingerprint(spec, settings, part_size=None, fmt=fmt, inputs={**source.identity(), "parts": n_parts}, user_buckets=user_buckets)
    job = _Job.start(out_dir, prints, fmt, user_buckets, overwrite)
    plans = [PartPlan(n, 0, 0, "", "", "") for n in range(n_parts)]  # users known once the part is read
    job.records = completed_parts(job.out, plans, job.run_id, same_users=False)
    job.manifest(plans)
    done = frozenset(job.records)
    skipped = sum(r["users"] for r in job.records.values())
    remaining = [n for n in range(n_parts) if n not in done]
    # a part only the streamed input can say is empty leaves no outcome: its record says so
    outcomes = _with_empty_parts(
        _ray_outcomes(spec, settings, lambda: stream_parts(source, n_parts, done), workers, ray_address, threads_per_worker)
        if remaining else iter(()),
        remaining,
    )  # fmt: skip
    job.write(outcomes, _plan_of_outcome, total=None, progress=progress)
    return job.finish(plans, users=sum(r["users"] for r in job.records.values()), skipped=skipped)


def _plan_of_outcome(outcome: PartOutcome) -> PartPlan:
    ids = outcome.user_ids
    return PartPlan(outcome.part, 0, len(ids), users_sha(ids), ids[0] if ids else "", ids[-1] if ids else "")


def _with_empty_parts(outcomes: Iterator[PartOutcome], expected: list[int]) -> Iterator[PartOutcome]:
    seen = set()
    for outcome in outcomes:
        seen.add(outcome.part)
        yield outcome
    for number in expected:
        if number not in seen:
            yield PartOutcome(part=number, user_ids=[], recommendations={}, failures={}, unknown={}, seconds=0.0, worker="", peak_rss_mb=0.0)


@dataclass
class _Job:
    """One run's output folder: its records so far, written part by part, then the summary."""

    out: Path
    prints: dict[str, Any]
    run_id: str
    fmt: str
    user_buckets: int | None
    started: float
    records: dict[int, dict[str, Any]] = field(default_factory=dict)
    workers: dict[str, dict[str, float]] = field(default_factory=dict)

    @classmethod
    def start(cls, out_dir: str | Path, prints: dict[str, Any], fmt: str, user_buckets: int | None, overwrite: bool) -> _Job:
        if fmt not in FORMATS:
            raise DataError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        if user_buckets is not None and user_buckets < 1:
            raise DataError(f"user buckets must be at least 1, got {user_buckets}")
        run_id = hashlib.sha256(repr(sorted(prints.items())).encode()).hexdigest()[:16]
        prepare_out_dir(Path(out_dir), prints, overwrite)
        return cls(Path(out_dir), prints, run_id, fmt, user_buckets, time.perf_counter())

    def write(self, outcomes: Iterable[PartOutcome], plan_of: Callable[[PartOutcome], PartPlan], total: int | None, progress: bool) -> None:
        from tqdm.auto import tqdm

        failed = sum(len(r["failures"]) for r in self.records.values())
        with tqdm(total=total, desc="batch", unit="user", disable=not progress) as bar:
            for outcome in outcomes:
                self.records[outcome.part] = write_part(self.out, plan_of(outcome), outcome, self.fmt, self.run_id, self.user_buckets)
                if outcome.worker:
                    w = self.workers.setdefault(outcome.worker, {"users": 0, "seconds": 0.0, "peak_rss_mb": 0.0})
                    w["users"] += len(outcome.user_ids)
                    w["seconds"] += outcome.seconds
                    w["peak_rss_mb"] = max(w["peak_rss_mb"], outcome.peak_rss_mb)
                failed += len(outcome.failures)
                bar.update(len(outcome.user_ids))
                bar.set_postfix(failed=failed)

    def finish(self, plans: list[PartPlan], users: int, skipped: int) -> BatchSummary:
        for w in self.workers.values():
            w["users_per_s"] = w["users"] / w["seconds"] if w["seconds"] else 0.0
        records = self.records
        summary = BatchSummary(
            out_dir=str(self.out), users=users, served=sum(r["served"] for r in records.values()),
            failed=sum(len(r["failures"]) for r in records.values()),
            with_unknown_items=sum(len(r["unknown"]) for r in records.values()), skipped=skipped, parts=len(plans),
            wall_s=time.perf_counter() - self.started, workers=self.workers,
        )  # fmt: skip
        ordered = [records[p.number] for p in plans if p.number in records]
        write_jsonl(self.out / "failures.jsonl", ({"user_id": u, "error": e} for r in ordered for u, e in r["failures"].items()))
        write_jsonl(self.out / "unknown_items.jsonl", ({"user_id": u, "unknown": x} for r in ordered for u, x in r["unknown"].items()))
        self.manifest(plans, summary)
        return summary

    def manifest(self, plans: list[PartPlan], summary: BatchSummary | None = None) -> None:
        """manifest.json: the settings and each part's state; a part's users are listed in its
        own record (parts/part-N.json), never here, whatever the job's size."""
        parts = []
        for p in plans:
            record = self.records.get(p.number)
            plan = {k: record[k] for k in ("start", "end", "users_sha", "first_user", "last_user")} if record else asdict(p)
            parts.append({"number": p.number, **{k: v for k, v in plan.items() if k != "number"},
                          "users": record["users"] if record else p.users, "files": record["files"] if record else [],
                          "complete": record is not None})  # fmt: skip
        data = {"run_id": self.run_id, "fingerprint": self.prints, "users": sum(p["users"] for p in parts), "parts": parts}
        if summary is not None:
            data["summary"] = {**asdict(summary), "users_per_s": summary.users_per_s}
        write_json(self.out / MANIFEST, data)

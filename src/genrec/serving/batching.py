"""Dynamic batching for ``genrec serve``: recommend requests that arrive close together are
decoded in one ``recommend_batch`` call, each still answered as it would be alone."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ..tasks.recommend import default_template
from .admission import Metrics, QueuedPastDeadline

__all__ = ["RecommendBatcher"]


@dataclass
class _Pending:
    args: dict[str, Any]
    future: asyncio.Future
    deadline: float  # time.monotonic() after which nobody waits for the answer


class RecommendBatcher:
    """Collects recommend requests for ``window_s`` (or until ``max_batch``) and decodes each
    group of compatible ones (same k and template) in one ``recommend_batch`` call. A request the
    library refuses fails alone; the others of its batch are still served."""

    def __init__(
        self, rec: Any, executor: ThreadPoolExecutor, window_s: float, max_batch: int, metrics: Metrics, max_batch_tokens: int | None = None
    ) -> None:
        self.rec, self.executor, self.window_s, self.max_batch, self.metrics = rec, executor, window_s, max_batch, metrics
        self.max_batch_tokens = max_batch_tokens
        self.queue: asyncio.Queue[_Pending | None] = asyncio.Queue()
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Finish everything queued, then stop."""
        await self.queue.put(None)
        if self.task is not None:
            await self.task

    async def submit(self, args: dict[str, Any], deadline: float) -> Any:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put(_Pending(args, future, deadline))
        return await future

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        stopping = False
        while not stopping:
            first = await self.queue.get()
            if first is None:
                break
            batch = [first]
            deadline = loop.time() + self.window_s
            while len(batch) < self.max_batch:
                try:  # requests that queued during the last decode are taken at once
                    item = self.queue.get_nowait() if not self.queue.empty() else await asyncio.wait_for(self.queue.get(), deadline - loop.time())
                except (asyncio.TimeoutError, ValueError):
                    break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            now = time.monotonic()
            for late in [p for p in batch if p.deadline <= now or p.future.done()]:
                if not late.future.done():
                    late.future.set_exception(QueuedPastDeadline("the request waited past its deadline before the model could take it"))
            batch = [p for p in batch if not p.future.done()]
            if not batch:
                continue
            self.metrics.batch_sizes[len(batch)] += 1
            # decoding goes on while anyone still waits for it
            deadline = max(p.deadline for p in batch)
            try:
                outcomes = await loop.run_in_executor(self.executor, self._decode, [p.args for p in batch], deadline)
            except Exception as exc:  # noqa: BLE001 - the loop must outlive any one batch
                outcomes = [exc] * len(batch)
            for pending, outcome in zip(batch, outcomes):
                if pending.future.done():  # the client went away
                    continue
                if isinstance(outcome, BaseException):
                    pending.future.set_exception(outcome)
                else:
                    pending.future.set_result(outcome)

    def _decode(self, requests: list[dict[str, Any]], deadline: float | None = None) -> list[Any]:
        """Each request's result (the tool's JSON) or the exception it raised. Requests are decoded
        together when they ask for the same k, template and history reading."""
        outcomes: list[Any] = [None] * len(requests)
        groups: dict[tuple[int, str, float | None, bool], list[int]] = {}
        for i, args in enumerate(requests):
            history, request = args.get("history") or [], args.get("request")
            template = default_template(history, request)
            strictness = {"min_match_score": args.get("min_match_score"), "strict_history": bool(args.get("strict_history"))}
            try:  # refuse a bad request alone, before it can fail its batch
                self.rec.pipeline.prepare(history, template, request=request, exclude=args.get("exclude") or [], k=args["k"], **strictness)
                self.rec.limits.check_k(args["k"])
            except Exception as exc:  # noqa: BLE001 - handed to that request's handler
                outcomes[i] = exc
                continue
            groups.setdefault((args["k"], template, strictness["min_match_score"], strictness["strict_history"]), []).append(i)
        for (k, template, min_score, strict), members in groups.items():
            try:
                results = self.rec.recommend_batch(
                    [requests[i].get("history") or [] for i in members], k,
                    requests=[requests[i].get("request") for i in members],
                    excludes=[requests[i].get("exclude") or [] for i in members],
                    template=template, batch_size=len(members), min_match_score=min_score, strict_history=strict,
                    deadline=deadline, max_batch_tokens=self.max_batch_tokens,
                )  # fmt: skip
            except Exception as exc:  # noqa: BLE001
                for i in members:
                    outcomes[i] = exc
                continue
            for i, recs in zip(members, results):
                outcomes[i] = recs.to_dict() if requests[i].get("with_history") else recs.to_dicts()
        return outcomes

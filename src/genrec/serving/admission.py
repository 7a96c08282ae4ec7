"""What the service measures (``Metrics``: requests, latencies, batches, rejections, timeouts, as
Prometheus text) and how it bounds the work it takes on (``Admission``: a queue bound and a
deadline per request)."""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any

from ..errors import DeadlineError, GenrecError

__all__ = ["Metrics", "Admission", "Overloaded", "QueuedPastDeadline"]


class Metrics:
    """Request counts, errors, latency percentiles and batch sizes, as Prometheus text."""

    def __init__(self, window: int) -> None:
        self.requests: collections.Counter[tuple[str, int]] = collections.Counter()
        self.latency: dict[str, collections.deque[float]] = collections.defaultdict(lambda: collections.deque(maxlen=window))
        self.batch_sizes: collections.Counter[int] = collections.Counter()
        self.rejected: collections.Counter[str] = collections.Counter()  # by reason
        self.timeouts: collections.Counter[str] = collections.Counter()  # by stage: queued, decoding

    def observe(self, path: str, status: int, seconds: float) -> None:
        self.requests[(path, status)] += 1
        self.latency[path].append(seconds)

    def render(self) -> str:
        import numpy as np

        lines = ["# HELP genrec_requests_total Requests answered, by endpoint and status.", "# TYPE genrec_requests_total counter"]
        lines += [f'genrec_requests_total{{endpoint="{p}",status="{s}"}} {n}' for (p, s), n in sorted(self.requests.items())]
        lines += ["# HELP genrec_errors_total Requests answered with a 4xx or 5xx status.", "# TYPE genrec_errors_total counter"]
        errors: collections.Counter[str] = collections.Counter()
        for (p, s), n in self.requests.items():
            if s >= 400:
                errors[p] += n
        lines += [f'genrec_errors_total{{endpoint="{p}"}} {n}' for p, n in sorted(errors.items())]
        lines += ["# HELP genrec_request_latency_seconds Latency over the most recent requests.", "# TYPE genrec_request_latency_seconds summary"]
        for path, values in sorted(self.latency.items()):
            data = np.asarray(values)
            for q in (0.5, 0.95, 0.99):
                lines.append(f'genrec_request_latency_seconds{{endpoint="{path}",quantile="{q}"}} {np.quantile(data, q):.6f}')
            lines.append(f'genrec_request_latency_seconds_sum{{endpoint="{path}"}} {data.sum():.6f}')
            lines.append(f'genrec_request_latency_seconds_count{{endpoint="{path}"}} {len(data)}')
        lines += ["# HELP genrec_rejected_total Requests refused at once because the queue was full.", "# TYPE genrec_rejected_total counter"]
        lines += [f'genrec_rejected_total{{reason="{r}"}} {n}' for r, n in sorted(self.rejected.items())]
        lines += ["# HELP genrec_timeouts_total Requests past their deadline, by where they were.", "# TYPE genrec_timeouts_total counter"]
        lines += [f'genrec_timeouts_total{{stage="{s}"}} {n}' for s, n in sorted(self.timeouts.items())]
        lines += ["# HELP genrec_batch_size Recommend requests decoded together.", "# TYPE genrec_batch_size counter"]
        lines += [f'genrec_batches_total{{size="{size}"}} {n}' for size, n in sorted(self.batch_sizes.items())]
        lines += ["# HELP genrec_resident_memory_bytes Resident memory of the server process.", "# TYPE genrec_resident_memory_bytes gauge"]
        lines.append(f"genrec_resident_memory_bytes {_rss_bytes()}")
        return "\n".join(lines) + "\n"


def _rss_bytes() -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class Overloaded(GenrecError):
    """The service holds as many requests as it queues (``ServeConfig.max_queue``)."""


class QueuedPastDeadline(DeadlineError):
    """A request's deadline passed before the model could take it."""


class Admission:
    """At most ``max_queue`` requests wait for or hold the model, each for ``timeout_s`` at most:
    one over the bound is refused at once (Overloaded: 503), one past its deadline answered
    DeadlineError (504) while its place goes to the next."""

    def __init__(self, max_queue: int, timeout_s: float, metrics: Metrics) -> None:
        self.max_queue, self.timeout_s, self.metrics, self.held = max_queue, timeout_s, metrics, 0

    async def run(self, work: Any) -> Any:
        """``await work(deadline)`` within the bounds (``deadline``: a ``time.monotonic()`` value)."""
        if self.held >= self.max_queue:
            self.metrics.rejected["queue_full"] += 1
            raise Overloaded(f"{self.held} requests are waiting for or holding the model (the limit is {self.max_queue}); retry shortly")
        self.held += 1
        deadline = time.monotonic() + self.timeout_s
        try:  # (a little grace: the batcher and beam search stop at the deadline themselves, naming where)
            return await asyncio.wait_for(work(deadline), self.timeout_s + 0.25)
        except asyncio.TimeoutError:
            self.metrics.timeouts["waiting"] += 1
            raise DeadlineError(f"no answer within the request's {self.timeout_s:g} s deadline") from None
        except DeadlineError as exc:
            self.metrics.timeouts["queued" if isinstance(exc, QueuedPastDeadline) else "decoding"] += 1
            raise
        finally:
            self.held -= 1

    def retry_after_s(self) -> int:
        """A client's wait before trying again: about what the recent recommend requests took."""
        import numpy as np

        recent = self.metrics.latency.get("/recommend")
        return max(1, int(np.ceil(np.median(recent)))) if recent else 1

"""The one ranking rule every method is measured by (``protocol.py``), the metrics
(``metrics.py``), and each row's ranked list as a result (``rows.py``: scored baselines and
genrec alike; the validation metric the harness tunes on and training keeps checkpoints by).

Only the protocol and metrics are imported here: ``rows`` sits above the baselines, which use
the metrics."""

from .metrics import KS, UserResult, hit_rate, mrr, ndcg, summarize, top_k
from .protocol import Protocol, check_credit, cutoffs

__all__ = ["KS", "UserResult", "hit_rate", "mrr", "ndcg", "summarize", "top_k", "Protocol", "check_credit", "cutoffs"]

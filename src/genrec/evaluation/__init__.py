"""The evaluation harness, as a package: datasets (loaders), splits (leave-one-out), metrics,
baselines (popularity, Markov) and SASRec, the harness that runs methods side by side
(``run_evaluation``), reports (tables and plots) and paired significance tests."""

from .harness import METHODS, EvalConfig, evaluate_genrec, evaluate_scored, load_results, run_evaluation
from .report import results_table, write_report
from .significance import PairedComparison, paired_comparison

__all__ = [
    "METHODS",
    "EvalConfig",
    "run_evaluation",
    "evaluate_scored",
    "evaluate_genrec",
    "load_results",
    "results_table",
    "write_report",
    "PairedComparison",
    "paired_comparison",
]

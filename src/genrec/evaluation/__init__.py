"""The evaluation harness, as a package: datasets (loaders), splits (leave-one-out), metrics,
baselines (popularity, Markov) and SASRec, the harness that runs methods side by side
(``run_evaluation``), and reports (tables and plots)."""

from .harness import METHODS, EvalConfig, evaluate_genrec, evaluate_scored, run_evaluation
from .report import results_table, write_report

__all__ = ["METHODS", "EvalConfig", "run_evaluation", "evaluate_scored", "evaluate_genrec", "results_table", "write_report"]

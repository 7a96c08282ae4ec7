"""The baselines every genrec method is measured against, and the priors it can be fused with:
popularity, first-order Markov, item-KNN (``scored.py``), SASRec with BCE or CE (``sasrec.py``),
and, for items nobody has interacted with, content (TF-IDF over titles and attributes) and a
hybrid of ItemKNN and content (``content.py``); fitted by name (``fit.py``)."""

from .fit import SCORED, fit_scored, log_scores
from .scored import ItemKNN, Markov, Popularity, ScoredMethod

__all__ = ["SCORED", "fit_scored", "log_scores", "ScoredMethod", "Popularity", "Markov", "ItemKNN"]

"""What the methods of one run share (``RunContext``), and the base every kind of method
answers ``run_evaluation``'s four questions through (``Method``)."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..baselines.fit import fit_scored
from ..baselines.scored import ScoredMethod
from ..catalog import Catalog
from ..data.cold import tuning_split
from ..data.datasets import Example
from ..data.splits import Split, sample_examples
from ..ranking.metrics import UserResult
from ..ranking.protocol import Protocol
from .config import ALIASES, EvalConfig

__all__ = ["Rows", "Store", "RunContext", "build_recommender", "Method"]

Rows = list[tuple[int, Example]]
Store = Callable[[list[UserResult]], None]


@dataclass
class RunContext:
    """What the methods of one run share: the split, the protocol, the fitted baselines, one
    Recommender, the seeded validation rows, and the model alone's validation score per history
    length (decoded once for every genrec method)."""

    catalog: Catalog
    split: Split
    config: EvalConfig
    protocol: Protocol
    out_dir: Path
    progress: bool
    workers: int = 1
    ray_address: str | None = None
    recommender_factory: Callable[[Catalog], Any] | None = None
    fitted: dict[str, ScoredMethod] = field(default_factory=dict)
    shared: dict[str, Any] = field(default_factory=dict)  # what several methods fit once (genrec-embed's encoder)
    alone: dict[int, float] = field(default_factory=dict)
    _rec: Any = None
    _valid: Rows | None = None

    def tuning_split(self) -> Split:
        """The split methods choose their settings on (``data.cold.tuning_split``): the validation
        rows of ``config.tune_on``'s group, and with ``config.tune_cold`` more items made new."""
        if "tuning_split" not in self.shared:
            config = self.config
            self.shared["tuning_split"] = tuning_split(self.split, config.tune_on, config.tune_cold, config.seed)
        return self.shared["tuning_split"]

    def baseline(self, name: str, *, choosing: bool = False) -> ScoredMethod:
        """Baseline ``name`` (an alias resolved), fitted once per run; SASRec's weights kept in the
        folder. Every baseline but SASRec tunes on ``tuning_split``'s rows: SASRec stops its
        training on all of them (an ID model scores a new item at its floor after any epoch).
        With ``tune_cold``, what it chose is fitted again on the run's training part; ``choosing``:
        the one fitted on the tuning split's (what a mixture chooses its own share against)."""
        name = ALIASES.get(name, name)
        if name not in self.fitted:
            split = self.split if name.startswith("sasrec") else self.tuning_split()
            method = fit_scored(
                name, self.catalog, split, seed=self.config.seed, sasrec_epochs=self.config.sasrec_epochs,
                saved_dir=self.out_dir, progress=self.progress,
            )  # fmt: skip
            self.fitted[name] = self.fitted[f"choosing {name}"] = method
            if split.train is not self.split.train:
                self.fitted[name] = refitted = copy.deepcopy(method)
                started = time.perf_counter()
                refitted.fit(replace(self.split, valid=[]))  # (no validation rows: its choice stays)
                refitted.fit_s = method.fit_s + time.perf_counter() - started
        return self.fitted[f"choosing {name}" if choosing else name]

    def recommender(self) -> Any:
        if self._rec is None:
            self._rec = build_recommender(self.catalog, self.config, self.recommender_factory)
        return self._rec

    def valid(self) -> Rows:
        """The seeded validation rows every genrec method tunes on."""
        if self._valid is None:
            valid = self.tuning_split().valid
            self._valid = list(enumerate(sample_examples(valid, self.config.tune_users, self.config.seed)))
        return self._valid

    def decoding(self) -> dict[str, Any]:
        """What every genrec decode of this run takes besides its rows, history and prior."""
        config = self.config
        return dict(
            protocol=self.protocol, template=config.template, batch_size=config.batch_size, workers=self.workers,
            ray_address=self.ray_address, model=config.model, dtype=config.dtype, runtime=config.runtime,
        )  # fmt: skip


def build_recommender(catalog: Catalog, config: EvalConfig, factory: Callable[[Catalog], Any] | None = None) -> Any:
    """The Recommender a run's genrec methods decode with, set as the run's settings say."""
    if factory is not None:
        rec = factory(catalog)
        rec.max_per_family = config.max_per_family  # the run's settings decide its numbers
        rec.num_beams = config.num_beams
        return rec
    from ..recommender import Recommender  # lazily: the facade loads models

    return Recommender(
        catalog, model=config.model, dtype=config.dtype, runtime=config.runtime, num_beams=config.num_beams,
        max_per_family=config.max_per_family,
    )  # fmt: skip


class Method:
    """One method of a run, named as the user named it."""

    def __init__(self, name: str):
        self.name = name

    @classmethod
    def accepts(cls, name: str) -> bool:
        """Whether ``name`` is a method of this kind."""
        return False

    def fit(self, ctx: RunContext) -> None:
        """Fit what the method needs from the training part (nothing by default)."""

    def tune(self, ctx: RunContext) -> dict[str, Any] | None:
        """Settings chosen on validation rows (None: nothing to choose)."""
        return None

    def evaluate(self, ctx: RunContext, rows: Rows, tuned: dict[str, Any] | None, store: Store) -> None:
        raise NotImplementedError

    def describe(self, ctx: RunContext, tuned: dict[str, Any] | None) -> dict[str, Any]:
        """What the report says about the method besides its metrics."""
        return {}

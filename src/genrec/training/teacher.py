"""Distillation from a collaborative teacher: soft targets on the branching tokens of each title.

A hard target teaches one item per next-item prediction. With a teacher (any harness baseline:
Markov, SASRec, item-KNN, popularity), every title token written at a trie node with several
children is also trained towards the teacher's distribution over those children: the teacher
scores every catalog item for the target's history, a child's mass is the log-sum-exp of its
titles' scores (the reduction the prior uses inside beam search, ``decoding.prior``), normalised
over the node's children and kept to the ``top`` heaviest (renormalised). The first token of a
title then learns the teacher's whole ranking, not one item. Per labelled token the loss is

    (1 - a) * CE(true token) + a * CE(teacher's distribution)

and a token with a single allowed continuation has the true token alone (both terms agree).

The teacher sees the history the model sees (the window's items before the target); titles of
that history other than the target's get no mass, as they are excluded when recommending. The
teacher is fitted on the training part of the split (tuned on its validation part, as the
harness fits it), so no test item reaches the model through it either.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..decoding.index import TitleIndex
from ..decoding.prior import TitlePrior
from ..baselines.fit import SCORED, fit_scored, log_scores
from ..baselines.scored import ScoredMethod
from ..data.datasets import Dataset
from ..data.splits import Split
from ..errors import DataError
from ..tasks import PromptPipeline
from .data import IGNORE, Encoded, Soft, Window

__all__ = ["TEACHERS", "check_teacher", "fit_teacher", "title_runs", "soft_targets"]

TEACHERS = SCORED  # every baseline the harness fits


def check_teacher(name: str | None, weight: float, top: int) -> None:
    if name is not None and name not in TEACHERS:
        raise DataError(f"unknown teacher {name!r} (have: {', '.join(TEACHERS)})")
    if not 0.0 <= weight <= 1.0:  # also refuses NaN
        raise DataError(f"teacher_weight must be from 0 to 1, got {weight}")
    if top < 2:
        raise DataError(f"teacher_top must be at least 2 (one token is the hard target alone), got {top}")


def fit_teacher(name: str, dataset: Dataset, split: Split, *, seed: int, work: Path, progress: bool) -> ScoredMethod:
    """The baseline ``name`` fitted as the harness fits it; a SASRec's weights are kept in
    ``work``, so a resumed run distils from the same teacher."""
    return fit_scored(name, dataset.catalog, split, seed=seed, saved_dir=work, progress=progress)


@dataclass(frozen=True)
class _Run:
    """One labelled title: the positions of its tokens in the sequence and the trie node each is written at."""

    positions: list[int]
    nodes: list[int]


def title_runs(labels: Sequence[int], index: TitleIndex) -> list[_Run] | None:
    """The labelled titles of a sequence in order, found by walking ``index`` along the labels
    (a title ends at a leaf); None when the labels leave the trie or stop inside a title."""
    runs: list[_Run] = []
    node, positions, nodes = 0, [], []
    for pos, token in enumerate(labels):
        if token == IGNORE:
            if node:
                return None
            continue
        child = index.child(node, int(token))
        if child < 0:
            return None
        positions.append(pos)
        nodes.append(node)
        node = child
        if index.n_children[node] == 0:
            runs.append(_Run(positions, nodes))
            node, positions, nodes = 0, [], []
    return None if node else runs


@dataclass(frozen=True)
class _Query:
    row: int  # the sequence
    history: list[int]  # catalog positions the teacher sees
    target: int
    index: TitleIndex
    run: _Run


def _context_index(pipeline: PromptPipeline, template: str, window: Window, items: list[int], all_positions: bool) -> TitleIndex:
    """The title index the sequence's targets were tokenised against (as ``data.py`` renders them)."""
    if all_positions:
        ctx = pipeline.split(pipeline.render(template, pipeline.items(items[:1]), None, k=1), template)[1]
    else:
        ctx = pipeline.prepare(list(window.history), template).ctx
    return pipeline.index(ctx)


def soft_targets(
    pipeline: PromptPipeline, encoded: Sequence[Encoded], windows: Sequence[Window], template: str, teacher: ScoredMethod,
    *, all_positions: bool, top: int, chunk: int = 512, progress: bool = True,
) -> tuple[list[Encoded], dict[str, Any]]:  # fmt: skip
    """``encoded`` with the teacher's soft targets attached, and counts for the training record.
    A sequence whose labels cannot be matched to its window's targets (a target the template left
    out) keeps its hard targets only, counted in ``targets_without_teacher``."""
    catalog = pipeline.catalog
    queries: list[_Query] = []
    unmatched = 0
    for row, (enc, window) in enumerate(zip(encoded, windows)):
        items = pipeline.resolve([*window.history, window.target])
        first = len(items) - enc.n_targets  # the targets are the window's last n_targets items
        index = _context_index(pipeline, template, window, items, all_positions)
        runs = title_runs(enc.labels, index)
        if runs is None or len(runs) != enc.n_targets or (all_positions and first != 1):
            unmatched += enc.n_targets
            continue
        queries.extend(_Query(row, items[: first + k], items[first + k], index, run) for k, run in enumerate(runs))

    from tqdm.auto import tqdm

    entries: dict[int, list[tuple[int, np.ndarray, np.ndarray]]] = {}
    for start in tqdm(range(0, len(queries), chunk), desc="teacher targets", unit="chunk", disable=not progress):
        batch = queries[start : start + chunk]
        for index in {id(q.index): q.index for q in batch}.values():
            group = [q for q in batch if q.index is index]
            scores = log_scores(teacher, [[catalog.ids[p] for p in q.history] for q in group])
            banned = [
                frozenset(catalog.position_titles[q.history].tolist()) - {int(catalog.position_titles[q.target])}
                for q in group
            ]
            mass = TitlePrior.from_item_scores(index, catalog.position_titles, scores, banned, weight=0.0).mass.numpy()
            for i, q in enumerate(group):
                entries.setdefault(q.row, []).extend(_node_targets(index, mass[i], q.run, top))
    out = list(encoded)
    positions = 0
    for row, found in entries.items():
        found.sort(key=lambda e: e[0])
        lengths = np.array([len(tokens) for _, tokens, _ in found], dtype=np.int64)
        soft = Soft(
            positions=np.array([pos for pos, _, _ in found], dtype=np.int64),
            offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            tokens=np.concatenate([t for _, t, _ in found]).astype(np.int64) if found else np.zeros(0, np.int64),
            probs=np.concatenate([p for _, _, p in found]).astype(np.float32) if found else np.zeros(0, np.float32),
        )
        out[row] = replace(encoded[row], soft=soft)
        positions += len(found)
    return out, {"soft_positions": positions, "targets_with_teacher": len(queries), "targets_without_teacher": unmatched}


def _node_targets(index: TitleIndex, mass: np.ndarray, run: _Run, top: int) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(position, tokens, probabilities) for each branching node of one title."""
    found = []
    for pos, node in zip(run.positions, run.nodes):
        count = int(index.n_children[node])
        if count < 2:
            continue
        lo = int(index.first_child[node])
        child = mass[lo : lo + count].astype(np.float64)
        keep = np.argpartition(-child, top - 1)[:top] if count > top else np.arange(count)
        kept = child[keep]
        if not np.isfinite(kept.max()):
            continue  # no title below this node has teacher mass
        probs = np.exp(kept - kept.max())
        some = probs > 0  # a child whose titles are all banned
        found.append((pos, index.token[lo + keep[some]].astype(np.int64), probs[some] / probs.sum()))
    return found

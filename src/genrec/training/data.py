"""Training data: windows over each user's training sequence, rendered and tokenised exactly as
inference renders and tokenises them.

Two ways to turn a window into loss:

- ``per-window``: the window's last item is the target, its earlier items the history; one forward
  pass trains one next-item prediction (any template).
- ``all-positions``: the window is rendered once as the list the model continues (a template whose
  answer lists the history, one title per line, such as ``sequence``) and the loss covers every
  title after the first; one forward pass trains every next-item prediction of the window, as
  SASRec trains every position.

In both, a target title's tokens are the title index's sequence for it, in the context the prompt
for that target ends in. In ``all-positions`` the tokens come from the rendering itself: the prompt
for target j is the template rendered with the j items before it, and it must be the start of the
whole window's tokens, followed by the target's title sequence; a target where either does not
hold is left out of the loss and counted (the template does not lay the history out as the list the
model continues), never trained on tokens inference would not produce.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_file
from ..errors import DataError
from ..data.datasets import Example
from ..data.splits import Split
from ..tasks import PromptPipeline

__all__ = [
    "MODES", "WINDOW_ORDERS", "Encoded", "Soft", "Window", "TokenBudgetBatches", "training_examples", "window_phases", "check_window_order",
    "encode_examples", "encode_all_positions", "collate", "IGNORE", "encoding_key", "save_encoded", "load_encoded",
]  # fmt: skip

log = logging.getLogger(__name__)

MODES = ("all-positions", "per-window")
# "shuffled": batches visited in a random order; "recent-last": each user's older windows first and
# the most recent ones last, as the learning rate falls (the test rows follow the most recent ones)
WINDOW_ORDERS = ("shuffled", "recent-last")
IGNORE = -100  # the label of a token the loss does not cover (torch's cross_entropy convention)
# part of every cached encoding's key: bump it when encode_examples or encode_all_positions change
ENCODING_VERSION = 1


@dataclass(frozen=True)
class Window(Example):
    """A training window: an example and its age among its user's windows (0: the most recent)."""

    age: int = 0


@dataclass(frozen=True)
class Soft:
    """A teacher's distributions (``teacher.py``) over the allowed tokens at some labelled positions."""

    positions: np.ndarray  # int64 [m]: the index in input_ids of each labelled token that has one
    offsets: np.ndarray  # int64 [m + 1]: position i's entries are tokens / probs[offsets[i] : offsets[i + 1]]
    tokens: np.ndarray  # int64
    probs: np.ndarray  # float32, summing to 1 per position


@dataclass(frozen=True)
class Encoded:
    """One training sequence: token ids, their labels (IGNORE outside target titles), how many
    next-item predictions the labels hold and, when distilling, the teacher's soft targets."""

    input_ids: list[int]
    labels: list[int]
    n_targets: int
    soft: Soft | None = None


def training_examples(
    split: Split, *, max_history: int, samples_per_user: int | None, seed: int, stride: int = 1
) -> list[Window]:
    """Windows over each user's training sequence: the item at position t with the up to
    ``max_history`` items before it, for t from the last item back in steps of ``stride``
    (1: every position is a window's target; ``max_history``: windows that share no target, for
    all-position training). ``samples_per_user`` keeps each user's most recent windows (closest
    to what the model will be asked); None keeps them all."""
    if stride < 1:
        raise DataError(f"stride must be at least 1, got {stride}")
    examples: list[Window] = []
    for user, sequence in split.train.items():
        ends = range(len(sequence) - 1, 0, -stride)
        windows = [
            Window(user, tuple(sequence[max(0, t - max_history) : t]), sequence[t], age) for age, t in enumerate(ends)
        ]
        if samples_per_user is not None:
            windows = windows[:samples_per_user]
        examples.extend(reversed(windows))
    random.Random(seed).shuffle(examples)
    return examples


def check_window_order(order: str) -> None:
    if order not in WINDOW_ORDERS:
        raise DataError(f"unknown window order {order!r} (have: {', '.join(WINDOW_ORDERS)})")


def window_phases(windows: Sequence[Window], order: str) -> list[int] | None:
    """The phase of each window for ``TokenBudgetBatches`` under a window order (None: one phase)."""
    check_window_order(order)
    return [-w.age for w in windows] if order == "recent-last" else None


def encode_examples(pipeline: PromptPipeline, examples: Sequence[Example], template: str) -> list[Encoded]:
    """Per-window: the prompt (exactly what inference sends) + the target title's tokens in context."""
    encoded: list[Encoded] = []
    for example in examples:
        job = pipeline.prepare(list(example.history), template)
        target = pipeline.index(job.ctx).sequence(pipeline.catalog.title_number_of(example.target))
        encoded.append(Encoded(job.prompt_ids + target, [IGNORE] * len(job.prompt_ids) + target, 1))
    return encoded


def encode_all_positions(
    pipeline: PromptPipeline, examples: Sequence[Example], template: str
) -> tuple[list[Encoded], int]:
    """All-positions: each window (history + target) rendered once as the list the model continues,
    labels on every title but the first. Returns the encodings and how many targets were left out
    because the rendering and the inference prompt disagree (see the module docstring)."""
    encoded: list[Encoded] = []
    left_out = 0
    for example in examples:
        positions = pipeline.resolve([*example.history, example.target])
        items = pipeline.items(positions)
        # prompts[j]: what inference sends with the first j + 1 items as history
        prompts = []
        for j in range(1, len(items) + 1):
            text, ctx = pipeline.split(pipeline.render(template, items[:j], None, k=1), template)
            prompts.append((pipeline.encode(text), ctx))
        full = prompts[-1][0]
        pipeline.check_fits(len(full), f"the {template} rendering of a {len(items)}-item training window")
        labels = [IGNORE] * len(full)
        n_targets = 0
        for j in range(1, len(items)):
            ids, ctx = prompts[j - 1]
            title = pipeline.index(ctx).sequence(pipeline.title_number(positions[j]))
            end = len(ids) + len(title)
            if full[: len(ids)] == ids and full[len(ids) : end] == title:
                labels[len(ids) : end] = title
                n_targets += 1
            else:
                left_out += 1
        encoded.append(Encoded(full, labels, n_targets))
    if left_out:
        log.warning(
            "%d training targets left out: template %r does not render the history as the list the model "
            "continues (the prompt for a target is not the start of the window's rendering)", left_out, template
        )
    return encoded, left_out


class TokenBudgetBatches:
    """A batch sampler: batches of at most ``max_rows`` sequences and ``max_tokens`` padded tokens
    (rows x the longest row; a sequence longer than that on its own), formed once and visited in
    an order drawn from (seed, epoch), so a resumed run sees the same batches.

    ``group_by_length`` fills each batch with sequences of similar length: on product titles a
    random batch of 8 is 41% padding (eval/notes/2026-11-29-training-speed.md), all of it computed and back-propagated.
    The token budget bounds a step's memory, which the row count alone does not: attention and
    the vocabulary projection grow with the padded width.
    ``phases`` (one number per sequence) orders an epoch: a batch holds one phase, and the phases
    are visited in ascending order, each one's batches in an order drawn anew every epoch.
    Deliberately without a ``batch_size`` attribute: accelerate then shards it as batches of
    varying size across processes."""

    def __init__(
        self, lengths: Sequence[int], *, max_rows: int, max_tokens: int | None, seed: int, group_by_length: bool = True,
        phases: Sequence[int] | None = None,
    ) -> None:  # fmt: skip
        if max_rows < 1 or (max_tokens is not None and max_tokens < 1):
            raise DataError(f"a batch needs room for a sequence: max_rows {max_rows}, max_tokens {max_tokens}")
        if phases is not None and len(phases) != len(lengths):
            raise DataError(f"{len(phases)} phases for {len(lengths)} sequences")
        phase_of = phases if phases is not None else [0] * len(lengths)
        order = list(range(len(lengths)))
        random.Random(seed).shuffle(order)  # ties in length (and the ungrouped order) drawn, not file order
        order.sort(key=lambda i: (phase_of[i], lengths[i]) if group_by_length else phase_of[i])
        self.batches: list[list[int]] = []
        batch: list[int] = []
        width = 0
        for i in order:
            wider = max(width, lengths[i]) * (len(batch) + 1)  # padded tokens with sequence i added
            full = len(batch) == max_rows or (max_tokens is not None and wider > max_tokens)
            if batch and (full or phase_of[i] != phase_of[batch[0]]):
                self.batches.append(batch)
                batch, width = [], 0
            batch.append(i)
            width = max(width, lengths[i])
        if batch:
            self.batches.append(batch)
        self.phase = [phase_of[b[0]] for b in self.batches]
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[int]]:
        visit = list(range(len(self.batches)))
        random.Random(f"{self.seed}:{self.epoch}").shuffle(visit)
        visit.sort(key=lambda b: self.phase[b])  # stable: the drawn order within each phase
        return (self.batches[b] for b in visit)


def collate(batch: Sequence[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Left-padded, so the targets sit towards the end and the LM head runs only from the first
    labelled position on (most of the vocabulary projection would otherwise go to prompt tokens)."""
    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    for row, e in enumerate(batch):
        ids[row, width - len(e.input_ids) :] = torch.tensor(e.input_ids)
        mask[row, width - len(e.input_ids) :] = 1
        labels[row, width - len(e.labels) :] = torch.tensor(e.labels)
    out = {
        "input_ids": ids,
        "attention_mask": mask,
        "labels": labels,
        "n_targets": torch.tensor([e.n_targets for e in batch]),
    }
    if any(e.soft is not None for e in batch):
        out.update(_collate_soft(batch, width))
    return out


def _collate_soft(batch: Sequence[Encoded], width: int) -> dict[str, torch.Tensor]:
    """The batch's soft targets, flat: each labelled position's (row, column) and, per entry, the
    position it belongs to (``soft_of``), its token and probability."""
    rows, cols, of, tokens, probs = [], [], [], [], []
    seen = 0
    for row, e in enumerate(batch):
        if e.soft is None:
            continue
        count = len(e.soft.positions)
        rows.append(np.full(count, row))
        cols.append(e.soft.positions + (width - len(e.input_ids)))
        of.append(seen + np.repeat(np.arange(count), np.diff(e.soft.offsets)))
        tokens.append(e.soft.tokens)
        probs.append(e.soft.probs)
        seen += count
    return {
        "soft_row": torch.from_numpy(np.concatenate(rows).astype(np.int64)),
        "soft_col": torch.from_numpy(np.concatenate(cols).astype(np.int64)),
        "soft_of": torch.from_numpy(np.concatenate(of).astype(np.int64)),
        "soft_token": torch.from_numpy(np.concatenate(tokens).astype(np.int64)),
        "soft_prob": torch.from_numpy(np.concatenate(probs).astype(np.float32)),
    }


# ---------------------------------------------------------------------- the encoding cache
def encoding_key(
    *, mode: str, template: str, template_sources: Sequence[tuple[str, bytes]], tokenizer_hash: str, catalog_hash: str,
    examples: Sequence[Example],
) -> str:
    """What decides a run's encoded sequences: the mode, the template and every template file it
    could reach (a parent or an included one), the tokenizer, the catalog (its titles decide the
    title index) and the windows themselves. Encoding every MovieLens 100K window renders each of
    its prefixes (106 s on a 2-core CPU), so a resumed or repeated run reads it back instead."""
    digest = hashlib.sha256()
    head = {"version": ENCODING_VERSION, "mode": mode, "template": template, "tokenizer": tokenizer_hash,
            "catalog": catalog_hash}  # fmt: skip
    digest.update(json.dumps(head, sort_keys=True).encode())
    for name, source in template_sources:
        digest.update(f"\0{name}\0{len(source)}\0".encode() + source)
    for e in examples:
        digest.update(json.dumps([e.user_id, list(e.history), e.target]).encode())
    return digest.hexdigest()[:24]


def save_encoded(path: Path, encoded: Sequence[Encoded], left_out: int) -> None:
    """Write ``encoded`` (and the count of targets left out) to ``path``, atomically."""
    lengths = np.array([len(e.input_ids) for e in encoded], dtype=np.int64)
    ids = np.array([t for e in encoded for t in e.input_ids], dtype=np.int64)
    labels = np.array([t for e in encoded for t in e.labels], dtype=np.int64)
    with atomic_file(path, suffix=".npz") as tmp:
        np.savez_compressed(tmp, lengths=lengths, ids=ids, labels=labels, n_targets=np.array([e.n_targets for e in encoded]),
                            left_out=np.array(left_out))  # fmt: skip


def load_encoded(path: Path) -> tuple[list[Encoded], int] | None:
    """The encodings cached at ``path``, or None when there are none or they do not read back whole
    (the caller encodes again)."""
    if not path.is_file():
        return None
    try:
        with np.load(path) as z:
            lengths, ids, labels, n_targets, left_out = z["lengths"], z["ids"], z["labels"], z["n_targets"], int(z["left_out"])
    except (OSError, ValueError, KeyError) as exc:
        log.warning("cached training encodings %s do not read (%s); encoding again", path, exc)
        return None
    if int(lengths.sum()) != len(ids) or len(ids) != len(labels) or len(n_targets) != len(lengths):
        log.warning("cached training encodings %s are inconsistent; encoding again", path)
        return None
    ends = np.cumsum(lengths)
    return [
        Encoded(ids[end - n : end].tolist(), labels[end - n : end].tolist(), int(t))
        for n, end, t in zip(lengths, ends, n_targets)
    ], left_out

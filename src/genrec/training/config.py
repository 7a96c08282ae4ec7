"""The settings of a fine-tuning run (``TrainConfig``), checked once, and what a run returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.cold import check_cold
from ..data.splits import HOLDOUTS, TIE_BREAKS
from ..decoding.vocabulary import OUTPUT_VOCABULARIES
from ..errors import DataError
from ..options import option
from .data import MODES, WINDOW_ORDERS, check_window_order
from .layers import parse_layers
from .schedule import SCHEDULES, check_schedule
from .teacher import TEACHERS, check_teacher

__all__ = ["TrainConfig", "TrainResult", "PRECISIONS", "LEGACY_SETTINGS"]

PRECISIONS = ("auto", "no", "bf16", "fp16")  # accelerate's mixed_precision values, and ours: auto
# what a run written before a setting existed did, where that differs from today's default
LEGACY_SETTINGS = {"output_vocabulary": "full"}


@dataclass
class TrainConfig:
    """How to fine-tune. ``epochs`` may be fractional; ``max_steps`` (optimizer steps) wins when set.
    Each ``option`` field is also an option of ``genrec train`` (``options.py``)."""

    model: str | None = option(None, "base model (default: the embedded SmolLM2-135M-Instruct)")
    lora: bool = option(False, "train LoRA adapters (needs genrec[lora]); merged at the end")
    lora_r: int = option(16, "LoRA rank (its alpha is twice the rank)")
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    # decoder layers removed before training ("14-28"): a shallower model, faster to train and to decode
    drop_layers: str | None = option(
        None, "remove these decoder layers before training, e.g. 14-28 (0-based, ranges inclusive): a shallower model, "
        "faster to train and to decode", metavar="LAYERS",
    )  # fmt: skip
    # full fine-tuning of the upper layers only: the embeddings and the N lowest layers stay
    freeze_layers: int = option(0, "keep the embeddings and the N lowest layers as they are and train the rest (faster steps)")
    epochs: float = option(1.0, "passes over the training windows (may be fractional)", group="length")
    max_steps: int | None = option(None, "optimizer steps (instead of --epochs)", group="length")
    learning_rate: float | None = option(None, "learning rate (default 5e-5 full, 3e-4 LoRA)", flag="--lr")
    warmup_ratio: float = 0.05
    # "linear": one warm-up and decay over the run; "restarts": one per epoch, the peak times
    # restart_decay at each new epoch (schedule.py)
    lr_schedule: str = option(
        "linear", "linear: one warm-up and decay to zero over the run (default); restarts: one per epoch, each epoch's "
        "peak --restart-decay times the last one's", choices=SCHEDULES,
    )  # fmt: skip
    restart_decay: float = option(0.5, "with --lr-schedule restarts (default: %(default)s)")
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    batch_size: int = option(8, "at most this many sequences per batch")
    max_batch_tokens: int | None = option(
        4096, "and at most this many padded tokens per batch, which bounds a step's memory (0: no limit)", zero_is_none=True
    )  # fmt: skip
    group_by_length: bool = option(True, "batch sequences in random order, not with others of similar length (more padding)")
    grad_accum: int = option(1, "batches per optimizer step")
    max_history: int = option(10, "history items in each training prompt")
    samples_per_user: int | None = option(4, "most recent windows per user (0: all)", zero_is_none=True)
    window_order: str = option(
        "shuffled", "batches in a random order (default), or each user's older windows first and the most recent last",
        choices=WINDOW_ORDERS,
    )  # fmt: skip
    mode: str = option(
        "all-positions", "loss on every title of a window in one pass (default), or on its last one only (data.py)", choices=MODES
    )  # fmt: skip
    save_every: int = option(50, "checkpoint every N optimizer steps")
    keep_checkpoints: int = 2
    valid_users: int = option(
        0, "score every checkpoint on N seeded validation rows (NDCG@10) and keep the best (default 0: the last)"
    )  # fmt: skip
    teacher: str | None = option(
        None, "distil from this baseline too: its distribution over each title's next tokens "
        "(see eval/notes/2026-12-01-movielens-cpu-recipes.md)", choices=TEACHERS,
    )  # fmt: skip
    teacher_weight: float = option(0.5, "the teacher's share of a branching token's loss")
    teacher_top: int = option(64, "the teacher's heaviest tokens kept per position")
    seed: int = option(0, "windows, batches and initialisation")
    template: str | None = option(None, "default: sequence (all-positions), next_item (per-window)")
    tie_break: str = option("file_order", "how events at the same time are ordered in the split", choices=TIE_BREAKS)
    # the same seeded new items as eval/run.py --cold-items (data/cold.py): never in a training window
    cold_items: float = option(0.0, "leave out every interaction with this seeded fraction of the catalog (new items)")
    holdout: str = option(
        "latest", "D3 files: validation rows are the training file's latest 10%% (default) or a seeded random 10%% (leaks)",
        choices=HOLDOUTS,
    )  # fmt: skip
    mixed_precision: str = option(
        "auto", "auto: bf16 where the CPU or GPU has it natively, fp16 on older GPUs, else fp32 (no)", choices=PRECISIONS
    )  # fmt: skip
    output_vocabulary: str = option(
        "catalog", "catalog: the softmax over the tokens of the catalog's titles only (faster; decoded the same way); "
        "full: over the model's whole vocabulary", choices=OUTPUT_VOCABULARIES,
    )  # fmt: skip
    dataset: str = ""
    data: dict[str, str] = field(default_factory=dict)

    def check(self) -> None:
        """A clear error for a setting that would otherwise fail deep in accelerate or torch,
        or train nothing."""
        if self.mode not in MODES:
            raise DataError(f"unknown training mode {self.mode!r} (have: {', '.join(MODES)})")
        check_window_order(self.window_order)
        if self.output_vocabulary not in OUTPUT_VOCABULARIES:
            raise DataError(f"unknown output vocabulary {self.output_vocabulary!r} (have: {', '.join(OUTPUT_VOCABULARIES)})")
        if self.mixed_precision not in PRECISIONS:
            raise DataError(f"unknown mixed precision {self.mixed_precision!r} (have: {', '.join(PRECISIONS)})")
        at_least_one = {"batch_size": self.batch_size, "max_batch_tokens": self.max_batch_tokens,
                        "grad_accum": self.grad_accum, "max_history": self.max_history,
                        "save_every": self.save_every, "keep_checkpoints": self.keep_checkpoints,
                        "max_steps": self.max_steps, "samples_per_user": self.samples_per_user}  # fmt: skip
        for name, value in at_least_one.items():
            if value is not None and value < 1:
                raise DataError(f"{name} must be at least 1, got {value}")
        positive: dict[str, float | None] = {"learning_rate": self.learning_rate}
        if self.max_steps is None:  # max_steps wins when set, so epochs are not read then
            positive["epochs"] = self.epochs
        for name, value in positive.items():
            if value is not None and not value > 0:  # `not >` also refuses NaN
                raise DataError(f"{name} must be above 0, got {value}")
        if not 0 <= self.warmup_ratio < 1:
            raise DataError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        check_schedule(self.lr_schedule, self.restart_decay)
        if not self.max_grad_norm >= 0:  # 0 turns clipping off
            raise DataError(f"max_grad_norm must be at least 0, got {self.max_grad_norm}")
        if self.valid_users < 0:
            raise DataError(f"valid_users must be at least 0 (0: keep the last checkpoint), got {self.valid_users}")
        if self.freeze_layers < 0:
            raise DataError(f"freeze_layers must be at least 0, got {self.freeze_layers}")
        if self.drop_layers is not None:
            parse_layers(self.drop_layers)  # the model's depth is checked once it is loaded
        check_teacher(self.teacher, self.teacher_weight, self.teacher_top)
        check_cold(self.cold_items, "all")
        if self.freeze_layers and self.lora:
            raise DataError("freeze_layers is for full fine-tuning; LoRA already keeps every base weight as it is")

    def template_name(self) -> str:
        if self.template is not None:
            return self.template
        return "sequence" if self.mode == "all-positions" else "next_item"

    def lr(self) -> float:
        return self.learning_rate if self.learning_rate is not None else (3e-4 if self.lora else 5e-5)


@dataclass
class TrainResult:
    out_dir: Path
    steps: int
    samples_seen: int
    samples_per_s: float
    targets_seen: int
    targets_per_s: float  # next-item predictions trained per second: comparable across modes
    final_loss: float
    record: dict[str, Any]

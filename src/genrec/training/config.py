"""The settings of a fine-tuning run (``TrainConfig``), checked once, and what a run returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..decoding.vocabulary import OUTPUT_VOCABULARIES
from ..errors import DataError
from .data import MODES, check_window_order
from .layers import parse_layers
from .schedule import check_schedule
from .teacher import check_teacher

__all__ = ["TrainConfig", "TrainResult", "PRECISIONS", "LEGACY_SETTINGS"]

PRECISIONS = ("auto", "no", "bf16", "fp16")  # accelerate's mixed_precision values, and ours: auto
# what a run written before a setting existed did, where that differs from today's default
LEGACY_SETTINGS = {"output_vocabulary": "full"}


@dataclass
class TrainConfig:
    """How to fine-tune. ``epochs`` may be fractional; ``max_steps`` (optimizer steps) wins when set."""

    model: str | None = None
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    # decoder layers removed before training ("14-28"): a shallower model, faster to train and to decode
    drop_layers: str | None = None
    freeze_layers: int = 0  # full fine-tuning of the upper layers only: the embeddings and the N lowest layers stay
    epochs: float = 1.0
    max_steps: int | None = None
    learning_rate: float | None = None  # default: 5e-5 full, 3e-4 LoRA
    warmup_ratio: float = 0.05
    # "linear": one warm-up and decay over the run; "restarts": one per epoch, the peak times
    # restart_decay at each new epoch (schedule.py)
    lr_schedule: str = "linear"
    restart_decay: float = 0.5
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    batch_size: int = 8  # at most this many sequences per batch...
    max_batch_tokens: int | None = 4096  # ...and at most this many padded tokens (None: no limit)
    group_by_length: bool = True  # batch sequences of similar length together (less padding)
    grad_accum: int = 1
    max_history: int = 10
    samples_per_user: int | None = 4  # most recent windows per user (None: all)
    window_order: str = "shuffled"  # or "recent-last": each user's older windows first (data.WINDOW_ORDERS)
    mode: str = "all-positions"  # or "per-window": see data.py
    save_every: int = 50
    keep_checkpoints: int = 2
    valid_users: int = 0  # score each checkpoint on this many validation rows and keep the best (0: the last)
    teacher: str | None = None  # a baseline to distil from (teacher.TEACHERS); None: the true next items alone
    teacher_weight: float = 0.5  # share of the teacher's soft targets in a branching token's loss
    teacher_top: int = 64  # the teacher's heaviest allowed tokens kept per position
    seed: int = 0
    template: str | None = None  # default: "sequence" for all-positions, "next_item" per window
    tie_break: str = "file_order"
    mixed_precision: str = "auto"  # auto: bf16 where the CPU or GPU has it natively, else fp16 on GPU / fp32 on CPU
    # "catalog": the softmax over the tokens the catalog's titles are written with (decoding.vocabulary);
    # "full": over the model's whole vocabulary
    output_vocabulary: str = "catalog"
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

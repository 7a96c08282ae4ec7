"""A run's files: resumable checkpoints in ``<out>.work/`` (each written to a temporary folder and
renamed; complete once its state file is in), the best-scoring weights, and the final model
directory put in place with one rename."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from ..atomic import atomic_dir, clean_stale
from ..recommender import TRAINING_RECORD

__all__ = ["CHECKPOINT_DONE", "BEST", "checkpoints", "save_checkpoint", "clean_tmp", "write_final"]

CHECKPOINT_DONE = "trainer_state.json"  # written last inside a checkpoint: its presence = complete
BEST = "best.pt"  # with valid_users: the weights of the best-scoring checkpoint so far


def checkpoints(work: Path) -> list[Path]:
    folder = work / "checkpoints"
    found = [p for p in folder.glob("step-*") if (p / CHECKPOINT_DONE).is_file()] if folder.is_dir() else []
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def save_checkpoint(accelerator: Any, work: Path, state: dict[str, Any], keep: int) -> None:
    """Every process writes its part (each rank has its own RNG state) into a temporary folder;
    the main process then marks it complete and renames it into place. A kill at any point leaves
    the previous checkpoint untouched."""
    folder = work / "checkpoints"
    tmp = folder / f".tmp-step-{state['step']:07d}"
    target = folder / f"step-{state['step']:07d}"
    if not accelerator.is_main_process:
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp))
        accelerator.wait_for_everyone()
        accelerator.wait_for_everyone()
        return
    with atomic_dir(target, tmp=tmp):
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp))
        accelerator.wait_for_everyone()
        (tmp / CHECKPOINT_DONE).write_text(json.dumps(state), encoding="utf-8")
    for old in checkpoints(work)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def clean_tmp(work: Path) -> None:
    clean_stale(work / "checkpoints")


def write_final(model: Any, tokenizer: Any, out: Path, record: dict[str, Any], history: list[dict], lora: bool) -> None:
    """Assemble the model directory beside ``out`` and rename it into place."""
    with atomic_dir(out) as tmp:
        if lora:
            model.save_pretrained(str(tmp / "adapter"))  # the adapter alone, for peft users
            model = model.merge_and_unload()  # plain transformers weights for everyone else
        model.eval()
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        (tmp / "train_log.json").write_text(json.dumps(history, indent=1), encoding="utf-8")
        _plot_loss(history, tmp / "loss.png")
        (tmp / TRAINING_RECORD).write_text(json.dumps(record, indent=2, default=str), encoding="utf-8")


def _plot_loss(history: list[dict], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # plots are an extra
        return
    if not history:
        return
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.plot([h["step"] for h in history], [h["loss"] for h in history], linewidth=1)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (target title tokens)")
    ax.set_title("fine-tuning loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

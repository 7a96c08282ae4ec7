"""Fine-tuning the language model on interaction logs rendered as text (full, the upper layers
only, or LoRA).

Training examples go through the same template and the same tokenisation as inference: the
prompt is what ``Recommender`` would send for that history, and the target is the title's token
sequence from the title index (end marker included), so the model learns exactly what constrained
beam search will score. The loss covers only target tokens. ``mode`` decides how many targets one
sequence holds (``data.py``): ``all-positions`` (default; template ``sequence``) trains every
title of a window in one forward pass, ``per-window`` (template ``next_item``) the last one.
Throughput is reported in next-item targets per second, comparable between the modes.

Windows come from the TRAINING part of the split: validation and test items never reach the model.

Layout of ``out``:

- ``<out>.work/`` while training: ``checkpoints/step-N/`` (model, optimizer, scheduler and RNG
  state, each written to a temporary folder and renamed) and ``log.jsonl``. ``resume=True``
  continues from the newest complete checkpoint.
- ``<out>/`` at the end, put in place with one rename: a plain transformers model directory
  (LoRA weights merged in), the tokenizer, ``genrec.json`` (catalog, template, data and settings
  it was trained with), ``train_log.json`` and ``loss.png``.

``valid_users`` > 0 chooses the training length on validation, as the harness early-stops SASRec:
every checkpoint's model decodes that many seeded validation rows (the harness's protocol, k = 10)
and the weights with the best NDCG@10 (the earliest on a tie) are kept in ``<out>.work/best.pt``
and become the final model; ``genrec.json`` records every checkpoint's score and the step chosen.

Runs unchanged under ``accelerate launch`` (data parallel); on one process it trains on the
available device, with bf16 autocast on CPUs with native bf16 instructions and on GPUs that
support it (fp16 on older GPUs, fp32 on other CPUs).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import atomic_file
from ..data.datasets import Dataset
from ..data.splits import Split, legacy_holdout
from ..errors import DataError
from ..model import DEFAULT_MODEL_NAME
from .checkpoints import BEST, CHECKPOINT_DONE, checkpoints, save_checkpoint, write_final
from .config import LEGACY_SETTINGS, PRECISIONS, TrainConfig, TrainResult
from .data import TokenBudgetBatches, collate, window_phases
from .layers import freeze_lower_layers
from .loss import gradient_finite, loss_of
from .prepare import Prepared, mixed_precision, prepare, validate
from .schedule import lr_factor

__all__ = ["TrainConfig", "TrainResult", "PRECISIONS", "train", "freeze_lower_layers"]

log = logging.getLogger(__name__)


@dataclass
class _Progress:
    """Where the loop stands: saved in every checkpoint, restored by ``--resume``."""

    step: int = 0
    epoch: int = 0
    batches_done: int = 0
    samples_seen: int = 0
    targets_seen: int = 0
    elapsed_s: float = 0.0
    scores: dict[int, float] = field(default_factory=dict)  # validation NDCG@10 by checkpoint step

    def state(self) -> dict[str, Any]:
        return {"step": self.step, "epoch": self.epoch, "batches_done": self.batches_done, "samples_seen": self.samples_seen,
                "targets_seen": self.targets_seen, "elapsed_s": self.elapsed_s, "valid_ndcg": self.scores}  # fmt: skip

    @classmethod
    def restored(cls, state: dict[str, Any]) -> _Progress:
        return cls(state["step"], state["epoch"], state["batches_done"], state["samples_seen"], state.get("targets_seen", 0),
                   state["elapsed_s"], {int(k): v for k, v in state.get("valid_ndcg", {}).items()})  # fmt: skip


def train(
    dataset: Dataset,
    out: str | Path,
    config: TrainConfig,
    *,
    resume: bool = False,
    progress: bool = True,
    split: Split | None = None,
) -> TrainResult:
    """Fine-tune ``config.model`` (default: the embedded model) on ``dataset``'s training split and
    write a model directory to ``out``. See the module docstring for the layout."""
    config.check()
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import set_seed

    out = Path(out)
    work = out.with_name(out.name + ".work")
    existing = _check_start(out, work, config, resume)
    # accelerate keeps one process-wide state and refuses a second Accelerator with another
    # precision; each train() call is a run of its own (the process group, PartialState, stays)
    AcceleratorState._reset_state()
    accelerator = Accelerator(gradient_accumulation_steps=config.grad_accum, mixed_precision=mixed_precision(config.mixed_precision))
    set_seed(config.seed)
    prepared = prepare(dataset, split, config, work, progress)
    model, optimizer, loader, scheduler, total_steps = _optimiser(accelerator, prepared, config)
    run = _Progress()
    if resume and existing:
        accelerator.load_state(str(existing[-1]))
        run = _Progress.restored(json.loads((existing[-1] / CHECKPOINT_DONE).read_text(encoding="utf-8")))
        log.warning("resuming from %s (step %d of %d)", existing[-1], run.step, total_steps)
    log_path = work / "log.jsonl"
    if not resume and log_path.exists():
        log_path.unlink()
    _loop(accelerator, model, optimizer, loader, scheduler, prepared, config, run, total_steps, work, progress)
    return _finish(accelerator, model, prepared, dataset, config, run, out, work)


def _check_start(out: Path, work: Path, config: TrainConfig, resume: bool) -> list[Path]:
    """Refuse to overwrite a model or to restart over checkpoints, and to resume with other
    settings; the checkpoints to resume from."""
    if out.exists() and any(out.iterdir()) and not resume:
        raise DataError(f"{out} already holds a model; choose another --out (nothing was overwritten)")
    existing = checkpoints(work)
    if existing and not resume:
        raise DataError(f"{work} holds checkpoints of an unfinished run: pass --resume to continue it, or delete it")
    settings_path, settings = work / "config.json", asdict(config)
    if resume and settings_path.exists():
        # a setting added since that run was written had its default then
        saved = json.loads(settings_path.read_text(encoding="utf-8"))
        previous = {**asdict(TrainConfig()), **LEGACY_SETTINGS, "holdout": legacy_holdout(saved), **saved}
        if previous != settings:
            changed = sorted(k for k in {*previous, *settings} if previous.get(k) != settings.get(k))
            raise DataError(f"--resume with other settings than the run in {work}: {', '.join(changed)}")
    return existing


def _optimiser(accelerator: Any, prepared: Prepared, config: TrainConfig) -> tuple[Any, Any, Any, Any, int]:
    """Batches, optimizer and schedule, prepared by accelerate; and the run's optimizer steps."""
    encoded, pad_id = prepared.encoded, prepared.rec.pad_token_id
    batches = TokenBudgetBatches(
        [len(e.input_ids) for e in encoded], max_rows=config.batch_size, max_tokens=config.max_batch_tokens,
        seed=config.seed, group_by_length=config.group_by_length, phases=window_phases(prepared.windows, config.window_order),
    )  # fmt: skip
    loader = torch.utils.data.DataLoader(encoded, batch_sampler=batches, collate_fn=lambda batch: collate(batch, pad_id))
    steps_per_epoch = max(1, math.ceil(len(loader) / config.grad_accum))
    total_steps = config.max_steps or max(1, math.ceil(config.epochs * steps_per_epoch))
    if config.window_order == "recent-last" and total_steps % steps_per_epoch:
        log.warning(
            "recent-last order with %d steps of %d per epoch: the last epoch stops before the most recent windows; "
            "keep fewer windows per user (--samples-per-user) to train them within the steps", total_steps, steps_per_epoch,
        )  # fmt: skip
    model = prepared.rec.lm.model
    model.train()
    trained = [p for p in model.parameters() if p.requires_grad]  # what LoRA or --freeze-layers leaves trainable
    optimizer = torch.optim.AdamW(trained, lr=config.lr(), weight_decay=config.weight_decay)

    def schedule(s: int) -> float:
        return lr_factor(
            s, total_steps=total_steps, steps_per_epoch=steps_per_epoch, warmup_ratio=config.warmup_ratio,
            schedule=config.lr_schedule, restart_decay=config.restart_decay,
        )  # fmt: skip

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    return model, optimizer, loader, scheduler, total_steps


def _loop(
    accelerator: Any, model: Any, optimizer: Any, loader: Any, scheduler: Any, prepared: Prepared, config: TrainConfig,
    run: _Progress, total_steps: int, work: Path, progress: bool,
) -> None:  # fmt: skip
    """Optimizer steps until ``total_steps``: a log line per step, validation and a checkpoint every
    ``save_every`` steps and at the end; a step whose gradient is not finite changes no weights."""
    from tqdm.auto import tqdm

    log_path = work / "log.jsonl"
    bar = tqdm(total=total_steps, initial=run.step, desc="fine-tuning", unit="step", disable=not (progress and accelerator.is_main_process))
    started = time.perf_counter() - run.elapsed_s
    running_loss: list[float] = []
    while run.step < total_steps:
        loader.set_epoch(run.epoch)
        batches = accelerator.skip_first_batches(loader, run.batches_done) if run.batches_done else loader
        for batch in batches:
            with accelerator.accumulate(model):
                loss = loss_of(model, batch, config.teacher_weight if config.teacher else 0.0, prepared.vocabulary)
                accelerator.backward(loss)
                skipped = accelerator.sync_gradients and not gradient_finite(accelerator, model, config.max_grad_norm)
                if not skipped:
                    optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            run.batches_done += 1
            run.samples_seen += batch["input_ids"].shape[0] * accelerator.num_processes
            run.targets_seen += int(batch["n_targets"].sum()) * accelerator.num_processes
            running_loss.append(float(loss.detach()))
            if not accelerator.sync_gradients:
                continue
            run.step += 1
            run.elapsed_s = time.perf_counter() - started
            record = {"step": run.step, "epoch": run.epoch, "loss": float(np.mean(running_loss)), "lr": scheduler.get_last_lr()[0],
                      "samples_seen": run.samples_seen, "targets_seen": run.targets_seen, "elapsed_s": round(run.elapsed_s, 2),
                      "targets_per_s": run.targets_seen / max(run.elapsed_s, 1e-9)}  # fmt: skip
            running_loss = []
            if skipped:
                record["skipped"] = True
                log.warning("step %d: the gradient is not finite; the step changes no weights", run.step)
            saving = run.step % config.save_every == 0 or run.step >= total_steps
            if saving and prepared.valid_rows:
                started += _score_checkpoint(accelerator, model, prepared, config, run, record, work)
            if accelerator.is_main_process:
                with open(log_path, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(record) + "\n")
            bar.set_postfix(loss=f"{record['loss']:.3f}", targets_per_s=f"{record['targets_per_s']:.2f}")
            bar.update(1)
            if saving:
                save_checkpoint(accelerator, work, run.state(), config.keep_checkpoints)
            if run.step >= total_steps:
                break
        else:
            run.epoch += 1
            run.batches_done = 0
    bar.close()
    accelerator.wait_for_everyone()
    run.elapsed_s = time.perf_counter() - started


def _score_checkpoint(
    accelerator: Any, model: Any, prepared: Prepared, config: TrainConfig, run: _Progress, record: dict[str, Any], work: Path
) -> float:
    """Validation NDCG@10 of this step's weights (kept as the best when they beat every earlier
    step); returns the seconds it took, which do not count as training time."""
    valid_started = time.perf_counter()
    record["valid_NDCG@10"] = run.scores[run.step] = validate(accelerator.unwrap_model(model), prepared.rec, prepared.valid_rows, config)
    record["valid_s"] = round(time.perf_counter() - valid_started, 2)
    earlier = max((v for s, v in run.scores.items() if s < run.step), default=-1.0)
    if accelerator.is_main_process and run.scores[run.step] > earlier:
        with atomic_file(work / BEST, suffix=".pt") as tmp:  # the best weights so far
            torch.save({"step": run.step, "weights": accelerator.unwrap_model(model).state_dict()}, tmp)
    return record["valid_s"]


def _finish(
    accelerator: Any, model: Any, prepared: Prepared, dataset: Dataset, config: TrainConfig, run: _Progress, out: Path, work: Path
) -> TrainResult:
    """The chosen weights (the earliest best on validation, else the last), the record, and the
    model directory put in place."""
    scores, step = run.scores, run.step
    chosen = max(scores, key=lambda s: (scores[s], -s)) if scores else step  # the earliest best
    if chosen != step:
        best = torch.load(work / BEST, map_location="cpu", weights_only=True)
        if best["step"] != chosen:  # (a kill between the two writes, and a rerun that scored otherwise)
            raise DataError(f"{work / BEST} holds step {best['step']}, but validation chose step {chosen}; rerun without --resume")
        accelerator.unwrap_model(model).load_state_dict(best["weights"])
    log_path = work / "log.jsonl"
    history = [json.loads(line) for line in log_path.read_text(encoding="utf-8").splitlines()] if log_path.exists() else []
    rec, encoded, elapsed = prepared.rec, prepared.encoded, run.elapsed_s
    unwrapped = accelerator.unwrap_model(model)
    record = {
        "base_model": config.model or DEFAULT_MODEL_NAME,
        "lora": config.lora,
        "layers": unwrapped.config.num_hidden_layers,
        "trained_parameters": sum(p.numel() for p in unwrapped.parameters() if p.requires_grad),
        "catalog_hash": dataset.catalog.content_hash,
        "catalog_name": dataset.catalog.name,
        "catalog_items": len(dataset.catalog),
        "mode": config.mode,
        "template": config.template_name(),
        "template_fingerprint": rec.prompts.fingerprint(config.template_name()),
        "dataset": config.dataset or dataset.name,
        "split": prepared.split.info,
        "training_examples": len(encoded),
        "training_targets": sum(e.n_targets for e in encoded),
        "targets_left_out": prepared.left_out,
        "distillation": prepared.distilled or None,
        "output_vocabulary": config.output_vocabulary,
        "output_tokens": prepared.vocabulary.size if prepared.vocabulary is not None else None,
        "steps": step,
        "steps_skipped_nonfinite": sum(1 for h in history if h.get("skipped")),
        "samples_seen": run.samples_seen,
        "samples_per_s": run.samples_seen / max(elapsed, 1e-9),
        "targets_seen": run.targets_seen,
        "targets_per_s": run.targets_seen / max(elapsed, 1e-9),
        "elapsed_s": elapsed,
        "device": str(accelerator.device),
        "processes": accelerator.num_processes,
        "mixed_precision": accelerator.mixed_precision,
        "config": asdict(config),
    }
    if scores:
        record.update(
            selected_step=chosen, valid_rows=len(prepared.valid_rows),
            valid_NDCG_by_step={str(s): round(v, 5) for s, v in sorted(scores.items())},
        )  # fmt: skip
    if accelerator.is_main_process:
        write_final(unwrapped, rec.tokenizer, out, record, history, config.lora)
        if not os.environ.get("GENREC_KEEP_CHECKPOINTS"):
            shutil.rmtree(work, ignore_errors=True)
    accelerator.wait_for_everyone()
    final_loss = history[-1]["loss"] if history else float("nan")
    return TrainResult(out, step, run.samples_seen, record["samples_per_s"], run.targets_seen, record["targets_per_s"], final_loss, record)



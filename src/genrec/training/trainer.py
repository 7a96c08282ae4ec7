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

from ..atomic import atomic_dir, atomic_file, clean_stale
from ..decoding import OutputVocabulary, tokenizer_fingerprint
from ..decoding.vocabulary import OUTPUT_VOCABULARIES, catalog_head
from ..errors import DataError, require
from ..data.datasets import Dataset, Example
from ..data.splits import Split, sample_examples, split_dataset
from ..model import DEFAULT_MODEL_NAME, cpu_has_bf16
from ..recommender import TRAINING_RECORD, Recommender
from .layers import drop_layers, freeze_lower_layers, parse_layers
from .schedule import check_schedule, lr_factor
from .teacher import check_teacher, fit_teacher, soft_targets
from .data import (
    IGNORE, MODES, Encoded, TokenBudgetBatches, Window, check_window_order, collate, encode_all_positions,
    encode_examples, encoding_key, load_encoded, save_encoded, training_examples, window_phases,
)  # fmt: skip

__all__ = ["TrainConfig", "TrainResult", "train", "freeze_lower_layers"]

log = logging.getLogger(__name__)

_CHECKPOINT_DONE = "trainer_state.json"  # written last inside a checkpoint: its presence = complete
_BEST = "best.pt"  # with valid_users: the weights of the best-scoring checkpoint so far
PRECISIONS = ("auto", "no", "bf16", "fp16")  # accelerate's mixed_precision values, and ours: auto
# what a run written before a setting existed did, where that differs from today's default
_LEGACY_SETTINGS = {"output_vocabulary": "full"}


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


def _loss(
    model: Any, batch: dict[str, torch.Tensor], teacher_weight: float = 0.0, vocabulary: OutputVocabulary | None = None
) -> torch.Tensor:
    """Mean cross-entropy over the labelled tokens; the LM head runs only from the last position
    before the batch's first labelled token (left padding puts the labels at the end), and with an
    output ``vocabulary`` over that vocabulary's rows alone (``vocabulary.py``). With soft targets
    in the batch, each of their positions counts ``(1 - w) * hard + w * soft`` (``teacher.py``)."""
    labels = batch["labels"]
    columns = (labels != IGNORE).any(dim=0).nonzero()  # the columns any row labels
    first = max(1, int(columns[0]) if len(columns) else labels.shape[1] - 1)
    keep = labels.shape[1] - first + 1  # position first - 1 predicts the first labelled token
    positions = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    with catalog_head(_unwrapped(model), vocabulary):
        out = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], position_ids=positions, logits_to_keep=keep
        )
    logits = out.logits[:, :-1, :].float()
    wanted = labels[:, first:]
    labelled = wanted != IGNORE
    if vocabulary is not None:  # vocabulary ids -> columns of the restricted logits
        wanted = torch.where(labelled, vocabulary.slot[wanted.clamp(min=0)], wanted)
    if not (teacher_weight and "soft_row" in batch and len(batch["soft_row"])):
        return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), wanted.reshape(-1), ignore_index=IGNORE)
    # one log-sum-exp over the vocabulary serves both terms: CE(q) = lse - sum_t q_t * logit_t
    lse = torch.logsumexp(logits, dim=-1)
    hard = (lse - logits.gather(-1, wanted.clamp(min=0).unsqueeze(-1)).squeeze(-1)) * labelled
    rows, cols, of = batch["soft_row"], batch["soft_col"] - first, batch["soft_of"]
    soft_token = vocabulary.slot[batch["soft_token"]] if vocabulary is not None else batch["soft_token"]
    weighted = batch["soft_prob"] * logits[rows[of], cols[of], soft_token]
    soft = lse[rows, cols] - torch.zeros(len(rows), dtype=weighted.dtype, device=weighted.device).index_add_(0, of, weighted)
    return (hard.sum() + teacher_weight * (soft - hard[rows, cols]).sum()) / labelled.sum()


def _unwrapped(model: Any) -> Any:
    """The model inside accelerate's distributed wrapper (whose forward still runs it)."""
    return getattr(model, "module", model)


def _gradient_finite(accelerator: Any, model: Any, max_grad_norm: float | None) -> bool:
    """Clip the accumulated gradient (when ``max_grad_norm`` is set) and say whether its norm is
    finite. A step whose gradient is not finite is skipped: clipping cannot mend it, and one such
    step turns every weight into NaN for the rest of the run (seen once on a GPU: a finite loss
    and a non-finite gradient at step 81 of 332 on MovieLens, bf16 autocast, batches of 16)."""
    if accelerator.scaler is not None:
        return True  # fp16's loss scaler skips such steps itself, and must see them to lower its scale
    norm = accelerator.clip_grad_norm_(model.parameters(), max_grad_norm or math.inf)
    return norm is None or bool(torch.isfinite(torch.as_tensor(norm)))


# ---------------------------------------------------------------------- checkpoints
def _checkpoints(work: Path) -> list[Path]:
    folder = work / "checkpoints"
    found = [p for p in folder.glob("step-*") if (p / _CHECKPOINT_DONE).is_file()] if folder.is_dir() else []
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def _save_checkpoint(accelerator: Any, work: Path, state: dict[str, Any], keep: int) -> None:
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
        (tmp / _CHECKPOINT_DONE).write_text(json.dumps(state), encoding="utf-8")
    for old in _checkpoints(work)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def _clean_tmp(work: Path) -> None:
    clean_stale(work / "checkpoints")


# ---------------------------------------------------------------------- training
def _mixed_precision(setting: str) -> str:
    if setting == "bf16" and not torch.cuda.is_available() and not cpu_has_bf16():
        log.warning(
            "bf16 autocast on this CPU (no AVX512-BF16 or AMX) is emulated and slower than fp32: "
            "--mixed-precision auto picks fp32 here"
        )
    if setting != "auto":
        return setting
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_bf16() else "no"


def _load_trainable(config: TrainConfig, dataset: Dataset) -> Recommender:
    """The base model in fp32 (training precision is the accelerator's business), as a
    Recommender so prompts and titles are built by the inference code."""
    rec = Recommender(dataset.catalog, model=config.model, dtype="float32", device="cpu")
    if config.drop_layers:
        drop_layers(rec.lm.model, config.drop_layers)
    if config.lora:
        peft = require("peft", "lora", "LoRA")
        lora = peft.LoraConfig(
            r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
            target_modules="all-linear", task_type="CAUSAL_LM",
        )  # fmt: skip
        rec.lm.model = peft.get_peft_model(rec.lm.model, lora)
    if config.freeze_layers:
        freeze_lower_layers(rec.lm.model, config.freeze_layers)
    return rec


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
    from accelerate.utils import set_seed

    out = Path(out)
    work = out.with_name(out.name + ".work")
    if out.exists() and any(out.iterdir()) and not resume:
        raise DataError(f"{out} already holds a model; choose another --out (nothing was overwritten)")
    existing = _checkpoints(work)
    if existing and not resume:
        raise DataError(f"{work} holds checkpoints of an unfinished run: pass --resume to continue it, or delete it")
    settings_path = work / "config.json"
    settings = asdict(config)
    if resume and settings_path.exists():
        # a setting added since that run was written had its default then
        previous = {**asdict(TrainConfig()), **_LEGACY_SETTINGS, **json.loads(settings_path.read_text(encoding="utf-8"))}
        if previous != settings:
            changed = sorted(k for k in {*previous, *settings} if previous.get(k) != settings.get(k))
            raise DataError(f"--resume with other settings than the run in {work}: {', '.join(changed)}")

    from accelerate.state import AcceleratorState

    # accelerate keeps one process-wide state and refuses a second Accelerator with another
    # precision; each train() call is a run of its own (the process group, PartialState, stays)
    AcceleratorState._reset_state()
    accelerator = Accelerator(
        gradient_accumulation_steps=config.grad_accum,
        mixed_precision=_mixed_precision(config.mixed_precision),
    )
    set_seed(config.seed)
    split = split or split_dataset(dataset, tie_break=config.tie_break, seed=config.seed)
    rec = _load_trainable(config, dataset)
    # written once the model is known to be trainable (--freeze-layers can leave nothing), so a
    # refused run leaves no folder behind
    work.mkdir(parents=True, exist_ok=True)
    _clean_tmp(work)  # what a kill in the middle of writing a checkpoint left behind
    settings_path.write_text(json.dumps(settings, indent=2), encoding="utf-8")
    windows, encoded, left_out = _encode(rec, split, config)
    distilled: dict[str, Any] = {}
    if config.teacher:
        teacher = fit_teacher(config.teacher, dataset, split, seed=config.seed, work=work, progress=progress)
        encoded, distilled = soft_targets(
            rec.pipeline, encoded, windows, config.template_name(), teacher, all_positions=config.mode == "all-positions",
            top=config.teacher_top, progress=progress,
        )  # fmt: skip
        distilled = {"teacher": config.teacher, "weight": config.teacher_weight, "top": config.teacher_top, **distilled}
    vocabulary = _output_vocabulary(rec, encoded, config)
    valid_rows = _validation_rows(split, config)
    pad_id = rec.pad_token_id

    batches = TokenBudgetBatches(
        [len(e.input_ids) for e in encoded], max_rows=config.batch_size, max_tokens=config.max_batch_tokens,
        seed=config.seed, group_by_length=config.group_by_length, phases=window_phases(windows, config.window_order),
    )  # fmt: skip
    loader = torch.utils.data.DataLoader(encoded, batch_sampler=batches, collate_fn=lambda batch: collate(batch, pad_id))
    steps_per_epoch = max(1, math.ceil(len(loader) / config.grad_accum))
    total_steps = config.max_steps or max(1, math.ceil(config.epochs * steps_per_epoch))
    if config.window_order == "recent-last" and total_steps % steps_per_epoch:
        log.warning(
            "recent-last order with %d steps of %d per epoch: the last epoch stops before the most recent windows; "
            "keep fewer windows per user (--samples-per-user) to train them within the steps", total_steps, steps_per_epoch,
        )  # fmt: skip
    model = rec.lm.model
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

    step, epoch, batches_done, samples_seen, targets_seen, elapsed = 0, 0, 0, 0, 0, 0.0
    scores: dict[int, float] = {}  # validation NDCG@10 by checkpoint step
    if resume and existing:
        latest = existing[-1]
        accelerator.load_state(str(latest))
        state = json.loads((latest / _CHECKPOINT_DONE).read_text(encoding="utf-8"))
        step, epoch, batches_done = state["step"], state["epoch"], state["batches_done"]
        samples_seen, targets_seen, elapsed = state["samples_seen"], state.get("targets_seen", 0), state["elapsed_s"]
        scores = {int(k): v for k, v in state.get("valid_ndcg", {}).items()}
        log.warning("resuming from %s (step %d of %d)", latest, step, total_steps)
    log_path = work / "log.jsonl"
    if not resume and log_path.exists():
        log_path.unlink()

    from tqdm.auto import tqdm

    bar = tqdm(total=total_steps, initial=step, desc="fine-tuning", unit="step", disable=not (progress and accelerator.is_main_process))
    started = time.perf_counter() - elapsed
    running_loss: list[float] = []
    while step < total_steps:
        loader.set_epoch(epoch)
        batches = accelerator.skip_first_batches(loader, batches_done) if batches_done else loader
        for batch in batches:
            with accelerator.accumulate(model):
                loss = _loss(model, batch, config.teacher_weight if config.teacher else 0.0, vocabulary)
                accelerator.backward(loss)
                skipped = accelerator.sync_gradients and not _gradient_finite(accelerator, model, config.max_grad_norm)
                if not skipped:
                    optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            batches_done += 1
            samples_seen += batch["input_ids"].shape[0] * accelerator.num_processes
            targets_seen += int(batch["n_targets"].sum()) * accelerator.num_processes
            running_loss.append(float(loss.detach()))
            if not accelerator.sync_gradients:
                continue
            step += 1
            now = time.perf_counter() - started
            record = {"step": step, "epoch": epoch, "loss": float(np.mean(running_loss)), "lr": scheduler.get_last_lr()[0],
                      "samples_seen": samples_seen, "targets_seen": targets_seen, "elapsed_s": round(now, 2),
                      "targets_per_s": targets_seen / max(now, 1e-9)}  # fmt: skip
            running_loss = []
            if skipped:
                record["skipped"] = True
                log.warning("step %d: the gradient is not finite; the step changes no weights", step)
            saving = step % config.save_every == 0 or step >= total_steps
            if saving and valid_rows:
                valid_started = time.perf_counter()
                record["valid_NDCG@10"] = scores[step] = _validate(accelerator.unwrap_model(model), rec, valid_rows, config)
                record["valid_s"] = round(time.perf_counter() - valid_started, 2)
                started += record["valid_s"]  # elapsed time and targets/s count training only
                if accelerator.is_main_process and scores[step] > max((v for s, v in scores.items() if s < step), default=-1.0):
                    with atomic_file(work / _BEST, suffix=".pt") as tmp:  # the best weights so far
                        torch.save({"step": step, "weights": accelerator.unwrap_model(model).state_dict()}, tmp)
            if accelerator.is_main_process:
                with open(log_path, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(record) + "\n")
            bar.set_postfix(loss=f"{record['loss']:.3f}", targets_per_s=f"{record['targets_per_s']:.2f}")
            bar.update(1)
            if saving:
                state = {"step": step, "epoch": epoch, "batches_done": batches_done, "samples_seen": samples_seen,
                         "targets_seen": targets_seen, "elapsed_s": now, "valid_ndcg": scores}  # fmt: skip
                _save_checkpoint(accelerator, work, state, config.keep_checkpoints)
            if step >= total_steps:
                break
        else:
            epoch += 1
            batches_done = 0
    bar.close()
    accelerator.wait_for_everyone()
    elapsed = time.perf_counter() - started
    chosen = max(scores, key=lambda s: (scores[s], -s)) if scores else step  # the earliest best
    if chosen != step:
        best = torch.load(work / _BEST, map_location="cpu", weights_only=True)
        if best["step"] != chosen:  # (a kill between the two writes, and a rerun that scored otherwise)
            raise DataError(f"{work / _BEST} holds step {best['step']}, but validation chose step {chosen}; rerun without --resume")
        accelerator.unwrap_model(model).load_state_dict(best["weights"])
    history = [json.loads(line) for line in log_path.read_text(encoding="utf-8").splitlines()] if log_path.exists() else []
    record = {
        "base_model": config.model or DEFAULT_MODEL_NAME,
        "lora": config.lora,
        "layers": accelerator.unwrap_model(model).config.num_hidden_layers,
        "trained_parameters": sum(p.numel() for p in trained),
        "catalog_hash": dataset.catalog.content_hash,
        "catalog_name": dataset.catalog.name,
        "catalog_items": len(dataset.catalog),
        "mode": config.mode,
        "template": config.template_name(),
        "template_fingerprint": rec.prompts.fingerprint(config.template_name()),
        "dataset": config.dataset or dataset.name,
        "split": split.info,
        "training_examples": len(encoded),
        "training_targets": sum(e.n_targets for e in encoded),
        "targets_left_out": left_out,
        "distillation": distilled or None,
        "output_vocabulary": config.output_vocabulary,
        "output_tokens": vocabulary.size if vocabulary is not None else None,
        "steps": step,
        "steps_skipped_nonfinite": sum(1 for h in history if h.get("skipped")),
        "samples_seen": samples_seen,
        "samples_per_s": samples_seen / max(elapsed, 1e-9),
        "targets_seen": targets_seen,
        "targets_per_s": targets_seen / max(elapsed, 1e-9),
        "elapsed_s": elapsed,
        "device": str(accelerator.device),
        "processes": accelerator.num_processes,
        "mixed_precision": accelerator.mixed_precision,
        "config": settings,
    }
    if scores:
        record.update(
            selected_step=chosen, valid_rows=len(valid_rows),
            valid_NDCG_by_step={str(s): round(v, 5) for s, v in sorted(scores.items())},
        )  # fmt: skip
    if accelerator.is_main_process:
        _write_final(accelerator.unwrap_model(model), rec.tokenizer, out, record, history, config.lora)
        if not os.environ.get("GENREC_KEEP_CHECKPOINTS"):
            shutil.rmtree(work, ignore_errors=True)
    accelerator.wait_for_everyone()
    final_loss = history[-1]["loss"] if history else float("nan")
    return TrainResult(
        out, step, samples_seen, record["samples_per_s"], targets_seen, record["targets_per_s"], final_loss, record
    )


def _output_vocabulary(rec: Recommender, encoded: list[Encoded], config: TrainConfig) -> OutputVocabulary | None:
    """The tokens the training softmax runs over (None: the whole vocabulary): those of the title
    index decoding uses after the training template, as ``Recommender`` builds it. A label (or a
    teacher's token) outside them is refused here, before any step: the model could never be
    taught to write it."""
    if config.output_vocabulary == "full":
        return None
    index = rec.pipeline.index(rec.pipeline.title_context(config.template_name()))
    vocabulary = OutputVocabulary.of_index(index)
    # the true next tokens, and the teacher's (its soft targets sit on the same title tokens)
    parts = [np.asarray(e.labels, dtype=np.int64) for e in encoded] + [e.soft.tokens for e in encoded if e.soft is not None]
    tokens = np.unique(np.concatenate(parts))
    outside = [int(t) for t in tokens[tokens != IGNORE] if vocabulary.slot[int(t)] < 0]
    if outside:
        raise DataError(
            f"{len(outside)} label tokens (first: {outside[:5]}) are not among the {vocabulary.size} tokens of the catalog's "
            f"titles after template {config.template_name()!r}; train with output_vocabulary='full'"
        )
    return vocabulary


def _validation_rows(split: Split, config: TrainConfig) -> list[tuple[int, Example]]:
    """The seeded validation rows checkpoints are scored on (none when ``valid_users`` is 0)."""
    if not config.valid_users:
        return []
    if not split.valid:
        raise DataError("valid_users needs validation rows, and this split has none (a D3 file without a training file?)")
    return list(enumerate(sample_examples(split.valid, config.valid_users, config.seed)))


def _validate(model: Any, rec: Recommender, rows: list[tuple[int, Example]], config: TrainConfig) -> float:
    """Mean NDCG@10 of the model being trained on ``rows``, decoded as the harness does (under the
    run's mixed precision: accelerate's autocast wraps the forward pass). A fresh Recommender
    around the same weights: the training one's prompt-prefix cache holds keys and values computed
    by earlier weights."""
    from ..ranking.protocol import Protocol
    from ..ranking.rows import genrec_ndcg

    scorer = Recommender(
        rec.catalog, model=model, tokenizer=rec.tokenizer, cache_dir=rec.cache_dir, output_vocabulary=config.output_vocabulary
    )  # puts it in eval mode
    score = genrec_ndcg(
        scorer, rows, protocol=Protocol.for_run(rec.catalog, 10, config.seed), constrained=True,
        max_history=config.max_history, template=config.template_name(), batch_size=config.batch_size,
    )  # fmt: skip
    model.train()
    return score


def _encode(rec: Recommender, split: Split, config: TrainConfig) -> tuple[list[Window], list[Encoded], int]:
    """The training windows, their sequences in ``config.mode`` and how many targets the template left out."""
    all_positions = config.mode == "all-positions"
    examples = training_examples(
        split, max_history=config.max_history, samples_per_user=config.samples_per_user, seed=config.seed,
        stride=config.max_history if all_positions else 1,
    )  # fmt: skip
    if not examples:
        raise DataError("no training examples: every training sequence has a single item")
    template = config.template_name()
    key = encoding_key(
        mode=config.mode, template=template, template_sources=rec.prompts.files(),
        tokenizer_hash=tokenizer_fingerprint(rec.tokenizer), catalog_hash=rec.catalog.content_hash, examples=examples,
    )  # fmt: skip
    path = Path(rec.cache_dir) / "training" / f"{key}.npz"
    cached = load_encoded(path)
    if cached is not None:
        encoded, left_out = cached
    else:
        if all_positions:
            encoded, left_out = encode_all_positions(rec.pipeline, examples, template)
        else:
            encoded, left_out = encode_examples(rec.pipeline, examples, template), 0
        save_encoded(path, encoded, left_out)
    if not all_positions:
        return examples, encoded, left_out
    if not any(e.n_targets for e in encoded):
        raise DataError(
            f"template {template!r} leaves every target out in all-positions mode: its answer must "
            f"list the history one title per line, closed by a title_end block (see prompts/sequence.jinja)"
        )
    return examples, encoded, left_out


def _write_final(model: Any, tokenizer: Any, out: Path, record: dict[str, Any], history: list[dict], lora: bool) -> None:
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

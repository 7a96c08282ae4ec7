"""Everything a fine-tuning run builds before its first step: the trainable model (as a
Recommender, so prompts and titles are built by the inference code), the encoded training windows
(cached), a teacher's soft targets, the output vocabulary and the validation rows; and scoring a
checkpoint on those rows as the harness decodes them."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.datasets import Dataset, Example
from ..data.cold import cold_items, without_items
from ..data.splits import Split, sample_examples, split_dataset
from ..decoding import OutputVocabulary, tokenizer_fingerprint
from ..errors import DataError, require
from ..model import cpu_has_bf16
from ..recommender import Recommender
from .checkpoints import clean_tmp
from .config import TrainConfig
from .data import (
    IGNORE, Encoded, Window, encode_all_positions, encode_examples, encoding_key, load_encoded, save_encoded,
    training_examples,
)  # fmt: skip
from .layers import drop_layers, freeze_lower_layers
from .teacher import fit_teacher, soft_targets

__all__ = ["Prepared", "prepare", "encode", "training_vocabulary", "mixed_precision", "validate"]

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """What a run trains on, built once before the first step: the model (as a Recommender, so
    prompts and titles are built by the inference code), its encoded windows, the output
    vocabulary and the validation rows."""

    rec: Recommender
    split: Split
    encoded: list[Encoded]
    windows: list[Window]
    left_out: int
    distilled: dict[str, Any]
    vocabulary: OutputVocabulary | None
    valid_rows: list[tuple[int, Example]]


def prepare(dataset: Dataset, split: Split | None, config: TrainConfig, work: Path, progress: bool) -> Prepared:
    """The model, the encoded windows (with a teacher's soft targets), the output vocabulary and
    the validation rows; the work folder once the model is known to be trainable."""
    split = split or split_dataset(dataset, tie_break=config.tie_break, seed=config.seed, holdout=config.holdout)
    split = without_items(split, cold_items(dataset.catalog, config.cold_items, config.seed))  # never trained on
    rec = _load_trainable(config, dataset)
    # written once the model is known to be trainable (--freeze-layers can leave nothing), so a
    # refused run leaves no folder behind
    work.mkdir(parents=True, exist_ok=True)
    clean_tmp(work)  # what a kill in the middle of writing a checkpoint left behind
    (work / "config.json").write_text(json.dumps(asdict(config), indent=2), encoding="utf-8")
    windows, encoded, left_out = encode(rec, split, config)
    distilled: dict[str, Any] = {}
    if config.teacher:
        teacher = fit_teacher(config.teacher, dataset, split, seed=config.seed, work=work, progress=progress)
        encoded, distilled = soft_targets(
            rec.pipeline, encoded, windows, config.template_name(), teacher, all_positions=config.mode == "all-positions",
            top=config.teacher_top, progress=progress,
        )  # fmt: skip
        distilled = {"teacher": config.teacher, "weight": config.teacher_weight, "top": config.teacher_top, **distilled}
    vocabulary = training_vocabulary(rec, encoded, config)
    return Prepared(rec, split, encoded, windows, left_out, distilled, vocabulary, _validation_rows(split, config))


def mixed_precision(setting: str) -> str:
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


def training_vocabulary(rec: Recommender, encoded: list[Encoded], config: TrainConfig) -> OutputVocabulary | None:
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


def validate(model: Any, rec: Recommender, rows: list[tuple[int, Example]], config: TrainConfig) -> float:
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


def encode(rec: Recommender, split: Split, config: TrainConfig) -> tuple[list[Window], list[Encoded], int]:
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

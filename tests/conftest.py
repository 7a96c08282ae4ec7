"""Shared fixtures.

Tests never touch the user's cache: GENREC_CACHE points at a folder of the repository
(git-ignored), so the default model is converted once per checkout rather than once per run.
Unit tests use a tiny randomly initialised Llama with the real default tokenizer; integration
tests (marker ``integration``) use the real default model.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TEST_CACHE = REPO / ".genrec-test-cache"
ML100K = REPO.parent / "shared" / "datasets" / "ml-100k"

os.environ["GENREC_CACHE"] = str(TEST_CACHE)
os.environ["HF_HUB_OFFLINE"] = "1"  # a test must never wait on the network
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# how many examples each property test runs: x1 in the test suite, more from eval/reliability.py
EXAMPLES_SCALE = max(1, int(os.environ.get("GENREC_EXAMPLES_SCALE", "1")))


@pytest.fixture(scope="session")
def tally():
    """Counts of what the hardening tests checked (outputs, payloads, calls, corruptions).
    Written as JSON to $GENREC_RELIABILITY_OUT at the end of the session, for eval/reliability.py."""
    counts: Counter[str] = Counter()
    yield counts
    out = os.environ.get("GENREC_RELIABILITY_OUT")
    if out:
        tmp = Path(out).with_suffix(".tmp")
        tmp.write_text(json.dumps(dict(sorted(counts.items())), indent=2))
        os.replace(tmp, out)


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    from genrec.model import default_model_dir as convert

    return convert(TEST_CACHE)


@pytest.fixture(scope="session")
def tokenizer(default_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(default_model_dir))


def make_tiny_model(vocab_size: int, seed: int = 0):
    """A 2-layer Llama with the real vocabulary. Weights are drawn wide (std 0.5) so next-token
    distributions are peaked and beam scores rarely tie."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        initializer_range=0.5,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.eval()
    return model


@pytest.fixture(scope="session")
def tiny_model(tokenizer):
    return make_tiny_model(len(tokenizer))


@pytest.fixture
def make_rec(tiny_model, tokenizer, tmp_path):
    """Recommender on the tiny model for a given catalog (title index cached in a temp folder);
    beam search unless ``search`` says otherwise: most tests here are of the decoder, and content
    search (the library's default without a log) has its own (tests/tasks/test_content_search.py)."""
    from genrec import Recommender

    def build(catalog, **kwargs):
        kwargs.setdefault("cache_dir", tmp_path / "cache")
        kwargs.setdefault("search", "beam")
        return Recommender(catalog, model=tiny_model, tokenizer=tokenizer, **kwargs)

    return build


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_model, tokenizer, tmp_path_factory) -> Path:
    """The tiny model saved as a normal transformers directory (for model= paths and the CLI)."""
    path = tmp_path_factory.mktemp("tiny-model")
    tiny_model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def fake_gguf(tmp_path, monkeypatch, tiny_model, tokenizer):
    """A default-model conversion that 'reads' a GGUF by returning the tiny model: fast, same code path."""
    from genrec import model as model_mod

    gguf = tmp_path / "src" / model_mod.DEFAULT_GGUF_FILE
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF" + b"\0" * 100)
    monkeypatch.setattr(model_mod, "default_gguf_path", lambda: gguf)
    import transformers

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: tokenizer)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", lambda *a, **k: tiny_model)
    return gguf


@pytest.fixture(scope="session")
def real_rec():
    """The real default model on the demo catalog."""
    from genrec import Recommender

    return Recommender()


@pytest.fixture(scope="session")
def ml100k_dir() -> Path:
    if not (ML100K / "u.item").is_file():
        pytest.skip(f"MovieLens 100K not found at {ML100K} (research licence: not shipped with genrec)")
    return ML100K


@pytest.fixture(scope="session")
def ray_instance():
    """One local Ray instance for every Ray test of the session: genrec's jobs use an instance
    they find running and leave it running, so each test pays for its actors, not for a Ray start."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=max(os.cpu_count() or 1, 4), include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    ray.shutdown()

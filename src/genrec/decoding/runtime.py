"""Which code runs beam search's model calls: ``runtime`` of Recommender, the CLI and the harness."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .lean import LeanDecoder, lean_support

__all__ = ["RUNTIMES", "check_runtime", "with_runtime"]

#: "torch": genrec's lean loop over the blocks where the model allows it (``lean.py``), else
#: transformers' forward; "transformers": always transformers' forward; "onnxruntime": the blocks
#: exported to ONNX (``onnx_runtime.py``). All three give the same lists, to float rounding.
RUNTIMES = ("torch", "transformers", "onnxruntime")


def check_runtime(runtime: str) -> str:
    if runtime not in RUNTIMES:
        raise ConfigError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    return runtime


def with_runtime(lm: Any, runtime: str, cache_dir: Path) -> Any:
    """``lm`` (a LoadedModel) whose searches run in ``runtime`` (see RUNTIMES; "onnxruntime"
    exports the blocks once, a snapshot of the weights made again for another model)."""
    if check_runtime(runtime) == "transformers":
        return lm
    if runtime == "torch":
        return replace(lm, decoder=LeanDecoder(lm.model)) if lean_support(lm.model) is None else lm
    if getattr(lm.device, "type", str(lm.device)) != "cpu":
        raise ConfigError(f"runtime='onnxruntime' decodes on the CPU; the model is on {lm.device} (pass device='cpu')")
    from ..encoder import model_fingerprint
    from .onnx_runtime import OnnxDecoder

    return replace(lm, decoder=OnnxDecoder.from_model(lm.model, model_fingerprint(lm.model), cache_dir))

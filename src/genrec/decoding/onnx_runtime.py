"""The decoder's model calls through ONNX Runtime: the model's blocks exported once to an ONNX
graph (kept in genrec's cache, keyed by the model's fingerprint) and run by ONNX Runtime's CPU
kernels, which spend less time between operators than eager torch on the calls of one user's
search; calls that feed several users stay in torch, which was as fast there
(eval/notes/2026-12-07-onnx-runtime.md measures both).

``OnnxDecoder`` stands in for the torch model wherever the search calls it: ``model(...)`` (a
prompt, with ``logits_to_keep``) and ``model.base_model(...)`` (beam tokens, their hidden states),
both with a transformers ``DynamicCache`` that it extends as the torch model would. Everything
else (the output layer, the config, the parameters) is the torch model's, so the search's own
code is unchanged. Exact to float rounding: the same blocks, other kernels.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from ..errors import ConfigError, require
from .attention import cache_argument
from .stand_in import StandIn, full_mask, key_shape

__all__ = ["OnnxDecoder", "export_decoder"]

EXPORT_FORMAT = 1  # bump when the graph's inputs or outputs change: older exports are made again
GRAPH_FILE = "decoder.onnx"


class _Blocks(torch.nn.Module):
    """What is exported: the decoder's blocks on new tokens after the cached keys, with an
    additive 4D mask; out come the final hidden states and each layer's new keys and values."""

    def __init__(self, decoder: Any, n_layers: int, config: Any) -> None:
        super().__init__()
        self.decoder, self.n_layers, self.config = decoder, n_layers, config

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, mask: torch.Tensor, *past: torch.Tensor):
        cache = DynamicCache(config=self.config)
        for i in range(self.n_layers):
            cache.update(past[2 * i], past[2 * i + 1], i)
        out = self.decoder(input_ids=input_ids, position_ids=position_ids, attention_mask=mask, use_cache=True, **{cache_argument(self.decoder): cache})
        width = input_ids.shape[1]
        new = [t[:, :, -width:] for layer in cache.layers for t in (layer.keys, layer.values)]
        return (out.last_hidden_state, *new)


def _names(n_layers: int) -> tuple[list[str], list[str]]:
    past = [f"past_{kind}_{i}" for i in range(n_layers) for kind in ("keys", "values")]
    return ["input_ids", "position_ids", "mask", *past], ["hidden", *(f"new_{name[5:]}" for name in past)]


def export_decoder(model: Any, directory: Path) -> Path:
    """Export ``model``'s blocks to ``directory/decoder.onnx`` (with their weights, in files beside
    it above 2 GB, as torch.onnx writes them), written to a temporary folder and renamed, so a
    killed export leaves nothing half-written."""
    config = model.config
    n_layers = config.num_hidden_layers
    if any(type(layer) is not DynamicLayer for layer in DynamicCache(config=config).layers):
        raise ConfigError(f"{type(model).__name__} keeps a sliding-window cache; the ONNX Runtime decoder supports full caches only")
    heads, head_dim = key_shape(config)
    dtype = next(model.parameters()).dtype
    if dtype != torch.float32:
        raise ConfigError(f"the ONNX Runtime decoder runs float32 models (an exact mode); this one is {dtype}")
    # small example shapes: every axis that varies is declared dynamic below
    ids = torch.zeros((1, 2), dtype=torch.long)
    positions = torch.tensor([[3, 4]])
    mask = torch.zeros((1, 1, 2, 5))
    past = [torch.zeros((1, heads, 3, head_dim)) for _ in range(2 * n_layers)]
    inputs, outputs = _names(n_layers)
    dynamic = {"input_ids": {0: "rows", 1: "width"}, "position_ids": {0: "rows", 1: "width"}, "mask": {0: "rows", 2: "width", 3: "keys"}}
    dynamic.update({name: {0: "rows", 2: "cached"} for name in inputs[3:]})
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tmp-onnx-", dir=directory.parent))
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's notes on Python branches: the shapes above are dynamic
            torch.onnx.export(
                _Blocks(model.base_model, n_layers, config).eval(), (ids, positions, mask, *past), str(staging / GRAPH_FILE),
                input_names=inputs, output_names=outputs, dynamic_axes=dynamic, opset_version=17, dynamo=False,
            )  # fmt: skip
        try:
            os.replace(staging, directory)
        except OSError:  # another process exported it meanwhile (or a broken one is in the way)
            shutil.rmtree(directory, ignore_errors=True)
            os.replace(staging, directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory / GRAPH_FILE


class OnnxDecoder(StandIn):
    """A float32 causal LM whose blocks run in ONNX Runtime, for ``beam_search`` and the prompt
    cache; ``from_model`` exports (once, into ``cache_dir``) and loads the session. Calls of more
    than ``max_rows`` rows (users decoded together) run in torch."""

    def __init__(self, model: Any, graph: Path, threads: int | None = None, max_rows: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # pool threads spin between a call's operators (faster than sleeping: 15-20% a call), and
        # stop when the call returns: spinning on, they halved the speed of the search's torch work
        options.add_session_config_entry("session.intra_op.allow_spinning", "1")
        options.add_session_config_entry("session.force_spinning_stop", "1")
        self.session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
        self.model, self.max_rows = model, max_rows
        self.config = model.config
        self.n_layers = model.config.num_hidden_layers
        self.heads, self.head_dim = key_shape(model.config)
        self.cache_arg = cache_argument(model)

    @classmethod
    def from_model(cls, model: Any, fingerprint: str, cache_dir: Path, threads: int | None = None, max_rows: int = 1) -> OnnxDecoder:
        require("onnxruntime", "onnx", "runtime='onnxruntime'")
        key = hashlib.sha256(f"{fingerprint}:{EXPORT_FORMAT}:{torch.__version__}".encode()).hexdigest()[:20]
        directory = Path(cache_dir) / "onnx" / key
        graph = directory / GRAPH_FILE
        if graph.exists():
            try:
                return cls(model, graph, threads, max_rows)
            except Exception:  # noqa: BLE001 -- a truncated or corrupt export: made again below
                pass
        export_decoder(model, directory)
        return cls(model, graph, threads, max_rows)

    def blocks(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, position_ids: torch.Tensor | None, cache: DynamicCache) -> torch.Tensor:
        """Final hidden states of ``input_ids`` after ``cache`` (extended with their keys): a call
        of up to ``max_rows`` rows (users) in ONNX Runtime, a bigger one in torch, where its matrix
        products ran as fast or faster (eval/notes/2026-12-07-onnx-runtime.md)."""
        mask, position_ids = full_mask(input_ids, attention_mask, position_ids, cache.get_seq_length())
        if len(input_ids) > self.max_rows:  # (the blocks torch runs, as the search itself calls them)
            out = self.model.base_model(
                input_ids=input_ids, attention_mask=mask, position_ids=position_ids, use_cache=True, **{self.cache_arg: cache}
            )
            return out.last_hidden_state
        feed = {"input_ids": _array(input_ids), "position_ids": _array(position_ids), "mask": _array(mask)}
        for i, layer in enumerate(cache.layers):
            for kind in ("keys", "values"):
                tensor = getattr(layer, kind) if layer.is_initialized else None
                if tensor is None or tensor.dim() != 4:
                    tensor = torch.zeros((len(input_ids), self.heads, 0, self.head_dim))  # nothing cached yet
                feed[f"past_{kind}_{i}"] = _array(tensor)
        hidden, *new = self.session.run(None, feed)
        for i in range(self.n_layers):
            cache.update(torch.from_numpy(new[2 * i]), torch.from_numpy(new[2 * i + 1]), i)
        return torch.from_numpy(hidden)


def _array(tensor: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(tensor.detach().cpu().numpy())

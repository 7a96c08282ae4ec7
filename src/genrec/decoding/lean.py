"""The search's model calls through a leaner loop over a Llama or Qwen2 model's own blocks, on a CPU.

``LeanDecoder`` stands in for the model wherever beam search calls it (``model(...)`` for a
prompt, ``model.base_model(...)`` for beam tokens), as ``OnnxDecoder`` does. Each block runs the
operations of transformers' forward for these architectures, on the model's own modules and
weights, read at every call (so a model trained, cut or reloaded in place is what runs), without
what a single call of a search does not need, and with these changes, measured on this project's
2-core CPUs (eval/notes/2026-12-07-lean-decoder.md):

- attention runs on the key/value heads as they are (``enable_gqa``), where transformers copies
  them to every query head when there is a mask: the same numbers (bitwise on calls of several
  tokens; to float rounding on one-token calls, which transformers computes another way);
- in bfloat16, each linear layer's weight (without a bias) is packed once into oneDNN's blocked
  layout (the kernels torch's inductor uses for a frozen model), which transformers' forward
  reorders at every call; used only where a probe finds the packed product bitwise equal to the
  plain one, and packed again when a weight changes;
- in float32 on AMD CPUs, the larger linear layers (the output layer included) run oneDNN's packed
  products, not MKL's, which ran them at about half the speed there (equal to float rounding,
  not to the bit: eval/notes/2026-12-07-onednn-fp32.md). On other CPUs float32 runs the plain
  products, bit for bit transformers' (``runtime="transformers"`` keeps them everywhere).

A model of another architecture, on another device or with another attention implementation is
not given one (``lean_support`` says why), and a call that finds a block's layers replaced since
(LoRA adapters, for one) runs transformers' forward instead.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from ..errors import ConfigError
from .attention import cache_argument
from .stand_in import StandIn, full_mask

__all__ = ["LeanDecoder", "lean_support"]

#: architectures whose decoder layer is exactly: RMS norm, attention with rotary positions (biases
#: allowed), residual, RMS norm, gated MLP, residual
ARCHITECTURES = {"llama": "LlamaDecoderLayer", "qwen2": "Qwen2DecoderLayer"}
_PROJECTIONS = (("self_attn", "q_proj"), ("self_attn", "k_proj"), ("self_attn", "v_proj"), ("self_attn", "o_proj"),
                ("mlp", "gate_proj"), ("mlp", "up_proj"), ("mlp", "down_proj"))  # fmt: skip
#: row counts the packing probe checks (one user's calls to several users' beams)
_PROBE_ROWS = (1, 2, 7, 10, 33, 64, 160)
#: CPUs whose MKL float32 products of a few rows ran at about half oneDNN's speed (an AMD EPYC:
#: a 10-token call of the default model 105 ms against 57; on an Intel Xeon the two were level)
_ONEDNN_FP32_VENDORS = ("AuthenticAMD",)
#: float32 layers with fewer weights keep MKL's products: a 192 x 576 key/value projection ran
#: slower in oneDNN on the CPU where the 576 x 576 and larger ones ran 1.3-4.7x faster from 10 rows up
_FP32_PACK_MIN_WEIGHTS = 200_000


def lean_support(model: Any) -> str | None:
    """None when ``model`` can be decoded by a LeanDecoder, else why not."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type not in ARCHITECTURES:
        return f"model type {model_type!r} (supported: {', '.join(ARCHITECTURES)})"
    if getattr(config, "_attn_implementation", None) != "sdpa":
        return f"attention implementation {getattr(config, '_attn_implementation', None)!r} (supported: sdpa)"
    if getattr(config, "pretraining_tp", 1) not in (None, 1):
        return "tensor-parallel pretraining slices (pretraining_tp > 1)"
    if any(type(layer) is not DynamicLayer for layer in DynamicCache(config=config).layers):
        return "sliding-window attention layers"
    device = next(model.parameters()).device
    if device.type != "cpu":
        return f"device {device} (the lean decoder is for the CPU)"
    if not isinstance(model.get_output_embeddings(), torch.nn.Linear):
        return "an output layer that is not a linear layer"
    layers = getattr(model.base_model, "layers", None)
    if not layers:
        return "no list of decoder layers"
    for layer in layers:
        problem = _block_problem(layer, ARCHITECTURES[model_type])
        if problem is not None:
            return problem
    return None


def _block_problem(layer: Any, layer_class: str) -> str | None:
    if type(layer).__name__ != layer_class:
        return f"a decoder layer of type {type(layer).__name__} (expected {layer_class})"
    for part, name in _PROJECTIONS:
        module = getattr(getattr(layer, part, None), name, None)
        if type(module) is not torch.nn.Linear:
            return f"{part}.{name} is {type(module).__name__}, not a plain linear layer"
    return None


class LeanDecoder(StandIn):
    """Beam search's model calls through a lean loop over ``model``'s blocks (see the module's
    docstring); everything else (config, parameters, generation settings) is the model's.
    ``pack``: whether linear layers run oneDNN's packed products; None decides at the first call
    (bf16: where they are bitwise the plain ones; float32: on AMD CPUs, where they agree to
    float rounding)."""

    def __init__(self, model: Any, pack: bool | None = None) -> None:
        problem = lean_support(model)
        if problem is not None:
            raise ConfigError(f"no lean decoder for this model: {problem}")
        self.model = model
        self.layer_class = ARCHITECTURES[model.config.model_type]
        # the architecture's own rotary function: the positions enter exactly as in its forward
        self._rotary = sys.modules[type(model.base_model.layers[0]).__module__].apply_rotary_pos_emb
        self._pack = pack  # None: decided at the first call
        self._packed: dict[int, tuple[torch.Tensor, int, torch.Tensor]] = {}
        self._lock = threading.Lock()
        self._cache_arg = cache_argument(model)

    @property
    def pack(self) -> bool:
        """Whether linear layers run oneDNN's packed products (in float32, the larger layers
        only). Decided at the first call, on the thread that decodes, not at construction: bf16
        products on AMX from a second thread (a server loads on one thread and decodes on
        another) ran 2.4x slower, on both threads (eval/notes/2026-12-07-lean-decoder.md)."""
        if self._pack is None:
            with self._lock:
                if self._pack is None:
                    weight = self.model.base_model.layers[0].self_attn.q_proj.weight
                    if weight.dtype == torch.bfloat16:
                        self._pack = _packing_is_exact(weight)
                    else:
                        onednn_faster = weight.dtype == torch.float32 and cpu_vendor() in _ONEDNN_FP32_VENDORS
                        self._pack = onednn_faster and _packing_is_close(weight)
        return self._pack

    def get_output_embeddings(self) -> Any:
        head = self.model.get_output_embeddings()
        return _PackedHead(self, head) if self.pack else head

    def blocks(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, position_ids: torch.Tensor | None, cache: DynamicCache) -> torch.Tensor:
        """Final hidden states (after the last norm) of ``input_ids`` after ``cache``, which gains
        their keys and values."""
        base = self.model.base_model
        layers = base.layers
        if any(_block_problem(layer, self.layer_class) for layer in layers):  # replaced since (adapters): transformers' own forward
            out = base(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=True, **{self._cache_arg: cache})
            return out.last_hidden_state
        x = base.embed_tokens(input_ids)
        mask, position_ids = full_mask(input_ids, attention_mask, position_ids, cache.get_seq_length(), x.dtype)
        cos, sin = base.rotary_emb(x, position_ids)
        rows, width = input_ids.shape
        for layer in layers:
            attn, mlp = layer.self_attn, layer.mlp
            h = layer.input_layernorm(x)
            shape = (rows, width, -1, attn.head_dim)
            q = self.linear(attn.q_proj, h).view(shape).transpose(1, 2)
            k = self.linear(attn.k_proj, h).view(shape).transpose(1, 2)
            v = self.linear(attn.v_proj, h).view(shape).transpose(1, 2)
            q, k = self._rotary(q, k, cos, sin)
            k, v = cache.update(k, v, attn.layer_idx)
            a = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=attn.scaling, enable_gqa=True)
            x = x + self.linear(attn.o_proj, a.transpose(1, 2).reshape(rows, width, -1))
            h = layer.post_attention_layernorm(x)
            x = x + self.linear(mlp.down_proj, mlp.act_fn(self.linear(mlp.gate_proj, h)) * self.linear(mlp.up_proj, h))
        return base.norm(x)

    def linear(self, module: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
        weight = module.weight
        small = weight.dtype != torch.bfloat16 and weight.numel() < _FP32_PACK_MIN_WEIGHTS
        if not self.pack or module.bias is not None or small:  # (the probes check products without a bias)
            return torch.nn.functional.linear(x, weight, module.bias)
        packed = self._packed_weight(module)
        flat = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, x.shape[-1]), packed, None, "none", [], "")
        return flat.view(*x.shape[:-1], -1)

    def _packed_weight(self, module: torch.nn.Linear) -> torch.Tensor:
        # keyed by the layer: a weight replaced by another takes the old one's place (and memory)
        weight = module.weight
        entry = self._packed.get(id(module))
        if entry is None or entry[0] is not weight or entry[1] != weight._version:
            with self._lock:  # (a weight changed in place, by training or loading, is packed again)
                entry = (weight, weight._version, _pack(weight))
                self._packed[id(module)] = entry
        return entry[2]


class _PackedHead:
    """The output layer with the decoder's packed weight; ``weight`` and ``bias`` stay the model's
    (a catalog output vocabulary slices them)."""

    def __init__(self, owner: LeanDecoder, head: torch.nn.Linear) -> None:
        self.owner, self.weight, self.bias = owner, head.weight, head.bias
        self._head = head

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.owner.linear(self._head, hidden)


def _pack(weight: torch.Tensor) -> torch.Tensor:
    # (64: the row count the kernel is tuned for; with 1, products of some row counts came out
    # other than the plain ones in the last bits)
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach(), 64)


def _packing_is_exact(weight: torch.Tensor) -> bool:
    """Whether this torch has the packed kernels and they give the plain product bit for bit."""
    return _packing_agrees(weight, torch.equal)


def _packing_is_close(weight: torch.Tensor) -> bool:
    """Whether this torch has the packed kernels and they give the plain product to float rounding
    (another summation order; a kernel that is wrong is off by far more)."""
    return _packing_agrees(weight, lambda ours, plain: bool((ours - plain).abs().max() <= 1e-4 * (1.0 + plain.abs().max())))


def _packing_agrees(weight: torch.Tensor, agree: Callable[[torch.Tensor, torch.Tensor], bool]) -> bool:
    try:
        if not torch.backends.mkldnn.is_available():
            return False
        packed = _pack(weight)
        generator = torch.Generator().manual_seed(0)
        for rows in _PROBE_ROWS:
            x = torch.randn((rows, weight.shape[1]), generator=generator).to(weight.dtype)
            ours = torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")
            if not agree(ours, torch.nn.functional.linear(x, weight)):
                return False
        return True
    except (RuntimeError, AttributeError, NotImplementedError):
        return False


def cpu_vendor() -> str | None:
    """The CPU's vendor as Linux reports it (``GenuineIntel``, ``AuthenticAMD``); None elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None

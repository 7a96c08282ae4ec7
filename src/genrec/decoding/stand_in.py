"""What stands in for a transformers causal LM where beam search calls the model (``model(...)``
for a prompt, ``model.base_model(...)`` for beam tokens): ``StandIn``, the base of the lean and
ONNX Runtime decoders, with its outputs, the cache it was given under either name, and the 4D
mask transformers would build from a 2D one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache

__all__ = ["StandIn", "DecoderOutput", "cache_of", "full_mask", "key_shape"]


@dataclass
class DecoderOutput:
    last_hidden_state: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    past_key_values: DynamicCache | None = None


def key_shape(config: Any) -> tuple[int, int]:
    """Key/value heads and their width: a cached layer is ``[rows, heads, positions, width]``."""
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    return heads, getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def cache_of(cache: DynamicCache | None, past_key_values: DynamicCache | None, config: Any) -> DynamicCache:
    """The cache a call was given (under either name this transformers version uses), or a new one."""
    given = cache if cache is not None else past_key_values
    return given if given is not None else DynamicCache(config=config)


def full_mask(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    position_ids: torch.Tensor | None,
    cached: int,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The additive 4D mask (in ``dtype``) and positions transformers would build: a 4D mask is
    used as it is; a 2D one (keys: cached then new; 1 = real) or none becomes causal with padding
    masked. Masked entries are the dtype's lowest finite value, not -inf, so a padding query that
    sees no key gets finite (unused) outputs rather than NaN."""
    rows, width = input_ids.shape
    device = input_ids.device
    if attention_mask is not None and attention_mask.dim() == 4:
        mask = attention_mask.to(dtype)
    else:
        keys = torch.ones((rows, cached + width), dtype=torch.bool, device=device) if attention_mask is None else attention_mask.bool()
        causal = torch.arange(cached + width, device=device).view(1, -1) <= (cached + torch.arange(width, device=device)).view(-1, 1)
        allowed = causal.unsqueeze(0) & keys.unsqueeze(1)
        mask = torch.zeros((rows, 1, width, cached + width), dtype=dtype, device=device)
        mask.masked_fill_(~allowed.unsqueeze(1), torch.finfo(dtype).min)
    if position_ids is None:
        position_ids = (cached + torch.arange(width, device=device)).view(1, -1).expand(rows, -1)
    return mask, position_ids


class StandIn:
    """Runs a causal LM's blocks its own way; everything else (the output layer, config,
    parameters, generation settings) stays the model's. A subclass sets ``self.model`` and gives
    ``blocks(input_ids, attention_mask, position_ids, cache)``: the final hidden states (after the
    last norm), the mask as the caller gave it, ``cache`` extended with the new keys."""

    model: Any

    def blocks(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, position_ids: torch.Tensor | None, cache: DynamicCache) -> torch.Tensor:
        raise NotImplementedError

    def parameters(self):
        return self.model.parameters()

    def __getattr__(self, name: str) -> Any:
        if name == "model":  # (not set yet: no model to ask)
            raise AttributeError(name)
        return getattr(self.model, name)

    @property
    def base_model(self) -> _BaseModel:
        return _BaseModel(self)

    def __call__(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
        past_key_values: DynamicCache | None = None, use_cache: bool = True, logits_to_keep: int | torch.Tensor = 0,
        cache: DynamicCache | None = None,
    ) -> DecoderOutput:  # fmt: skip
        cache = cache_of(cache, past_key_values, self.model.config)
        hidden = self.blocks(input_ids, attention_mask, position_ids, cache)
        # as transformers: the last ``n`` positions (0: all), or the positions a tensor lists
        kept = hidden[:, logits_to_keep] if isinstance(logits_to_keep, torch.Tensor) else hidden[:, -logits_to_keep:]
        return DecoderOutput(logits=self.get_output_embeddings()(kept), past_key_values=cache)


class _BaseModel:
    """``model.base_model``: hidden states only (the search applies the output layer to the rows it keeps)."""

    def __init__(self, owner: StandIn) -> None:
        self.owner = owner

    def __call__(self, input_ids, attention_mask=None, position_ids=None, past_key_values=None, use_cache=True, cache=None) -> DecoderOutput:
        cache = cache_of(cache, past_key_values, self.owner.model.config)
        return DecoderOutput(last_hidden_state=self.owner.blocks(input_ids, attention_mask, position_ids, cache), past_key_values=cache)

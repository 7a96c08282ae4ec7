"""The decoder stack as training sees it: which layers learn (``freeze_lower_layers``) and which
exist at all (``drop_layers``).

Dropping a block of layers before fine-tuning makes a shallower model of the same kind: every
forward pass, in training and in decoding, runs fewer layers, and the model written at the end is
a plain transformers model whose config counts the layers it kept. Gromov et al. (2024, "The
Unreasonable Ineffectiveness of the Deeper Layers") drop a contiguous block of the deeper layers,
keeping the last one, and heal the cut by fine-tuning; training here is that healing.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import DataError

__all__ = ["decoder_layers", "drop_layers", "freeze_lower_layers", "parse_layers"]


def decoder_layers(model: Any) -> torch.nn.ModuleList:
    """The model's stack of decoder layers, bottom first: the ModuleList as long as the config's
    ``num_hidden_layers`` (``model.model.layers`` in Llama-style models, ``transformer.h`` in GPT-2)."""
    return _decoder_stack(model)[1]


def _decoder_stack(model: Any) -> tuple[str, torch.nn.ModuleList]:
    """``decoder_layers`` with its module name ("model.layers"), for replacing it."""
    count = getattr(model.config, "num_hidden_layers", None)
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == count:
            return name, module
    raise DataError(f"cannot find the decoder layers of {type(model).__name__} (a list of {count} modules)")


def freeze_lower_layers(model: Any, n: int) -> None:
    """Keep the input embeddings (and an LM head tied to them) and the ``n`` lowest decoder layers
    as they are. Backpropagation then stops at layer ``n``: no gradient is computed below it, so a
    step costs the forward pass plus the backward pass of the upper layers only (measured in
    eval/notes/2026-12-01-movielens-cpu-recipes.md), and the optimizer holds state for the trained weights alone."""
    layers = decoder_layers(model)
    if n >= len(layers):
        raise DataError(f"freeze_layers={n} leaves nothing to train: the model has {len(layers)} layers")
    for module in (model.get_input_embeddings(), *layers[:n]):
        module.requires_grad_(False)


def parse_layers(spec: str) -> list[int]:
    """Layer numbers from ``"14-28"`` or ``"3,14-28"`` (0-based, ranges inclusive), sorted and unique."""
    numbers: set[int] = set()
    for part in spec.split(","):
        first, dash, last = part.strip().partition("-")
        try:
            lo = int(first)
            hi = int(last) if dash else lo
        except ValueError:
            raise DataError(f"drop_layers {spec!r}: {part.strip()!r} is not a layer number or a range such as 14-28") from None
        if lo < 0 or hi < lo:
            raise DataError(f"drop_layers {spec!r}: {part.strip()!r} is not a range of layer numbers from 0 up")
        numbers.update(range(lo, hi + 1))
    return sorted(numbers)


def drop_layers(model: Any, spec: str) -> list[int]:
    """Remove the decoder layers ``spec`` names (``parse_layers``) from ``model`` in place and
    return the numbers of the layers kept, in their original numbering. The kept layers are
    renumbered for the key/value cache and the config counts them, so the model saves, loads and
    decodes as any model of its kind."""
    name, layers = _decoder_stack(model)
    dropped = set(parse_layers(spec))
    if max(dropped) >= len(layers):
        raise DataError(f"drop_layers {spec!r}: the model has layers 0-{len(layers) - 1}")
    kept = [i for i in range(len(layers)) if i not in dropped]
    if not kept:
        raise DataError(f"drop_layers {spec!r} drops all {len(layers)} layers")
    parent, _, attribute = name.rpartition(".")
    stack = torch.nn.ModuleList(layers[i] for i in kept)
    setattr(model.get_submodule(parent), attribute, stack)
    for new, layer in enumerate(stack):
        for module in layer.modules():
            if hasattr(module, "layer_idx"):  # the attention's slot in the key/value cache
                module.layer_idx = new
    model.config.num_hidden_layers = len(kept)
    if isinstance(getattr(model.config, "layer_types", None), list):  # per-layer attention kinds, where a model has them
        model.config.layer_types = [model.config.layer_types[i] for i in kept]
    return kept

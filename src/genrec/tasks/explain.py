"""Explanations (template ``explain``): why an item fits a history, in the model's words, with
the catalog items the text names grounded."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import GenerationConfig

from ..grounding import Match
from ..model import eos_token_ids
from .host import TaskHost
from .results import Explanation

__all__ = ["explain", "generate_text", "unique_matches"]


def explain(
    host: TaskHost,
    history: Sequence[Any],
    item: Any,
    *,
    max_new_tokens: int = 96,
    do_sample: bool = False,
    temperature: float = 0.7,
    top_p: float = 0.9,
    seed: int | None = None,
    template: str = "explain",
) -> Explanation:
    """Greedy (deterministic) by default; ``do_sample=True`` samples reproducibly with ``seed``."""
    pipeline, catalog = host.pipeline, host.catalog
    host.limits.check_max_new_tokens(max_new_tokens)
    (position,) = pipeline.resolve([item], "item")
    history_positions = pipeline.resolve(history)
    text = pipeline.render(template, pipeline.items(history_positions), None, item=catalog.item_at(position))
    prompt_ids = pipeline.encode(text)
    pipeline.check_fits(len(prompt_ids) + max_new_tokens, "the explanation prompt and answer")
    answer = generate_text(host, prompt_ids, max_new_tokens, do_sample=do_sample, temperature=temperature, top_p=top_p, seed=seed)
    mentions = [m for _, matches in catalog.grounder.find_mentions(answer) for m in matches]
    return Explanation(catalog.ids[position], catalog.titles[position], answer, unique_matches(mentions))


def generate_text(
    host: TaskHost,
    prompt_ids: list[int],
    max_new_tokens: int,
    *,
    do_sample: bool,
    temperature: float,
    top_p: float,
    seed: int | None,
) -> str:
    """Free text after the prompt, up to the end of the answer."""
    tokenizer = host.lm.tokenizer
    # an explicit configuration: an Instruct model's generation_config must not turn sampling on
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=do_sample,
        num_beams=1,
        eos_token_id=list(host.end_ids) or eos_token_ids(tokenizer),
        pad_token_id=host.pad_token_id,
        **({"temperature": temperature, "top_p": top_p} if do_sample else {}),
    )
    ids = torch.tensor([prompt_ids], device=host.lm.device)
    with torch.random.fork_rng(devices=[]), torch.inference_mode():
        if seed is not None:
            torch.manual_seed(seed)
        out = host.lm.model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=config)
    return tokenizer.decode(out[0, len(prompt_ids) :], skip_special_tokens=True).strip()


def unique_matches(matches: Sequence[Match]) -> list[Match]:
    """The first match of each item, in order."""
    seen: dict[str, Match] = {}
    for m in matches:
        seen.setdefault(m.item_id, m)
    return list(seen.values())

"""Synthetic but realistic catalogs for the speed benchmarks.

Titles are 1-6 real English words taken from the default tokenizer's vocabulary (so first words
vary widely and tokenise like real titles), half of them with a year, 5-15 tokens each.
"""

from __future__ import annotations

import random
import re
from typing import Any


def vocabulary_words(tokenizer: Any, min_len: int = 3) -> list[str]:
    """Whole words the tokenizer knows with a leading space ("ĠMatrix" -> "Matrix")."""
    words = set()
    for token in tokenizer.get_vocab():
        if token.startswith("Ġ") and re.fullmatch(r"[a-z]+", token[1:]) and len(token) - 1 >= min_len:
            words.add(token[1:].capitalize())
    return sorted(words)


def synthetic_titles(n: int, words: list[str], seed: int = 0) -> list[str]:
    """``n`` distinct titles."""
    rng = random.Random(seed)
    connectors = ["of", "the", "and", "in", "a"]
    out: set[str] = set()
    while len(out) < n:
        count = rng.randint(2, 6)
        parts = [rng.choice(words)]
        for _ in range(count - 1):
            parts.append(rng.choice(connectors) if rng.random() < 0.2 else rng.choice(words))
        title = " ".join(parts)
        if rng.random() < 0.5:
            title += f" ({rng.randint(1920, 2025)})"
        out.add(title)
    titles = sorted(out)
    rng.shuffle(titles)
    return titles


def product_titles(n: int, words: list[str], seed: int = 0) -> list[str]:
    """``n`` distinct product-like titles, 30-60 tokens each: a brand and a product line shared by
    many items, then a specification that differs in a few places (size, pack, colour), as in
    marketplace catalogs, where most title tokens follow from the ones before them."""
    rng = random.Random(seed)
    brands = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 2))) for _ in range(max(8, n // 400))]
    lines = {b: [" ".join(rng.choice(words) for _ in range(rng.randint(3, 6))) for _ in range(rng.randint(3, 12))] for b in brands}
    specs = [" ".join(rng.choice(words).lower() for _ in range(rng.randint(6, 14))) for _ in range(max(20, n // 50))]
    colours = ["Black", "White", "Clear", "Blue", "Red", "Green", "Assorted", "Stainless Steel"]
    out: set[str] = set()
    while len(out) < n:
        brand = rng.choice(brands)
        title = (f"{brand} {rng.choice(lines[brand])}, {rng.choice(specs)}, {rng.randint(1, 500)} "
                 f"{rng.choice(['mm', 'ml', 'inch', 'oz'])}, Pack of {rng.choice([1, 2, 5, 10, 12, 25, 50, 100])}, "
                 f"{rng.choice(colours)}")  # fmt: skip
        out.add(title)
    titles = sorted(out)
    rng.shuffle(titles)
    return titles


def perturb(title: str, rng: random.Random) -> str:
    """A query as people (or other LLMs) write titles: misspelt, reordered or partial."""
    words = title.split()
    kind = rng.choice(["typo", "typo2", "reorder", "partial", "lower"])
    if kind in ("typo", "typo2"):
        chars = list(title)
        for _ in range(1 if kind == "typo" else 2):
            i = rng.randrange(len(chars))
            op = rng.choice(["drop", "swap", "double", "replace"])
            if op == "drop" and len(chars) > 4:
                del chars[i]
            elif op == "swap" and i + 1 < len(chars):
                chars[i], chars[i + 1] = chars[i + 1], chars[i]
            elif op == "double":
                chars.insert(i, chars[i])
            else:
                chars[i] = rng.choice("abcdefghijklmnopqrstuvwxyz")
        return "".join(chars)
    if kind == "reorder" and len(words) > 1:
        rng.shuffle(words)
        return " ".join(words)
    if kind == "partial" and len(words) > 2:
        keep = rng.randint(2, len(words) - 1)
        return " ".join(words[:keep])
    return title.lower()

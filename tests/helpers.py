"""Catalogs the tests share."""

from __future__ import annotations

from genrec import Catalog

TITLES = [
    "Alien",
    "Aliens",
    "Alien 3",
    "Heat",
    "Heat 2",
    "The Matrix",
    "The Matrix Reloaded",
    "The Matrix Revolutions",
    "Amélie",
    "東京物語",
    "Crouching Tiger, Hidden Dragon",
    "Se7en",
    "12 Angry Men",
    "Up",
    "WALL·E",
    "The Thing",
    "The Thin Red Line",
    "Thief",
    "Jaws",
    "Jaws 2",
    "🎬 Emoji: The Movie",
]


def catalog_of(titles, **extra):
    return Catalog.from_records([{"item_id": f"i{n}", "title": t, **extra} for n, t in enumerate(titles)])

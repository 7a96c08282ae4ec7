"""Catalogs and datasets the tests share."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from genrec import Catalog
from genrec.data.datasets import Dataset

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


def write_d3(folder: Path) -> tuple[Path, Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    info = folder / "info.txt"
    info.write_text("<a_1><b_2>\tWidget One\t10\n<a_3><b_4>\tGadget \"Pro\"\t11\n<a_5><b_6>\tThing Three\t12\n")
    head = "user_id,history_item_title,item_title,history_item_id,item_id\n"
    test = folder / "test.csv"
    test.write_text(head + "u1,\"['Widget One', 'Gadget']\",Thing Three,\"['10', '11']\",12\nu2,\"['Thing Three']\",Widget One,\"[12]\",10\n")
    train = folder / "train.csv"
    train.write_text(head + "".join(f"u{n},\"['x']\",y,\"[10, 11]\",12\n" for n in range(20)))
    return test, info, train


def chain_dataset(n_users=40, n_items=30, length=12, seed=0, titles=None):
    """Users walk the items in order (i -> i+1): transitions are learnable, popularity is flat."""
    rng = np.random.default_rng(seed)
    titles = titles or [f"Film Number {i}" for i in range(n_items)]
    n_items = len(titles)
    catalog = Catalog.from_records([{"item_id": f"m{i}", "title": t} for i, t in enumerate(titles)], kind="movie")
    rows = []
    for u in range(n_users):
        start = int(rng.integers(0, n_items))
        for t in range(length):
            rows.append({"user_id": f"u{u}", "item_id": f"m{(start + t) % n_items}", "timestamp": t})
    frame = pd.DataFrame(rows)
    frame["row"] = range(1, len(frame) + 1)
    return Dataset(name="chain", catalog=catalog, interactions=frame)


def split_dataset_with_unique_holdouts(n_users=6, n_items=40):
    """Each user's last two items (validation, test) appear nowhere else in their sequence."""
    records = [{"item_id": f"m{i}", "title": f"Film Number {i}"} for i in range(n_items)]
    catalog = Catalog.from_records(records, kind="movie", name="toy")
    rows = []
    for u in range(n_users):
        seq = [f"m{(u + t) % 20}" for t in range(6)] + [f"m{20 + 2 * u}", f"m{21 + 2 * u}"]
        rows += [{"user_id": f"u{u}", "item_id": item, "timestamp": t} for t, item in enumerate(seq)]
    frame = pd.DataFrame(rows)
    frame["row"] = range(1, len(frame) + 1)
    return Dataset(name="toy", catalog=catalog, interactions=frame)


def load_script(path: Path) -> Any:
    """A script (eval/*.py) imported as a module, to test its parts."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # (as an import does: a dataclass of the script looks its module up there)
    spec.loader.exec_module(module)
    return module


def script_main(path: Path, argv: list[str]) -> int:
    """A script's ``main(argv)`` run in this process: the same code as a script run, without a
    fresh interpreter and its imports (each test still runs its script once as a real process)."""
    return load_script(path).main(argv)


# a small film catalog and a log whose co-occurrence no word predicts (tests of Recommender.fit)
SERIES = [
    ("a0", "Alien", "Horror|Sci-Fi"), ("a1", "Aliens", "Action|Sci-Fi"), ("t0", "The Terminator", "Action|Sci-Fi"),
    ("t1", "Terminator 2", "Action|Sci-Fi"), ("c0", "Toy Story", "Animation|Comedy"), ("c1", "Toy Story 2", "Animation|Comedy"),
    ("r0", "Titanic", "Romance|Drama"), ("r1", "Casablanca", "Romance|Drama"), ("x0", "Heat", "Crime"),
]  # fmt: skip


def the_log() -> dict[str, list[str]]:
    """Whoever watches Alien watches Heat next (no word says so); Toy Story 2 is never watched."""
    log = {f"u{n}": ["t0", "a0", "x0"] for n in range(12)}
    log.update({f"v{n}": ["r1", "c0", "r0"] for n in range(12)})
    log["w0"] = ["t1"]  # one interaction: it only trains
    return log


def series_catalog(rows=SERIES):
    """The films of ``SERIES`` (or other rows of the same shape) as a catalog with genres."""
    from genrec import Catalog

    return Catalog.from_records([{"item_id": i, "title": t, "genres": g} for i, t, g in rows], kind="movie")

"""RecBole atomic files: the files' own split, titles out of UniSRec-style item text."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from genrec import DataError
from genrec.data.arguments import add_dataset_arguments, dataset_from_args
from genrec.data.datasets import load_dataset
from genrec.data.recbole import load_recbole, split_item_text
from genrec.data.splits import split_dataset

from conftest import REPO

SCIENTIFIC = REPO.parent / "shared" / "datasets" / "amazon-scientific"
ROOT = "Industrial & Scientific"


def write_recbole(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    head = "user_id:token\titem_id_list:token_seq\titem_id:token\n"
    (folder / "Toy.train.inter").write_text(head + "0\t0\t1\n0\t0 1\t2\n1\t3\t0\n")
    (folder / "Toy.valid.inter").write_text(head + "0\t0 1 2\t3\n1\t3 0\t1\n")
    (folder / "Toy.test.inter").write_text(head + "0\t0 1 2 3\t4\n1\t3 0 1\t2\n")
    (folder / "Toy.item2index").write_text("A0\t0\nA1\t1\nA2\t2\nA3\t3\nA4\t4\n")
    texts = {
        "A0": f"Acme Drill 18V. {ROOT} Power Tools Drills. Acme. ",
        "A1": f"Acme Bits, Set of 10 />. {ROOT} Power Tools Accessories. Acme. ",
        "A2": f" {ROOT} />. {ROOT} Lab Supplies Beakers. Pyrex. ",
        "A3": f" {ROOT} />. {ROOT} Lab Supplies Beakers. Pyrex. ",
        "A4": "Gloves, Nitrile. . ",
    }
    (folder / "Toy.text").write_text("item_id:token\ttext:token_seq\n" + "".join(f"{k}\t{v}\n" for k, v in texts.items()))
    return folder


def test_recbole_files_keep_their_own_split(tmp_path):
    ds = load_dataset("recbole", write_recbole(tmp_path / "toy"))
    assert ds.name == "Toy" and len(ds.catalog) == 5
    assert ds.train_sequences == {"0": ["0", "1", "2"], "1": ["3", "0"]}
    assert [(e.user_id, e.history, e.target) for e in ds.test_examples] == [("0", ("0", "1", "2", "3"), "4"), ("1", ("3", "0", "1"), "2")]
    split = split_dataset(ds)
    assert [e.target for e in split.valid] == ["3", "1"] and split.train == ds.train_sequences
    assert "given with the data" in split.info["protocol"]


def test_titles_from_item_text(tmp_path):
    catalog = load_recbole(write_recbole(tmp_path / "toy")).catalog
    assert catalog.title_of("0") == "Acme Drill 18V" and catalog.item("0")["brand"] == "Acme"
    assert catalog.title_of("1") == "Acme Bits, Set of 10"  # the scraper's "/>" is not part of it
    # two placeholders with the same brand and category: built titles, kept apart by their IDs
    assert catalog.title_of("2") == "Pyrex Lab Supplies Beakers (A2)" and catalog.title_of("3") == "Pyrex Lab Supplies Beakers (A3)"
    assert catalog.title_of("4") == "Gloves, Nitrile"
    assert split_item_text("No category here.", None) == ("No category here", "", "")


def test_short_titles_for_any_dataset(tmp_path):
    folder = write_recbole(tmp_path / "toy")
    full = load_dataset("recbole", folder).catalog
    catalog = load_dataset("recbole", folder, title_words=2).catalog
    assert [catalog.title_of(i) for i in "01234"] == [
        "Acme Drill", "Acme Bits", "Pyrex Lab Supplies Beakers (A2)", "Pyrex Lab Supplies Beakers (A3)", "Gloves, Nitrile",
    ]  # fmt: skip
    assert catalog.item("1")["full_title"] == "Acme Bits, Set of 10" and catalog.item("1")["brand"] == "Acme"
    assert catalog.ids == full.ids and catalog.content_hash != full.content_hash
    with pytest.raises(DataError, match="at least 1, got 0"):
        load_dataset("recbole", folder, title_words=0)
    parser = argparse.ArgumentParser()
    add_dataset_arguments(parser)
    args = parser.parse_args(["--dataset", "recbole", "--data-dir", str(folder), "--title-words", "2"])
    dataset, options = dataset_from_args(args)
    assert dataset.catalog.content_hash == catalog.content_hash and options["title_words"] == "2"
    assert "title_words" not in dataset_from_args(parser.parse_args(["--dataset", "recbole", "--data-dir", str(folder)]))[1]


def test_recbole_errors_name_the_problem(tmp_path):
    folder = write_recbole(tmp_path / "toy")
    with pytest.raises(DataError, match="no NAME.train.inter"):
        load_recbole(tmp_path)
    (folder / "Toy.text").write_text("item_id:token\ttext:token_seq\nA0\tx\n")
    with pytest.raises(DataError, match="4 item\\(s\\) of the .inter files have no text: 1, 2, 3, 4"):
        load_recbole(folder)
    (folder / "Toy.test.inter").write_text("user_id:token\titem_id:token\n0\t4\n")
    with pytest.raises(DataError, match="missing field\\(s\\) item_id_list"):
        load_recbole(folder)


def test_real_amazon_scientific():
    if not (SCIENTIFIC / "Scientific.train.inter").is_file():
        pytest.skip(f"amazon-scientific not found at {SCIENTIFIC} (research licence: not shipped with genrec)")
    ds = load_recbole(SCIENTIFIC)
    assert len(ds.catalog) == 4385 and len(ds.test_examples) == 8442 == len(ds.valid_examples)
    titles = ds.catalog.titles
    assert not any(t.startswith(ROOT) or t.endswith("/>") or not t for t in titles)
    assert len(set(titles)) >= 4385 - 16

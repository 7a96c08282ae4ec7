"""Dataset loaders and splits (genrec/data/)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from genrec import DataError
from genrec.data.datasets import (
    download_movielens,
    load_d3csv,
    load_dataset,
    load_interactions,
    load_movielens_1m,
    load_movielens_100k,
    natural_title,
)
from genrec.data.splits import leave_one_out, sample_examples

from helpers import write_d3


def write_ml100k(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    genres = ["0"] * 19
    rows = []
    for i, title in enumerate(["Toy Story (1995)", "Matrix, The (1999)", "Cit\xe9 des enfants perdus, La (1995)", "Heat (1995)"], 1):
        flags = genres.copy()
        flags[i] = "1"
        rows.append("|".join([str(i), title, "01-Jan-1995", "", "http://x", *flags]))
    (folder / "u.item").write_bytes(("\n".join(rows) + "\n").encode("latin-1"))
    data = ["1\t1\t5\t100", "1\t2\t4\t200", "1\t3\t3\t200", "2\t4\t5\t50", "2\t1\t3\t60", "2\t2\t1\t70", "3\t1\t4\t10"]
    (folder / "u.data").write_text("\n".join(data) + "\n", encoding="latin-1")
    return folder


def test_movielens_100k_loader(tmp_path):
    ds = load_movielens_100k(write_ml100k(tmp_path / "ml"))
    assert ds.catalog.title_of("2") == "The Matrix (1999)"
    assert ds.catalog.item("2")["movielens_title"] == "Matrix, The (1999)"
    assert ds.catalog.item("2")["genres"] == "Adventure"
    assert ds.catalog.title_of("3") == "La Cité des enfants perdus (1995)"
    assert ds.interactions["row"].tolist() == list(range(1, 8))


def test_movielens_titles_without_years(tmp_path):
    folder = write_ml100k(tmp_path / "ml")
    ds = load_dataset("ml-100k", folder, title_years="ambiguous")
    assert [ds.catalog.title_of(i) for i in "1234"] == ["Toy Story", "The Matrix", "La Cité des enfants perdus", "Heat"]
    assert ds.catalog.item("2")["movielens_title"] == "Matrix, The (1999)"  # the file's form is kept
    assert ds.catalog.content_hash != load_dataset("ml-100k", folder).catalog.content_hash
    with pytest.raises(DataError, match="one of always, ambiguous, got 'sometimes'"):
        load_dataset("ml-100k", folder, title_years="sometimes")
    (tmp_path / "movies.dat").write_bytes(b"1::Sabrina (1954)::Comedy\n2::Sabrina (1995)::Comedy\n3::Heat (1995)::Action\n")
    (tmp_path / "ratings.dat").write_text("1::1::5::978300760\n")
    catalog = load_movielens_1m(tmp_path, title_years="ambiguous").catalog
    assert [catalog.title_of(i) for i in "123"] == ["Sabrina (1954)", "Sabrina (1995)", "Heat"]
    with pytest.raises(DataError, match="for MovieLens titles"):
        load_dataset("recbole", tmp_path, title_years="ambiguous")


def test_real_movielens_100k_titles_without_years(ml100k_dir):
    catalog = load_dataset("ml-100k", ml100k_dir, title_years="ambiguous").catalog
    titles = [catalog.title_of(i) for i in catalog.ids]
    dated = sorted(t for t in titles if t.endswith(")") and t[-5:-1].isdigit())
    assert len(titles) == 1682 and "Toy Story" in titles and "Star Wars" in titles
    # five titles name two films each ("That Darn Cat! (1997)" is in the file twice); the one left,
    # "(1995) (V)", has its year inside
    assert dated == ["Cape Fear (1962)", "Cape Fear (1991)", "Sabrina (1954)", "Sabrina (1995)", "Shall We Dance? (1937)",
                     "Shall We Dance? (1996)", "That Darn Cat! (1965)", "That Darn Cat! (1997)", "That Darn Cat! (1997)",
                     "The Scarlet Letter (1926)",
                     "The Scarlet Letter (1995)"]  # fmt: skip


def test_real_movielens_100k(ml100k_dir):
    ds = load_movielens_100k(ml100k_dir)
    assert len(ds.catalog) == 1682 and len(ds.interactions) == 100_000
    split = leave_one_out(ds.interactions)
    assert split.info["users_evaluated"] == 943 and split.info["users_with_tied_last_two"] == 415


def test_natural_title():
    assert natural_title("Shawshank Redemption, The (1994)") == "The Shawshank Redemption (1994)"
    assert natural_title("Heat (1995)") == "Heat (1995)"
    assert natural_title("Unknown") == "Unknown"


def test_movielens_1m_loader(tmp_path):
    (tmp_path / "movies.dat").write_bytes("1::Toy Story (1995)::Animation|Comedy\n2::Heat (1995)::Action\n".encode("latin-1"))
    (tmp_path / "ratings.dat").write_text("1::1::5::978300760\n1::2::3::978302109\n")
    ds = load_movielens_1m(tmp_path)
    assert ds.catalog.item("1")["genres"] == "Animation|Comedy" and len(ds.interactions) == 2
    (tmp_path / "ratings.dat").write_text("1::1::5\n")
    with pytest.raises(DataError, match="row 1"):
        load_movielens_1m(tmp_path)


def test_interactions_loader_and_errors(tmp_path):
    (tmp_path / "items.csv").write_text("item_id,title\na,Heat\nb,Alien\n")
    (tmp_path / "log.csv").write_text("user_id,item_id,timestamp\nu1,a,5\nu1,b,6\n")
    ds = load_interactions(tmp_path / "log.csv", tmp_path / "items.csv")
    assert ds.interactions["timestamp"].tolist() == [5, 6]
    (tmp_path / "log.csv").write_text("user_id,item_id\nu1,a\nu1,zzz\n")
    with pytest.raises(DataError, match="'zzz' at row\\(s\\) 3"):
        load_interactions(tmp_path / "log.csv", tmp_path / "items.csv")


def test_d3csv_loader(tmp_path):
    test, info, train = write_d3(tmp_path)
    ds = load_d3csv(test, info, train=train)
    assert ds.catalog.title_of("11") == 'Gadget "Pro"' and ds.catalog.item("10")["sid"] == "<a_1><b_2>"
    assert ds.test_examples[0].history == ("10", "11") and ds.test_examples[1].history == ("12",)
    assert len(ds.train_examples) == 20
    test.write_text("user_id,history_item_title,item_title,history_item_id,item_id\nu1,[],x,not a list,10\n")
    with pytest.raises(DataError, match="row 2: column history_item_id is not a Python list"):
        load_d3csv(test, info)


def test_download_movielens_from_a_url(tmp_path):
    source = write_ml100k(tmp_path / "src" / "ml-100k")
    archive = tmp_path / "ml-100k.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in source.iterdir():
            zf.write(f, f"ml-100k/{f.name}")
    folder = download_movielens("ml-100k", tmp_path / "data", url=archive.as_uri())
    assert (folder / "u.data").is_file()
    assert load_dataset("ml-100k", tmp_path / "data").catalog.title_of("1") == "Toy Story (1995)"
    assert not list((tmp_path / "data").glob(".tmp-*"))  # nothing half-written left behind
    with pytest.raises(DataError, match="could not download"):
        download_movielens("ml-1m", tmp_path / "other", url=(tmp_path / "missing.zip").as_uri())
    assert not (tmp_path / "other" / "ml-1m").exists()


def test_leave_one_out_tie_rules(tmp_path):
    ds = load_movielens_100k(write_ml100k(tmp_path / "ml"))
    split = leave_one_out(ds.interactions)  # user 1 rated items 2 and 3 at the same second
    test = {e.user_id: e for e in split.test}
    assert test["1"].target == "3" and test["1"].history == ("1", "2")  # file order: 2 then 3
    assert {e.user_id: e.target for e in split.valid}["1"] == "2"
    assert split.train["1"] == ["1"] and split.train["3"] == ["1"]  # user 3 is too short to test
    assert split.info["users_too_short"] == 1 and split.info["users_with_tied_last_two"] == 1
    reordered = ds.interactions.copy()
    reordered.loc[[1, 2], "row"] = [3, 2]
    assert {e.user_id: e.target for e in leave_one_out(reordered).test}["1"] == "2"
    assert {e.user_id: e.target for e in leave_one_out(reordered, tie_break="item_id").test}["1"] == "3"
    with pytest.raises(DataError):
        leave_one_out(ds.interactions, tie_break="bogus")


def test_sample_examples_is_seeded():
    from genrec.data.datasets import Example

    examples = [Example(str(i), (), "x") for i in range(100)]
    a, b = sample_examples(examples, 10, 1), sample_examples(examples, 10, 1)
    assert a == b and len(a) == 10 and sample_examples(examples, 10, 2) != a
    assert sample_examples(examples, None, 0) == examples


# ---------------------------------------------------------------------- a patterned dataset


def test_d3_validation_is_the_latest_rows_unless_asked_otherwise(tmp_path):
    """D3 files list samples in time order: validation takes the training file's last rows, so
    every training row precedes every validation row (a random holdout leaks: a held-back target
    sits in the same user's later training rows)."""
    from genrec.data.datasets import Dataset, Example
    from genrec.data.splits import given_split, legacy_holdout

    test, info, _ = write_d3(tmp_path / "d3")
    base = load_d3csv(test, info)
    # user u walks 10 -> 11 -> 12 -> 10 ...: each later row extends the earlier one
    rows = [Example(f"u{u}", tuple(str(10 + (u + s) % 3) for s in range(t)), str(10 + (u + t) % 3)) for t in range(1, 6) for u in range(4)]
    dataset = Dataset(name="d3", catalog=base.catalog, test_examples=base.test_examples, train_examples=rows)
    latest = given_split(dataset, valid_fraction=0.25)
    assert latest.valid == rows[-5:] and "latest 25%" in latest.info["validation"]
    assert sorted(map(tuple, latest.train.values())) == sorted((*e.history, e.target) for e in rows[:-5])
    random_split = given_split(dataset, valid_fraction=0.25, holdout="random", seed=1)
    assert len(random_split.valid) == 5 and random_split.valid != rows[-5:] and "random 25%" in random_split.info["validation"]
    with pytest.raises(DataError, match="holdout must be one of latest, random"):
        given_split(dataset, holdout="oldest")
    assert (legacy_holdout({"dataset": "d3csv"}), legacy_holdout({"dataset": "ml-100k"})) == ("random", "latest")

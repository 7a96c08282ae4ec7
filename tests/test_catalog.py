from __future__ import annotations

import json

import pandas as pd
import pytest

from genrec import Catalog, CatalogError, UnknownItemError


def write(path, text, encoding="utf-8"):
    path.write_bytes(text.encode(encoding))
    return path


def test_csv_with_attributes(tmp_path):
    path = write(tmp_path / "items.csv", 'item_id,title,year\n1,Heat,1995\n2,"Monsters, Inc.",2001\n')
    catalog = Catalog.from_file(path)
    assert catalog.ids == ["1", "2"]
    assert catalog.titles == ["Heat", "Monsters, Inc."]
    assert catalog.item("2") == {"item_id": "2", "title": "Monsters, Inc.", "year": "2001"}
    assert catalog.item(1)["title"] == "Heat"  # int and str IDs are the same item


def test_tsv_and_custom_columns(tmp_path):
    path = write(tmp_path / "books.tsv", "isbn\tname\tauthor\nA1\tDune\tHerbert\nB2\tEmma\tAusten\n")
    catalog = Catalog.from_file(path, id_column="isbn", title_column="name", kind="book")
    assert catalog.ids == ["A1", "B2"] and catalog.titles == ["Dune", "Emma"]
    assert catalog.item("B2")["author"] == "Austen"
    assert catalog.kind == "book"


def test_missing_column_is_named(tmp_path):
    path = write(tmp_path / "items.csv", "id,name\n1,Heat\n")
    with pytest.raises(CatalogError, match=r"no column 'item_id' \(columns: id, name\)"):
        Catalog.from_file(path)


def test_jsonl(tmp_path):
    lines = [{"item_id": 7, "title": "Alien", "genres": ["Horror", "Sci-Fi"]}, {"item_id": "8", "title": "Aliens"}]
    path = write(tmp_path / "items.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n")
    catalog = Catalog.from_file(path)
    assert catalog.ids == ["7", "8"]
    assert catalog.item("7")["genres"] == ["Horror", "Sci-Fi"]


def test_movielens_u_item_is_one_call(tmp_path):
    text = "1|Toy Story (1995)|01-Jan-1995||http://x|0|1\n2|Cit\xe9 des enfants perdus, La (1995)|01-Jan-1995||http://y|1|0\n"
    path = write(tmp_path / "u.item", text, encoding="latin-1")
    catalog = Catalog.from_file(path, sep="|", encoding="latin-1", header=False)
    assert catalog.ids == ["1", "2"]
    assert catalog.titles[1] == "Cité des enfants perdus, La (1995)"
    assert catalog.item("1")["column_3"] == "01-Jan-1995"


def test_real_movielens_catalog(ml100k_dir):
    catalog = Catalog.from_file(ml100k_dir / "u.item", sep="|", encoding="latin-1", header=False)
    assert len(catalog) == 1682
    shared = [ids for ids in catalog.title_positions if len(ids) > 1]
    assert len(shared) == 18 and sum(len(s) for s in shared) == 36
    # every ID of a shared title is kept
    first = shared[0]
    assert catalog.ids_for_title(catalog.titles[first[0]]) == [catalog.ids[p] for p in first]
    assert catalog.title_of(267) == "unknown"


def test_shared_titles_keep_all_ids():
    catalog = Catalog.from_records(
        [{"item_id": "a", "title": "Heat"}, {"item_id": "b", "title": "Heat "}, {"item_id": "c", "title": "Heat 2"}]
    )
    assert catalog.unique_titles == ["Heat", "Heat 2"]
    assert catalog.ids_for_title("Heat") == ["a", "b"]


def test_strict_errors_name_file_and_rows(tmp_path):
    path = write(tmp_path / "bad.csv", "item_id,title\n1,Heat\n2,\n1,Alien\n3,Jaws,extra\n,Up\n")
    with pytest.raises(CatalogError) as err:
        Catalog.from_file(path)
    message = str(err.value)
    assert str(path) in message and "4 bad row(s)" in message
    assert "row 3: empty title for item_id '2'" in message
    assert "row 4: duplicate item_id '1' (first at row 2)" in message
    assert "row 5: expected 2 fields, found 3" in message
    assert "row 6: empty item_id" in message
    assert "lenient=True" in message


def test_lenient_skips_and_reports(tmp_path):
    path = write(tmp_path / "bad.csv", "item_id,title\n1,Heat\n2,\n1,Alien\n3,Jaws\n")
    catalog = Catalog.from_file(path, lenient=True)
    assert catalog.ids == ["1", "3"]
    report = catalog.report
    assert report.rows_read == 4 and report.items == 2
    assert [(s.row, s.reason.split(" ")[0]) for s in report.skipped] == [(3, "empty"), (4, "duplicate")]
    assert "2 skipped" in str(report)


def test_undecodable_bytes_are_named(tmp_path):
    path = tmp_path / "items.csv"
    path.write_bytes(b"item_id,title\n1,Heat\n2,Caf\xe9\n")
    with pytest.raises(CatalogError, match=r"row 3: bytes that are not valid"):
        Catalog.from_file(path)
    assert Catalog.from_file(path, encoding="latin-1").titles[1] == "Café"


def test_invalid_jsonl_rows(tmp_path):
    path = write(tmp_path / "x.jsonl", '{"item_id": 1, "title": "Heat"}\n{broken\n[1, 2]\n')
    with pytest.raises(CatalogError, match=r"row 2: not valid JSON") as err:
        Catalog.from_file(path)
    assert "row 3: expected a JSON object, found list" in str(err.value)


def test_dataframe_and_records_roundtrip():
    df = pd.DataFrame({"item_id": [10, 11], "title": ["Up", "Coco"], "year": [2009, 2017]})
    catalog = Catalog.from_dataframe(df)
    assert catalog.ids == ["10", "11"]
    assert catalog.item("11")["year"] == 2017 and isinstance(catalog.item("11")["year"], int)
    out = catalog.to_dataframe()
    assert list(out.columns) == ["item_id", "title", "year"] and out["title"].tolist() == ["Up", "Coco"]
    again = Catalog.from_records(out.to_dict(orient="records"))
    assert again.content_hash == catalog.content_hash


def test_dataframe_errors_name_rows():
    df = pd.DataFrame({"item_id": [1, 2, 2], "title": ["Up", None, "Coco"]})
    with pytest.raises(CatalogError, match=r"row 2: empty title"):
        Catalog.from_dataframe(df)


def test_unknown_ids_listed():
    catalog = Catalog.from_records([{"item_id": "1", "title": "Up"}])
    with pytest.raises(UnknownItemError) as err:
        catalog.positions(["1", "x", "y"])
    assert err.value.unknown == ["x", "y"] and "'x', 'y'" in str(err.value)


def test_empty_and_missing_file(tmp_path):
    empty = Catalog.from_file(write(tmp_path / "e.csv", "item_id,title\n"))
    assert len(empty) == 0
    with pytest.raises(CatalogError, match="not found"):
        Catalog.from_file(tmp_path / "nope.csv")


def test_demo_catalog():
    demo = Catalog.demo()
    assert 300 <= len(demo) <= 600
    assert demo.kind == "movie"
    assert {"year", "genres"} <= set(demo.item(demo.ids[0]))
    assert len(demo.unique_titles) == len(demo)


def test_content_hash_tracks_titles():
    a = Catalog.from_records([{"item_id": "1", "title": "Up"}])
    b = Catalog.from_records([{"item_id": "1", "title": "Up!"}])
    assert a.content_hash != b.content_hash


def test_catalog_pickles_for_worker_processes():
    import pickle

    catalog = Catalog.from_records([{"item_id": "a", "title": "Heat", "year": 1995}, {"item_id": "b", "title": "Alien"}])
    catalog.grounder  # built: not carried over, rebuilt on use
    catalog.item_at(0)  # its columns read once: not carried over either
    copy = pickle.loads(pickle.dumps(catalog))
    assert copy.ids == catalog.ids and copy.content_hash == catalog.content_hash
    assert copy.grounder.ground("heat", limit=1)[0].item_id == "a"
    assert copy.item_at(0) == catalog.item_at(0) == {"item_id": "a", "title": "Heat", "year": 1995}


def test_an_item_keeps_each_attributes_own_type():
    frame = pd.DataFrame({"year": [1995, 1979], "rating": [4.5, None], "seen": [True, False], "genre": ["Crime", None]})
    catalog = Catalog(["a", "b"], ["Heat", "Alien"], frame)
    assert catalog.item_at(0) == {"item_id": "a", "title": "Heat", "year": 1995, "rating": 4.5, "seen": True, "genre": "Crime"}
    assert [type(v) for v in catalog.item_at(0).values()] == [str, str, int, float, bool, str]
    assert catalog.item("b") == {"item_id": "b", "title": "Alien", "year": 1979, "rating": None, "seen": False, "genre": None}


def test_short_titles_keep_items_and_their_full_titles():
    records = [
        {"item_id": "a", "title": "Acme Drill 18V Cordless, 2 Batteries", "brand": "Acme"},
        {"item_id": "b", "title": "Acme Drill 12V Cordless", "brand": "Acme"},
        {"item_id": "c", "title": "Acme Drill 18V Cordless, 2 Batteries", "brand": "Acme"},  # a shared title
        {"item_id": "d", "title": "Nitrile Gloves", "brand": None},
    ]
    catalog = Catalog.from_records(records, kind="product", name="tools")
    short = catalog.with_short_titles(2)
    assert short.ids == catalog.ids and (short.kind, short.name) == ("product", "tools")
    assert short.titles == ["Acme Drill 18V", "Acme Drill 12V", "Acme Drill 18V", "Nitrile Gloves"]
    assert short.ids_for_title("Acme Drill 18V") == ["a", "c"]  # a shared title stays shared, both IDs kept
    assert short.item("a") == {"item_id": "a", "title": "Acme Drill 18V", "brand": "Acme",
                               "full_title": "Acme Drill 18V Cordless, 2 Batteries"}  # fmt: skip
    assert short.with_short_titles(1).item("a")["full_title"] == "Acme Drill 18V Cordless, 2 Batteries"
    assert short.content_hash != catalog.content_hash
    with pytest.raises(CatalogError, match="tools: title words must be a whole number of at least 1, got 0"):
        catalog.with_short_titles(0)

from __future__ import annotations

import json

import pytest

from genrec.cli import main


@pytest.fixture
def items_csv(tmp_path):
    path = tmp_path / "items.csv"
    path.write_text("item_id,title,year\n1,Alien,1979\n2,Aliens,1986\n3,Heat,1995\n4,\"Monsters, Inc.\",2001\n5,Jaws,1975\n")
    return path


def test_recommend_json(items_csv, tiny_model_dir, capsys):
    rc = main(["recommend", "--catalog", str(items_csv), "--model", str(tiny_model_dir), "--history", "1,Heat", "-k", "2", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out) == 2 and all(set(o) == {"item_id", "title", "score"} for o in out)
    assert not {o["item_id"] for o in out} & {"1", "3"}


def test_recommend_table_with_title_containing_comma(items_csv, tiny_model_dir, capsys):
    rc = main(["recommend", "--catalog", str(items_csv), "--model", str(tiny_model_dir), "--item", "Monsters, Inc.", "-k", "3"])
    assert rc == 0
    out = capsys.readouterr().out
    assert out.startswith("top-3 for history: Monsters, Inc.") and "item_id" in out


def test_unknown_id_is_a_clean_error(items_csv, tiny_model_dir, capsys):
    rc = main(["recommend", "--catalog", str(items_csv), "--model", str(tiny_model_dir), "--history", "1,99"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("genrec: error:") and "'99'" in err and "Traceback" not in err


def test_family_cap_option(tmp_path, tiny_model_dir, capsys):
    items = tmp_path / "items.csv"
    rows = [f"{n},Lab Tape {c}" for n, c in enumerate(["Black", "White", "Red", "Blue"])] + ["10,Heat", "11,Jaws", "12,Up"]
    items.write_text("item_id,title\n" + "\n".join(rows) + "\n")
    argv = ["recommend", "--catalog", str(items), "--model", str(tiny_model_dir), "--history", "Up", "-k", "4", "--json"]
    assert main([*argv, "--max-per-family", "1"]) == 0
    titles = [o["title"] for o in json.loads(capsys.readouterr().out)]
    assert len(titles) == 4 and sum(t.startswith("Lab Tape") for t in titles[:3]) <= 1
    rc = main([*argv, "--max-per-family", "0"])
    err = capsys.readouterr().err
    assert rc == 2 and "max_per_family must be a whole number of at least 1" in err and "Traceback" not in err


def test_title_words_option_cuts_the_catalog_titles(tmp_path, tiny_model_dir, capsys):
    items = tmp_path / "items.csv"
    items.write_text("item_id,title\n1,Lab Tape Black 2 inch\n2,Lab Tape White 2 inch\n3,Nitrile Gloves Box of 100\n")
    argv = ["recommend", "--catalog", str(items), "--model", str(tiny_model_dir), "--history", "3", "-k", "2", "--json"]
    assert main([*argv, "--title-words", "2"]) == 0
    assert sorted(o["title"] for o in json.loads(capsys.readouterr().out)) == ["Lab Tape Black", "Lab Tape White"]
    assert main(["ground", "--catalog", str(items), "--title-words", "2", "nitrile gloves", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["title"] == "Nitrile Gloves"
    rc = main([*argv, "--title-words", "0"])
    err = capsys.readouterr().err
    assert rc == 2 and "title words must be a whole number of at least 1, got 0" in err and "Traceback" not in err


def test_bad_catalog_is_a_clean_error(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("item_id,title\n1,\n")
    rc = main(["ground", "--catalog", str(bad), "x"])
    assert rc == 2 and "row 2: empty title" in capsys.readouterr().err


def test_lenient_catalog_reports_skips(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("item_id,title\n1,\n2,Heat\n")
    rc = main(["ground", "--catalog", str(bad), "--lenient", "heat", "--json"])
    captured = capsys.readouterr()
    assert rc == 0 and "1 skipped" in captured.err
    assert json.loads(captured.out)[0]["item_id"] == "2"


def test_ground_list(items_csv, capsys):
    assert main(["ground", "--catalog", str(items_csv), "--list", "1. Aliens\n2. Nope Nope"]) == 0
    out = capsys.readouterr().out
    assert "'Aliens' -> 2 Aliens" in out and "(not in catalog)" in out


def test_broken_prompts_folder_is_a_clean_error(items_csv, tiny_model_dir, tmp_path, capsys):
    (tmp_path / "next_item.jinja").write_text("{% block user %}{{ oops }{% endblock %}")
    rc = main(["recommend", "--catalog", str(items_csv), "--model", str(tiny_model_dir), "--prompts", str(tmp_path)])
    assert rc == 2 and "next_item.jinja line 1" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, problem",
    [
        (["chat", "--messages", "{missing}"], "cannot read --messages file"),
        (["chat", "--messages", "{binary}"], "cannot read --messages file"),
        (["recommend", "--history", "1", "--encoding", "no-such-codec"], "unknown encoding"),
    ],
)
def test_unreadable_inputs_are_one_line_errors(items_csv, tiny_model_dir, tmp_path, capsys, argv, problem):
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    argv = [a.format(missing=tmp_path / "nope.json", binary=binary) for a in argv]
    rc = main([argv[0], "--catalog", str(items_csv), "--model", str(tiny_model_dir), *argv[1:]])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("genrec: error:") and problem in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_columns_name_a_headerless_files_columns(tmp_path, capsys):
    items = tmp_path / "u.item"
    items.write_text("1|Alien (1979)|0|1\n2|Heat (1995)|1|0\n", encoding="latin-1")
    argv = ["ground", "--catalog", str(items), "--sep", "|", "--no-header", "--encoding", "latin-1", "heat", "--json"]
    assert main([*argv, "--columns", "item_id,title,Crime,Sci-Fi"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["item_id"] == "2"
    rc = main([*argv, "--columns", "item_id,title"])
    err = capsys.readouterr().err
    assert rc == 2 and "expected 2 fields, found 4" in err and "Traceback" not in err

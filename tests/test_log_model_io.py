"""A fitted log saved and loaded again (``Recommender.save_fit``, ``load_fit``, ``genrec fit``,
``--log FOLDER``): the same lists, a catalog that changed since, and the errors that name why a
saved fit cannot serve."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest
import torch

from genrec import ConfigError, DataError
from genrec.cli import main
from genrec.content import catalog_texts
from genrec.encoder import embed_texts
from genrec.log_model import later_pairs
from genrec.log_model_io import ARRAYS_FILE, FIT_FILE

from helpers import SERIES, series_catalog, the_log

HISTORIES = [["t0", "a0"], ["r1", "c0"], ["x0"], ["t1", "c1", "r0"]]


@pytest.fixture(scope="module")
def saved(tiny_model, tokenizer, tmp_path_factory):
    """One fit of the log, saved (fitting is the slow part), and the lists it gave."""
    from genrec import Recommender

    root = tmp_path_factory.mktemp("fit")
    rec = Recommender(series_catalog(), model=tiny_model, tokenizer=tokenizer, cache_dir=root / "cache").fit(the_log())
    lists = [[(r.item_id, r.score) for r in rec.recommend(h, k=5)] for h in HISTORIES]
    return rec.save_fit(root / "saved"), rec, lists


def test_a_loaded_fit_gives_the_fitted_lists_and_scores(saved, make_rec):
    path, fitted, lists = saved
    assert (path / FIT_FILE).is_file() and (path / ARRAYS_FILE).is_file()
    rec = make_rec(series_catalog(), search="auto").load_fit(path)
    assert [[(r.item_id, r.score) for r in rec.recommend(h, k=5)] for h in HISTORIES] == lists
    ids = [[fitted.catalog.ids[p] for p in range(9)]]
    assert np.array_equal(rec.log_model.scores.score(ids), fitted.log_model.scores.score(ids))
    tuned = rec.log_model.tuned
    assert tuned["items_read_at_load"] == 0 and tuned["interactions_left_out_at_load"] == 0
    assert {k: tuned[k] for k in ("layer", "epoch", "weight", "users")} == {k: fitted.log_model.tuned[k] for k in ("layer", "epoch", "weight", "users")}
    assert rec.log_model.sequences == fitted.log_model.sequences


def test_items_added_since_the_fit_are_read_and_ranked_from_their_words(saved, make_rec, tiny_model, tokenizer):
    path, fitted, _ = saved
    added = ("t2", "Terminator 3", "Action|Sci-Fi")
    rows = [r for r in SERIES if r[0] != "c1"] + [added]  # Toy Story 2 delisted, Terminator 3 listed
    rows = [(i, t, "Drama" if i == "x0" else g) for i, t, g in rows]  # Heat's words changed
    catalog = series_catalog(rows)
    rec = make_rec(catalog, search="auto").load_fit(path)
    tuned = rec.log_model.tuned
    assert tuned["items_read_at_load"] == 2  # Terminator 3, and Heat (its words changed)
    assert tuned["interactions_left_out_at_load"] == 0  # nobody in the log watched Toy Story 2
    encoder, old = rec.log_model.scores.encoder, fitted.log_model.scores.encoder
    for item in ("a0", "t0", "r1"):  # unchanged items keep their saved vectors
        assert np.array_equal(encoder.features[catalog.position(item)], old.features[fitted.catalog.position(item)])
    texts = catalog_texts(catalog)
    layer = tuned["layer"]
    raw = embed_texts(tiny_model, tokenizer, [texts[catalog.position("t2")]], layers=[layer])[layer][0]
    np.testing.assert_allclose(encoder.features[catalog.position("t2")], (raw - old.mean) / old.scale, rtol=1e-4, atol=1e-4)
    assert "t2" in [r.item_id for r in rec.recommend(["t0", "t1"], k=len(catalog) - 2)]


def test_a_delisted_items_interactions_are_left_out_and_counted(saved, make_rec):
    path, _, _ = saved
    catalog = series_catalog([r for r in SERIES if r[0] != "x0"])  # Heat: every u-user's last item
    rec = make_rec(catalog, search="auto").load_fit(path)
    assert rec.log_model.tuned["interactions_left_out_at_load"] == 12
    assert "x0" not in {i for seq in rec.log_model.sequences.values() for i in seq}


def test_another_model_cannot_read_the_items_the_fit_lacks(saved, tiny_model, tokenizer, tmp_path):
    from genrec import Recommender

    path, _, lists = saved
    other = copy.deepcopy(tiny_model)
    with torch.no_grad():
        next(other.parameters()).add_(0.01)
    rec = Recommender(series_catalog(), model=other, tokenizer=tokenizer, cache_dir=tmp_path).load_fit(path)  # nothing to read
    assert [[(r.item_id, r.score) for r in rec.recommend(h, k=5)] for h in HISTORIES] == lists
    grown = series_catalog(list(SERIES) + [("t2", "Terminator 3", "Action|Sci-Fi")])
    with pytest.raises(ConfigError, match=r"1 catalog item\(s\) \(such as 't2'\) are new to the saved fit"):
        Recommender(grown, model=other, tokenizer=tokenizer, cache_dir=tmp_path).load_fit(path)


def test_what_is_not_a_saved_fit_is_named(saved, make_rec, tmp_path):
    path, _, _ = saved
    rec = make_rec(series_catalog())
    with pytest.raises(ConfigError, match=r"nothing to save: call Recommender.fit\(log\) first"):
        rec.save_fit(tmp_path / "none")
    with pytest.raises(DataError, match="holds no saved fit"):
        rec.load_fit(tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / FIT_FILE).write_text((path / FIT_FILE).read_text())
    (broken / ARRAYS_FILE).write_bytes(b"not an npz")
    with pytest.raises(DataError, match="cannot be read"):
        rec.load_fit(broken)
    record = json.loads((path / FIT_FILE).read_text())
    (broken / FIT_FILE).write_text(json.dumps({**record, "format": 99}))
    (broken / ARRAYS_FILE).write_bytes((path / ARRAYS_FILE).read_bytes())
    with pytest.raises(DataError, match="has format 99"):
        rec.load_fit(broken)


def test_cli_fits_a_log_file_once_and_every_command_loads_the_folder(tmp_path, tiny_model_dir, capsys):
    items = tmp_path / "items.csv"
    pd.DataFrame([{"item_id": i, "title": t, "genres": g} for i, t, g in SERIES]).to_csv(items, index=False)
    log = tmp_path / "log.csv"
    rows = [(user, item, n) for user, sequence in the_log().items() for n, item in enumerate(sequence)]
    pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).to_csv(log, index=False)
    model = ["--catalog", str(items), "--model", str(tiny_model_dir)]
    assert main(["fit", *model, "--log", str(log), "--out", str(tmp_path / "fit")]) == 0
    assert "25 users, 73 interactions" in capsys.readouterr().out
    ask = ["recommend", *model, "--history", "t0,a0", "-k", "3", "--json"]
    assert main([*ask, "--log", str(tmp_path / "fit")]) == 0
    loaded = json.loads(capsys.readouterr().out)
    assert main([*ask, "--log", str(log)]) == 0
    assert json.loads(capsys.readouterr().out) == loaded and loaded[0]["item_id"] == "x0"
    histories = tmp_path / "histories.jsonl"
    histories.write_text("".join(json.dumps({"user_id": f"q{n}", "history": h}) + "\n" for n, h in enumerate(HISTORIES)))
    batch = ["batch", *model, "--histories", str(histories), "-k", "3", "--format", "jsonl"]
    assert main([*batch, "--log", str(log), "--out", str(tmp_path / "b0")]) == 2
    assert "genrec batch loads a saved fit, not a log" in capsys.readouterr().err
    assert main([*batch, "--log", str(tmp_path / "fit"), "--out", str(tmp_path / "b1")]) == 0
    capsys.readouterr()
    out = [json.loads(line) for f in sorted((tmp_path / "b1" / "data").glob("*.jsonl")) for line in f.read_text().splitlines()]
    first = [r["item_id"] for r in sorted((r for r in out if r["user_id"] == "q0"), key=lambda r: r["rank"])]
    assert first == [r["item_id"] for r in loaded]
    assert main(["fit", *model, "--out", str(tmp_path / "f2")]) == 2
    assert "genrec fit needs --log FILE" in capsys.readouterr().err
    later = tmp_path / "later.csv"
    pd.DataFrame([("u0", "x0", 9), ("v0", "c0", 9), ("v0", "c1", 10), ("new", "a0", 9)], columns=["user_id", "item_id", "timestamp"]).to_csv(later, index=False)
    assert main(["fit", *model, "--log", str(log), "--valid", str(later), "--out", str(tmp_path / "f3")]) == 0
    assert "chosen on 3 validation rows" in capsys.readouterr().out  # a user new in the later period has no history yet


def test_later_pairs_continue_each_users_log():
    assert later_pairs({"u": ["a", "b"], "v": ["c"]}, {"u": ["d", "e"], "w": ["f", "g"]}) == [
        (["a", "b"], "d"), (["a", "b", "d"], "e"), (["f"], "g"),
    ]

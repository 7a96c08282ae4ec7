"""Content and hybrid baselines: the only baselines that can recommend an item nobody has bought."""

from __future__ import annotations

import numpy as np
import pandas as pd

from genrec import Catalog
from genrec.baselines.content import Content, Hybrid
from genrec.content import item_text
from genrec.data.cold import without_items
from genrec.data.datasets import Dataset
from genrec.data.splits import leave_one_out


def families_dataset(n_users: int = 24) -> Dataset:
    """Users buy within one brand's series; the series' words are in every title."""
    brands = ["Acme Beaker", "Zenith Caliper", "Orbit Glove", "Nova Pipette"]
    records = [{"item_id": f"{b[:2].lower()}{n}", "title": f"{b} Model {n}", "category": b.split()[1]} for b in brands for n in range(6)]
    catalog = Catalog.from_records(records, kind="product")
    rows = []
    for u in range(n_users):
        brand = brands[u % len(brands)][:2].lower()
        for t, n in enumerate(range(u % 3, u % 3 + 4)):
            rows.append({"user_id": f"u{u}", "item_id": f"{brand}{n}", "timestamp": t})
    frame = pd.DataFrame(rows)
    frame["row"] = range(1, len(frame) + 1)
    return Dataset(name="families", catalog=catalog, interactions=frame)


def test_item_text_reads_the_title_and_attributes():
    assert item_text({"item_id": "1", "title": "Heat", "genres": "Crime|Drama", "full_title": "Heat (1995)"}) == "Heat Crime Drama"
    # a web address is no word of the item's (MovieLens' u.item read as it is holds one per film)
    film = {"title": "Heat (1995)", "column_3": "15-Dec-1995", "column_5": "http://us.imdb.com/M/title-exact?Heat%20(1995)"}
    assert item_text(film) == "Heat (1995) 15-Dec-1995"
    assert item_text({"title": "Manual", "note": "see https://example.org first"}) == "Manual see https://example.org first"


def test_content_recommends_an_item_no_one_has_bought_from_its_words():
    ds = families_dataset()
    split = leave_one_out(ds.interactions)
    new_items = frozenset({"ac5", "ze5", "or5", "no5"})  # the last model of each series: never bought
    assert not any(set(s) & new_items for s in split.train.values())
    content = Content(ds.catalog)
    content.fit(split)
    assert content.tuned["window"] in (1, 3, 10, "all") and content.tuned["decay"] in Content.DECAYS
    scores = content.score([["ac1", "ac2"]])[0]
    acme = [ds.catalog.position(f"ac{n}") for n in range(6)]
    others = [p for p in range(len(ds.catalog)) if p not in acme]
    assert scores[ds.catalog.position("ac5")] > max(scores[others])  # the new Acme model beats every other brand


def test_hybrid_is_itemknn_on_known_items_and_content_on_new_ones():
    """At a small share the known items keep ItemKNN's order (content only breaks its ties);
    a new item is scored by its words alone."""
    ds = families_dataset()
    split = without_items(leave_one_out(ds.interactions), frozenset({"ac2"}))
    hybrid = Hybrid(ds.catalog)
    hybrid.fit(split)
    assert hybrid.tuned["new_items"] == int(hybrid.new.sum()) and hybrid.new[ds.catalog.position("ac2")]
    assert hybrid.tuned["share"] in Hybrid.SHARES
    histories = [["ac1", "ac3"], ["ze1"]]
    hybrid.share = 1e-9
    scores = hybrid.score(histories)
    knn = hybrid.knn.score(histories)
    known = ~hybrid.new
    for row in range(2):  # where ItemKNN tells items apart, the hybrid orders them as it does
        a, b = np.triu_indices(int(known.sum()), 1)
        k_row, h_row = knn[row][known], scores[row][known]
        apart = np.abs(k_row[a] - k_row[b]) > 1e-6
        assert np.all(np.sign(k_row[a] - k_row[b])[apart] == np.sign(h_row[a] - h_row[b])[apart])
    # a new item is scored by its words alone: the Acme history reaches the unbought Acme model
    assert scores[0][ds.catalog.position("ac2")] > 0 and knn[0][ds.catalog.position("ac2")] <= 1e-6
    assert scores[0][ds.catalog.position("ac2")] > scores[1][ds.catalog.position("ac2")]

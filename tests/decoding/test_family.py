"""The family cap: families from the title index, and beam search with at most N variants per list."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genrec import LimitError
from genrec.decoding import build_index
from genrec.evaluation import EvalConfig

from helpers import catalog_of

END = 2
COLOURS = ["Black", "White", "Red", "Blue", "Green", "Silver", "Gold", "Orange", "Purple", "Pink"]


def variant_titles(seed: int = 0) -> list[str]:
    """Families of variants (a long one, short ones the random model scores high) among unrelated titles."""
    rng = random.Random(seed)
    filament = [f"HATCHBOX PLA 3D Printer Filament, 1 kg Spool, 1.75 mm, {c}" for c in COLOURS]
    short = [f"{base} {c}" for base in ("Lab Tape", "Nitrile Gloves", "Steel Ruler") for c in COLOURS[:6]]
    words = ["Beaker", "Glass", "Digital", "Scale", "Timer", "Safety", "Funnel", "Pipette", "Flask", "Clamp", "Stand"]
    other = {" ".join(rng.choice(words) for _ in range(rng.randint(1, 3))) + f" {rng.randint(1, 99)}" for _ in range(30)}
    return filament + short + sorted(other)


def reference_families(seqs: list[tuple[int, ...]], share: float) -> list[tuple[int, ...]]:
    """Pure-Python reference: each title's family is the shortest prefix at least ``share`` of the
    way into the longest title that starts with it."""
    out = []
    for seq in seqs:
        for depth in range(1, len(seq) + 1):
            prefix = seq[:depth]
            longest = max(len(s) for s in seqs if s[:depth] == prefix)
            if depth >= share * longest:
                out.append(prefix)
                break
    return out


def padded(seqs):
    out = np.full((len(seqs), max(map(len, seqs))), -1, dtype=np.int32)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s
    return out


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.lists(st.integers(3, 6), min_size=0, max_size=7), min_size=1, max_size=25, unique_by=tuple),
    st.sampled_from([0.25, 0.5, 0.75, 1.0]),
)
def test_families_match_the_reference(bodies, share):
    seqs = [(*body, END) for body in bodies]
    index = build_index(padded(seqs), vocab_size=8)
    family = index.families(share)
    expected = reference_families(seqs, share)
    for title, seq in enumerate(seqs):
        top = int(family[index.title_leaf[title]])
        assert top == index.walk(expected[title])  # the same node: the family's top
    # every node of a family's subtree names that family, and nothing above a family does
    for node in range(1, index.n_nodes - 1):
        parent = int(index.parent[node])
        assert family[node] in (family[parent], node) if family[parent] < 0 else family[node] == family[parent]


def test_families_group_variants_only():
    seqs = [(5, 6, 7, 8, 9, END), (5, 6, 7, 8, 10, END), (5, 6, 7, 8, 11, 12, END), (5, 13, END), (14, END), (5, 6, 15, END)]
    index = build_index(padded(seqs), vocab_size=20)
    family = [int(index.families(0.5)[index.title_leaf[t]]) for t in range(len(seqs))]
    assert family[0] == family[1] == family[2]
    assert len(set(family[2:])) == 4


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 2), st.integers(0, 5), st.sampled_from([-3.0, -2.0, -1.5, -1.0, float("-inf")])), max_size=30),
    st.integers(1, 3),
)
def test_overflow_and_closed_match_a_reference(entries, limit):
    """FamilyCap's vectorised rules against plain loops: overflow holds back each (user, family)'s
    entries after its best ``limit`` of the step; closed kills those that score no better than the
    family's ``limit``-th finished title."""
    import torch

    from genrec.decoding import FamilyCap, Hypothesis

    seqs = [(3, 4, 5, END), (3, 4, 6, END), (3, 4, 7, END), (5, 6, END), (5, 7, END), (6, END)]
    index = build_index(padded(seqs), vocab_size=8)
    cap = FamilyCap(index, limit, 0.5, torch.device("cpu"))
    leaves = [int(index.title_leaf[t]) for t in range(len(seqs))]
    users = torch.tensor([u for u, _, _ in entries], dtype=torch.long)
    nodes = torch.tensor([leaves[t] for _, t, _ in entries], dtype=torch.long)
    scores = torch.tensor([x for _, _, x in entries])
    family = [int(index.families(0.5)[leaf]) for leaf in leaves]
    # overflow: rank within (user, family) by score, ties by position
    expected = []
    for i, (u, t, x) in enumerate(entries):
        better = sum(1 for j, (v, r, y) in enumerate(entries) if v == u and family[r] == family[t] and y > float("-inf")
                     and (y > x or (y == x and j < i)))  # fmt: skip
        expected.append(family[t] >= 0 and x > float("-inf") and better >= limit)
    got = cap.overflow(nodes, scores, users).tolist() if entries else []
    assert got == expected
    # closed: each user has finished titles 0 and 1 (one family) at -1.2 and -2.5
    finished = [[Hypothesis((), -1.2, leaves[0]), Hypothesis((), -2.5, leaves[1])] for _ in range(3)]
    bar = {1: -1.2, 2: -2.5}.get(limit)
    expected = [bar is not None and family[t] == family[0] and x <= bar for _, t, x in entries]
    got = cap.closed(nodes, scores, users, finished).tolist() if entries else []
    assert got == expected


def capped(items, family_of, limit):
    taken, out = Counter(), []
    for item in items:
        f = family_of[item.title]
        if taken[f] < limit:
            taken[f] += 1
            out.append(item)
    return out


def family_lookup(rec):
    index = rec.index_for("next_item")
    family = index.families(0.5)
    titles = rec.catalog.unique_titles
    return {t: int(family[index.title_leaf[n]]) for n, t in enumerate(titles)}


@pytest.mark.parametrize("limit", [1, 2, 3])
def test_exhaustive_capped_search_is_the_greedy_cap_of_the_full_ranking(make_rec, limit):
    """With a beam per title the search sees every title: the capped list must be the full
    ranking taken greedily with at most ``limit`` per family, with the same scores."""
    catalog = catalog_of(variant_titles())
    n = len(catalog)
    full = make_rec(catalog, num_beams=n)
    rec = make_rec(catalog, num_beams=n, max_per_family=limit)
    family_of = family_lookup(rec)
    sizes = Counter(family_of.values())
    assert sizes[family_of[catalog.titles[0]]] == len(COLOURS)  # the filament colours are one family
    changed = 0
    for history in ([], ["i0", "i12"], ["i30"]):
        ranking = full.recommend(history, k=n)
        expected = capped(ranking, family_of, limit)[:8]
        got = rec.recommend(history, k=8)
        assert [r.item_id for r in got] == [r.item_id for r in expected]
        assert [r.score for r in got] == pytest.approx([r.score for r in expected], abs=1e-4)
        changed += [r.item_id for r in got] != [r.item_id for r in ranking[:8]]
    assert changed  # the uncapped lists hold several variants of one family: the cap had work to do


def over_limit(recs, family_of, limit):
    """For each item of a list, whether it is past its family's ``limit`` there."""
    seen, out = Counter(), []
    for r in recs:
        seen[family_of[r.title]] += 1
        out.append(seen[family_of[r.title]] > limit)
    return out


def test_a_family_cannot_crowd_the_rest_out_of_the_beam(make_rec):
    """A beam of 10 on a catalog whose lists, uncapped, repeat families: every capped list holds
    10 titles within the cap (the family's extra variants are held back, not given the beam)."""
    catalog = catalog_of(variant_titles())
    rec = make_rec(catalog, num_beams=10, max_per_family=2)
    family_of = family_lookup(rec)
    rng = random.Random(0)
    histories = [rng.sample(catalog.ids, 3) for _ in range(6)]
    uncapped = make_rec(catalog, num_beams=10).recommend_batch(histories, k=10)
    assert sum(sum(over_limit(recs, family_of, 2)) for recs in uncapped) >= 6
    for history, recs in zip(histories, rec.recommend_batch(histories, k=10)):
        ids = [r.item_id for r in recs]
        assert len(ids) == 10 and len(set(ids)) == 10 and not set(ids) & set(history)
        assert not any(over_limit(recs, family_of, 2))
        assert [r.score for r in recs] == sorted((r.score for r in recs), reverse=True)


def test_too_few_titles_within_the_cap_are_followed_by_held_back_variants(make_rec):
    titles = [f"Lab Tape {c}" for c in COLOURS[:4]] + [f"Steel Ruler {c}" for c in COLOURS[:3]] + ["Heat"]
    catalog = catalog_of(titles)
    rec = make_rec(catalog, num_beams=10, max_per_family=1)
    family_of = family_lookup(rec)
    recs = rec.recommend([], k=6)
    over = over_limit(recs, family_of, 1)
    assert len(recs) == 6 and over == [False] * 3 + [True] * 3
    for part in (recs[:3], recs[3:]):
        assert [r.score for r in part] == sorted((r.score for r in part), reverse=True)
    ranking = make_rec(catalog, num_beams=10).recommend([], k=len(titles))
    held = [r for r in ranking if r.item_id not in {x.item_id for x in recs[:3]}]
    assert [r.item_id for r in recs[3:]] == [r.item_id for r in held[:3]]


def test_a_cap_no_family_reaches_changes_nothing(make_rec):
    catalog = catalog_of(variant_titles(seed=5))
    histories = [["i1", "i20"], ["i11"], []]
    plain = make_rec(catalog).recommend_batch(histories, k=10)
    roomy = make_rec(catalog, max_per_family=len(COLOURS)).recommend_batch(histories, k=10)
    assert [[r.item_id for r in recs] for recs in plain] == [[r.item_id for r in recs] for recs in roomy]


@pytest.mark.parametrize("limit, share", [(0, 0.5), (-1, 0.5), (1.5, 0.5), (True, 0.5), (2, 0.0), (2, 1.5)])
def test_bad_cap_settings_are_refused(make_rec, limit, share):
    with pytest.raises(LimitError, match="max_per_family|family_share"):
        make_rec(catalog_of(variant_titles()), max_per_family=limit, family_share=share)


def test_eval_config_refuses_a_bad_cap():
    with pytest.raises(LimitError, match="max_per_family"):
        EvalConfig(dataset="ml-100k", methods=["genrec"], max_per_family=0).check()


def test_bench_family_compares_both_in_one_run(tiny_model_dir, tmp_path):
    titles = variant_titles()
    (tmp_path / "items.csv").write_text("item_id,title\n" + "".join(f"i{n},\"{t}\"\n" for n, t in enumerate(titles)))
    rows = "".join(f"u{u},i{(u * 7 + t * 5) % len(titles)},{t}\n" for u in range(12) for t in range(4))
    (tmp_path / "log.csv").write_text("user_id,item_id,timestamp\n" + rows)
    cmd = [sys.executable, str(Path(__file__).parents[2] / "eval" / "bench_family.py"), "--dataset", "interactions",
           "--interactions", str(tmp_path / "log.csv"), "--catalog", str(tmp_path / "items.csv"),
           "--model", str(tiny_model_dir), "--users", "6", "--batch-size", "3", "-k", "8", "--max-per-family", "1",
           "--out", str(tmp_path / "bench.json")]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    plain, capped = json.loads((tmp_path / "bench.json").read_text())
    assert (plain["cap"], capped["cap"]) == ("none", "1") and plain["users"] == capped["users"] == 6
    assert plain["past_cap"] > 0 and capped["past_cap"] == 0 and plain["ratio"] == 1.0
    bad = subprocess.run([*cmd[:-4], "--max-per-family", "0"], capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "max_per_family must be a whole number" in bad.stderr

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genrec import Catalog
from genrec.grounding import Grounder, normalize_title, split_list, split_year, title_score, title_scores

MOVIES = [
    ("1", "Matrix, The (1999)"),
    ("2", "Toy Story (1995)"),
    ("3", "Heat (1995)"),
    ("4", "Heat (1995)"),  # the same film listed twice, as in MovieLens
    ("5", "Monsters, Inc. (2001)"),
    ("6", "Godfather: Part II, The (1974)"),
    ("7", "Godfather, The (1972)"),
    ("8", "Amélie (2001)"),
    ("9", "City of Lost Children, The (Cité des enfants perdus, La) (1995)"),
    ("10", "Shawshank Redemption, The (1994)"),
    ("11", "Seven (Se7en) (1995)"),
    ("12", "Star Wars (1977)"),
]


@pytest.fixture(scope="module")
def grounder():
    return Grounder(Catalog.from_records([{"item_id": i, "title": t} for i, t in MOVIES]))


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Matrix, The (1999)", "the matrix 1999"),
        ("The Matrix (1999)", "the matrix 1999"),
        ("  the   MATRIX!  (1999) ", "the matrix 1999"),
        ("Amélie", "amelie"),
        ("Godfather: Part II, The (1974)", "the godfather part 2 1974"),
        ("Beauty & the Beast", "beauty and the beast"),
        ("City of Lost Children, The (Cité des enfants perdus, La) (1995)", "the city of lost children cite des enfants perdus la 1995"),
    ],
)
def test_normalize_title(text, expected):
    assert normalize_title(text) == expected


def test_split_year():
    assert split_year("Heat (1995)") == ("Heat", "1995")
    assert split_year("Heat") == ("Heat", None)
    assert normalize_title("Heat (1995)", keep_year=False) == "heat"


@pytest.mark.parametrize(
    "query, item",
    [
        ("the matrix", "1"),
        ("The Matrix (1999)", "1"),
        ("Matrix", "1"),
        ("toy story", "2"),
        ("Toy Stroy", "2"),  # misspelt
        ("Story Toy", "2"),  # reordered
        ("Shawshank", "10"),  # partial
        ("godfather part 2", "6"),
        ("amelie", "8"),
        ("City of Lost Children", "9"),
        ("I'd suggest Star Wars", "12"),
    ],
)
def test_ground_finds_the_item(grounder, query, item):
    matches = grounder.ground(query)
    assert matches and matches[0].item_id == item


def test_exact_match_returns_only_that_title(grounder):
    matches = grounder.ground("The Matrix")
    assert [m.item_id for m in matches] == ["1"] and matches[0].score == 100.0


def test_wrong_year_scores_lower(grounder):
    assert grounder.ground("Star Wars (1978)")[0].score < grounder.ground("Star Wars (1977)")[0].score


def test_abstains_below_threshold(grounder):
    assert grounder.ground("qwerty uiop") == []
    assert grounder.ground("the usual suspects") == []
    assert grounder.ground("") == [] and grounder.ground("   ") == []
    assert grounder.ground("toy stroy", threshold=99) == []


def test_shared_title_returns_every_id(grounder):
    assert [m.item_id for m in grounder.ground("Heat")] == ["3", "4"]


def test_search_has_no_threshold(grounder):
    assert len(grounder.search("xyz", limit=3)) == 3


def test_split_list_forms():
    assert split_list("1. Heat\n2. Toy Story\n\n3) Alien") == ["Heat", "Toy Story", "Alien"]
    assert split_list("- **Heat** (1995)\n* `Alien`") == ["Heat (1995)", "Alien"]
    assert split_list("Heat, Alien and Jaws") == ["Heat", "Alien", "Jaws"]
    known = {normalize_title("Monsters, Inc."), normalize_title("Matrix, The")}
    pieces = split_list("Monsters, Inc., Heat and Matrix, The", lambda s: normalize_title(s) in known)
    assert pieces == ["Monsters, Inc", "Heat", "Matrix, The"]


def test_ground_list_keeps_ungrounded_pieces(grounder):
    mentions = grounder.ground_list("1. Toy Story - a classic\n2. Some Film Nobody Made\n3. Monsters, Inc.")
    assert [m.grounded for m in mentions] == [True, False, True]
    assert [m.matches[0].item_id for m in mentions if m.grounded] == ["2", "5"]
    inline = grounder.ground_list("Monsters, Inc., Heat and The Matrix")
    assert [m.matches[0].item_id for m in inline] == ["5", "3", "1"]


words = st.text(alphabet=st.characters(codec="utf-8", categories=("L", "N", "Zs", "P")), max_size=30)


@settings(max_examples=300, deadline=None)
@given(words, st.lists(words, min_size=1, max_size=8))
def test_batch_scorer_equals_reference(query, choices):
    fast = title_scores(query, choices)
    slow = [title_score(query, c) for c in choices]
    assert fast.tolist() == pytest.approx(slow, abs=1e-3)


@settings(max_examples=200, deadline=None)
@given(words)
def test_normalize_is_idempotent_on_its_output(text):
    once = normalize_title(text, keep_year=False)
    assert normalize_title(once, keep_year=False) == once


def _typo(rng: random.Random, title: str) -> str:
    chars = list(title)
    i = rng.randrange(len(chars))
    kind = rng.choice(["drop", "swap", "repeat"])
    if kind == "drop" and len(chars) > 3:
        del chars[i]
    elif kind == "swap" and i + 1 < len(chars):
        chars[i], chars[i + 1] = chars[i + 1], chars[i]
    else:
        chars.insert(i, chars[i])
    return "".join(chars)


def test_candidate_index_agrees_with_full_scan(ml100k_dir):
    catalog = Catalog.from_file(ml100k_dir / "u.item", sep="|", encoding="latin-1", header=False)
    indexed = Grounder(catalog, full_scan_below=0, candidates=100)
    rng = random.Random(0)
    agree = total = 0
    for title in rng.sample(catalog.unique_titles, 200):
        query = _typo(rng, normalize_title(title, keep_year=False))
        best_full = indexed.full_scan(query, limit=1)
        best_fast = indexed._fuzzy_scores(query, 1, 0.0)
        total += 1
        # the same top score (ties may pick any of the tied titles)
        agree += bool(best_fast) and best_fast[0][1] == pytest.approx(best_full[0][1])
    assert agree / total >= 0.99


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(words, words.map(lambda w: f"{w} (1999)"), words.map(lambda w: f"{w}, The (2001)")), min_size=1, max_size=10, unique=True).filter(lambda ts: all(t.strip() for t in ts)))
def test_grounder_forms_equal_normalize_title(titles):
    catalog = Catalog.from_records([{"item_id": str(i), "title": t} for i, t in enumerate(titles)])
    g = Grounder(catalog)
    for n, title in enumerate(catalog.unique_titles):
        assert g.with_year[n] == normalize_title(title)
        assert g.without_year[n] == normalize_title(title, keep_year=False)

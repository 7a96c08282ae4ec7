"""Title text in one place: what grounding, mention finding and the dataset loaders share."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genrec import Catalog, MissingDependencyError
from genrec.errors import require
from genrec.text import (
    generation_title,
    natural_title,
    normalize_title,
    normalize_words,
    short_titles,
    strip_leading_article,
    with_years,
)


@pytest.mark.parametrize(
    "a, b",
    [
        ("Matrix, The (1999)", "The Matrix (1999)"),
        ("The Matrix (1999)", "the matrix 1999"),
        ("Amélie", "AMELIE"),
        ("Rocky II", "Rocky 2"),
        ("Fast & Furious", "fast and furious"),
    ],
)
def test_normalize_title_ignores_what_people_write_differently(a, b):
    assert normalize_title(a) == normalize_title(b)


def test_forms_of_a_title():
    assert natural_title("Shawshank Redemption, The (1994)") == "The Shawshank Redemption (1994)"
    assert generation_title("Heat\n  (1995)") == "Heat (1995)"
    assert normalize_title("Heat (1995)", keep_year=False) == "heat"
    assert normalize_words("Star Wars: Episode IV") == "star wars episode 4"
    assert strip_leading_article("the matrix") == "matrix" and strip_leading_article("the") == "the"


def test_mentions_find_movielens_style_titles():
    catalog = Catalog.from_records(
        [{"item_id": "1", "title": "Matrix, The (1999)"}, {"item_id": "2", "title": "Heat (1995)"}, {"item_id": "3", "title": "The Thing"}]
    )
    found = catalog.grounder.find_mentions("Loved Matrix, The and Thing, The; Heat, a classic.")
    assert [[m.item_id for m in matches] for _, matches in found] == [["1"], ["3"], ["2"]]
    assert [span for span, _ in found] == ["Matrix, The", "Thing, The", "Heat"]


def test_a_missing_optional_package_names_its_extra():
    with pytest.raises(MissingDependencyError, match=r"pip install 'genrec\[ray\]'") as info:
        require("genrec_no_such_package", "ray", "genrec batch")
    assert isinstance(info.value, ImportError)


def test_with_years_keeps_a_year_only_where_another_film_needs_it():
    titles = ["Heat (1995)", "Sabrina (1954)", "Sabrina (1995)", "sabrina (1995)", "Chasing Amy (1997)",
              "Chasing Amy (1997)", "Unknown", "Unknown (2006)", "Land Before Time III (1995) (V)"]  # fmt: skip
    assert with_years(titles, "always") == titles
    assert with_years(titles, "ambiguous") == [
        "Heat", "Sabrina (1954)", "Sabrina (1995)", "sabrina (1995)",  # one film written twice, another of 1954
        "Chasing Amy", "Chasing Amy",  # the same film twice stays one title twice, as the file has it
        "Unknown", "Unknown (2006)",  # a year-less title and a dated one of the same name
        "Land Before Time III (1995) (V)",  # the year is not at the end: the title is left as it is
    ]  # fmt: skip
    with pytest.raises(ValueError, match="always, ambiguous"):
        with_years(titles, "never")


def test_short_titles_keep_the_words_that_tell_products_apart():
    titles = [
        "HATCHBOX PLA 3D Printer Filament, 1 kg Spool, 1.75 mm, Black",
        "HATCHBOX PLA 3D Printer Filament, 1 kg Spool, 1.75 mm, White",
        "Electrical Tape, 3/4 x 66 feet, UL listed",
        "Kapton Tape (Polyimide) - 1/2 X 36 Yds",
        "Kapton tape (polyimide) - 1/2 x 36 yds",  # the matcher's same title: cut the same way
        "Gloves,   Nitrile",
        "Acme Drill",
        "Acme Drill 18V",
    ]
    assert short_titles(titles, 3) == [
        "HATCHBOX PLA 3D Printer Filament, 1 kg Spool, 1.75 mm, Black",  # only the colour differs
        "HATCHBOX PLA 3D Printer Filament, 1 kg Spool, 1.75 mm, White",
        "Electrical Tape, 3/4",  # no other title starts so; the cut drops nothing but the rest
        "Kapton Tape (Polyimide)",
        "Kapton tape (polyimide)",
        "Gloves, Nitrile",  # short titles stay whole, written as the model writes them
        "Acme Drill",
        "Acme Drill 18V",  # one title is a word prefix of another: both stay whole
    ]
    assert short_titles(titles, 1)[2:6] == ["Electrical", "Kapton", "Kapton", "Gloves"]
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="at least 1"):
            short_titles(titles, bad)


_WORDS = st.sampled_from(["Acme", "acme", "Drill", "18V", "-", "Set,", "of", "10", "(Black)", "&", "and"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(_WORDS, min_size=1, max_size=7).map(" ".join), min_size=1, max_size=12), st.integers(1, 4))
def test_short_titles_are_prefixes_the_matcher_tells_apart(titles, n):
    forms = short_titles(titles, n)
    assert len(forms) == len(titles)
    for title, form in zip(titles, forms):
        words = title.split()
        if len(words) <= n:
            assert form == generation_title(title)
        else:  # the first n words or more, less the punctuation a cut ends on
            cuts = [" ".join(words[:k]) for k in range(n, len(words) + 1)]
            assert form in cuts or any(form == c.rstrip(" ,;:-&+(/") != "" for c in cuts[:-1])
    for a, fa in zip(titles, forms):
        for b, fb in zip(titles, forms):
            if normalize_title(a) == normalize_title(b):
                assert normalize_title(fa) == normalize_title(fb)
            else:
                assert normalize_title(fa) != normalize_title(fb)

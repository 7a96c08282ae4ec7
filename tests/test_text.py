"""Title text in one place: what grounding, mention finding and the dataset loaders share."""

from __future__ import annotations

import pytest

from genrec import Catalog, MissingDependencyError
from genrec.errors import require
from genrec.text import generation_title, natural_title, normalize_title, normalize_words, strip_leading_article, with_years


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

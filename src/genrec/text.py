"""Title text in one place: the form the model writes, the form people write, and the
normalised form matching compares. Grounding, mention finding and the dataset loaders all use
these, so "Matrix, The (1999)", "The Matrix (1999)" and "the matrix" agree everywhere.
"""

from __future__ import annotations

import re
import unicodedata
from .errors import ConfigError

__all__ = [
    "ARTICLES",
    "generation_title",
    "split_year",
    "fold",
    "move_article",
    "has_moved_article",
    "natural_title",
    "TITLE_YEARS",
    "with_years",
    "short_titles",
    "normalize_title",
    "normalize_words",
    "strip_leading_article",
]

ARTICLES = "the|a|an|les|la|le|l'|il|el|das|der|die|los|las|un|une|lo|den|det|de"
_YEAR = re.compile(r"\s*\((\d{4})(?:/[IVX]+)?\)\s*$")
_MOVED_ARTICLE = re.compile(rf"^(?P<main>.+?),\s*(?P<article>{ARTICLES})(?P<rest>\s*\(.*\))?\s*$", re.IGNORECASE)
_NON_WORD = re.compile(r"[^\w]+")
_ROMAN = {"ii": "2", "iii": "3", "iv": "4", "v": "5", "vi": "6", "vii": "7", "viii": "8", "ix": "9", "x": "10"}


def generation_title(title: str) -> str:
    """The form of a title the model writes: whitespace runs (newlines included) become one space."""
    return " ".join(title.split())


def split_year(text: str) -> tuple[str, str | None]:
    """``"Heat (1995)"`` -> ``("Heat", "1995")``; no year -> ``(text, None)``."""
    match = _YEAR.search(text)
    if match:
        return text[: match.start()], match.group(1)
    return text, None


def fold(text: str) -> str:
    """Case- and accent-insensitive form."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()


def move_article(title: str) -> str:
    """"Matrix, The" -> "The Matrix" (a parenthesised alternative title may follow)."""
    match = _MOVED_ARTICLE.match(title)
    if not match:
        return title
    rest = match.group("rest") or ""
    return f"{match.group('article')} {match.group('main')}{rest}"


def has_moved_article(text: str) -> bool:
    return _MOVED_ARTICLE.match(text) is not None


def natural_title(title: str) -> str:
    """MovieLens writes "Matrix, The (1999)"; people and language models write "The Matrix (1999)"."""
    body, year = split_year(title)
    body = move_article(body.strip())
    return f"{body} ({year})" if year else body


TITLE_YEARS = ("always", "ambiguous")


def with_years(titles: list[str], years: str = "always") -> list[str]:
    """Film titles with their release year always, or only where another title needs it.

    ``"ambiguous"`` writes "Heat" for "Heat (1995)" unless a film of another year shares the
    title ("Sabrina (1954)", "Sabrina (1995)" keep theirs). SmolLM2's tokenizer spells a year
    digit by digit, so on MovieLens " (1995)" is six of a title's 11.6 tokens on average (its
    closing newline counted): without it a training window or a beam holds half the tokens.
    Titles without a year at the end stay as they are.
    """
    if years not in TITLE_YEARS:
        raise ConfigError(f"title years must be one of {', '.join(TITLE_YEARS)}, got {years!r}")
    if years == "always":
        return list(titles)
    parts = [split_year(t) for t in titles]
    # Titles the matcher would take for one another count as the same title.
    bare = [normalize_title(body, keep_year=False) for body, _ in parts]
    films: dict[str, set[str]] = {}
    for key, title in zip(bare, titles):
        films.setdefault(key, set()).add(normalize_title(title))
    return [
        title if year is None or len(films[key]) > 1 else body.rstrip()
        for title, (body, year), key in zip(titles, parts, bare)
    ]


_CUT_PUNCTUATION = " ,;:-\u2013\u2014/&+("


def short_titles(titles: list[str], min_words: int) -> list[str]:
    """Each title cut to its first ``min_words`` words, or to as many more as it takes to tell it
    apart from every other title.

    Product titles run to 30+ tokens of specifications ("6063 Aluminum U-Channel, Unpolished (Mill)
    Finish, T52 Temper, AMS QQ-A-200/ASTM B221, ..."); the words that say which product it is come
    first. A cut title drops the punctuation it would end on. Titles the matcher would take for one
    another (``normalize_title``) count as the same title, so two different titles never get cut
    to forms the matcher confuses; identical titles stay identical. Whitespace runs become one
    space, as the model writes titles (``generation_title``).
    """
    if isinstance(min_words, bool) or not isinstance(min_words, int) or min_words < 1:
        raise ConfigError(f"title words must be a whole number of at least 1, got {min_words!r}")
    words = [title.split() for title in titles]
    full = [normalize_title(" ".join(w)) for w in words]
    cut = [min(min_words, len(w)) for w in words]

    def form(n: int) -> str:
        kept = " ".join(words[n][: cut[n]])
        return kept if cut[n] == len(words[n]) else kept.rstrip(_CUT_PUNCTUATION) or kept

    forms = [form(n) for n in range(len(titles))]
    keys = [normalize_title(text) for text in forms]
    while True:
        by_form: dict[str, list[int]] = {}
        by_title: dict[str, list[int]] = {}
        for n, key in enumerate(keys):
            by_form.setdefault(key, []).append(n)
            by_title.setdefault(full[n], []).append(n)
        # A title takes one word more, if it has one, where its form is shared with a different
        # title, differs from the form of a title the matcher takes for it ("- Acme", "Acme"),
        # or is no words at all to the matcher ("-").
        longer = {n for members in by_form.values() if len({full[m] for m in members}) > 1 for n in members}
        longer |= {n for members in by_title.values() if len({keys[m] for m in members}) > 1 for n in members}
        longer |= {n for n, key in enumerate(keys) if not key}
        longer = {n for n in longer if cut[n] < len(words[n])}
        if not longer:
            return forms
        for n in longer:  # only the forms that grew are normalised again
            cut[n] += 1
            forms[n] = form(n)
            keys[n] = normalize_title(forms[n])


def normalize_words(text: str) -> str:
    """Folded words joined by single spaces; "&" reads "and"; roman numerals II-X become digits
    ("Part II" == "Part 2"). No article or year handling: see ``normalize_title``."""
    folded = fold(text).replace("&", " and ")
    return " ".join(_ROMAN.get(word, word) for word in _NON_WORD.sub(" ", folded).split())


def normalize_title(text: str, *, keep_year: bool = True) -> str:
    """Case-, accent- and punctuation-insensitive form of a title; a moved article goes back to
    the front; the year (if any) is kept at the end or dropped."""
    title, year = split_year(text.strip())
    title = normalize_words(move_article(title.strip()))
    if keep_year and year:
        return f"{title} {year}" if title else year
    return title


def strip_leading_article(norm: str) -> str:
    """A normalised title without its leading article ("the matrix" -> "matrix")."""
    head, _, tail = norm.partition(" ")
    return tail if tail and re.fullmatch(ARTICLES, head) else norm

"""Grounding free text onto catalog items: our unconstrained output, or any other LLM's answer.

Titles are normalised (case, accents, punctuation, whitespace, MovieLens-style moved articles
"Matrix, The (1999)" == "The Matrix (1999)", an optional year); an exact lookup of the normalised
form comes first, then rapidfuzz scoring. On large catalogs the fuzzy stage scores a candidate set
preselected with a character-trigram index, so one query against a million titles takes
milliseconds instead of seconds.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from rapidfuzz import fuzz, process

from .text import has_moved_article, normalize_title, normalize_words, split_year, strip_leading_article

__all__ = [
    "Match",
    "Mention",
    "Grounder",
    "TitleTable",
    "split_list",
    "DEFAULT_THRESHOLD",
    "title_score",
    "title_scores",
]

DEFAULT_THRESHOLD = 80.0
_LIST_MARKER = re.compile(r"^\s*(?:\d+[.)]|[-*\u2022]|#+)\s*")
_LIST_SEPARATOR = re.compile(r"\s*(?:,|;|\band\b|\bor\b|&)\s*", re.IGNORECASE)
_EXPLANATION = re.compile(r"\s+(?:-|\u2013|\u2014|:)\s+|\s*[:\u2014]\s*")


_SET_WEIGHT = 0.9


def title_score(s1: str, s2: str, *, processor: Callable[[str], str] | None = None, score_cutoff: float | None = None) -> float:
    """Similarity of two titles, 0-100, with rapidfuzz's scorer signature.

    Mostly ``token_set_ratio`` (a title named in part or with words reordered still scores high),
    plus a share of ``token_sort_ratio`` so that, of two titles containing the query, the closer
    in length wins. Unlike ``WRatio`` it does not give ~86 to any title sharing one word ("the").
    """
    if processor is not None:
        s1, s2 = processor(s1), processor(s2)
    score = _SET_WEIGHT * fuzz.token_set_ratio(s1, s2) + (1 - _SET_WEIGHT) * fuzz.token_sort_ratio(s1, s2)
    return score if score_cutoff is None or score >= score_cutoff else 0.0


def title_scores(query: str, choices: Sequence[str]) -> np.ndarray:
    """``title_score(query, c)`` for every choice, computed in rapidfuzz's C++ batch routine."""
    if not choices:
        return np.zeros(0, dtype=np.float32)
    token_set = process.cdist([query], choices, scorer=fuzz.token_set_ratio, dtype=np.float32)[0]
    token_sort = process.cdist([query], choices, scorer=fuzz.token_sort_ratio, dtype=np.float32)[0]
    return _SET_WEIGHT * token_set + (1 - _SET_WEIGHT) * token_sort


@dataclass(frozen=True)
class Match:
    """A catalog item that a piece of text refers to, with a score from 0 to 100."""

    item_id: str
    title: str
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"item_id": self.item_id, "title": self.title, "score": self.score}


@dataclass(frozen=True)
class Mention:
    """One piece of a list answer and the items it grounds to (empty: could not be grounded)."""

    text: str
    matches: list[Match] = field(default_factory=list)

    @property
    def grounded(self) -> bool:
        return bool(self.matches)


class _TrigramIndex:
    """Character-trigram postings over normalised titles, as flat numpy arrays (built vectorised).

    Grams are hashed into ``2**bits`` buckets; a collision only adds candidates, which the exact
    rapidfuzz scoring then ranks. 32-bit arithmetic throughout keeps a million titles in a few
    hundred megabytes.
    """

    def __init__(self, strings: Sequence[str], bits: int = 22):
        self.n = len(strings)
        self.mask = np.uint32((1 << bits) - 1)
        lengths = np.fromiter((len(s) + 3 for s in strings), dtype=np.int64, count=self.n)
        codes = np.frombuffer("".join(f"  {s} " for s in strings).encode("utf-32-le"), dtype=np.uint32)
        # a gram starting in the last two characters of a string would cross into the next one
        ends = np.cumsum(lengths)
        starts_ok = np.ones(len(codes), dtype=bool)
        starts_ok[ends - 1] = False
        starts_ok[ends - 2] = False
        valid = np.nonzero(starts_ok[: max(len(codes) - 2, 0)])[0]
        grams = self._hash(codes[valid], codes[valid + 1], codes[valid + 2])
        keys = grams.astype(np.int64) << 32
        del grams, codes, starts_ok
        keys |= np.searchsorted(ends, valid, side="right")  # the title each gram belongs to
        del valid
        # one posting per (gram, title): sort in place and drop repeats (np.unique is several
        # times slower on tens of millions of keys)
        keys.sort()
        keys = keys[np.concatenate([[True], keys[1:] != keys[:-1]])]
        self.titles = (keys & 0xFFFFFFFF).astype(np.int32)
        self.starts = np.searchsorted(keys >> 32, np.arange(int(self.mask) + 2, dtype=np.int64))
        self.gram_counts = np.bincount(self.titles, minlength=self.n).astype(np.float32)

    def _hash(self, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):  # multiplication wraps around in 32 bits, as a hash should
            return ((a * np.uint32(0x9E3779B1)) ^ (b * np.uint32(0x85EBCA77)) ^ (c * np.uint32(0xC2B2AE3D))) & self.mask

    def query_grams(self, text: str) -> np.ndarray:
        codes = np.frombuffer(f"  {text} ".encode("utf-32-le"), dtype=np.uint32)
        if len(codes) < 3:
            return np.zeros(0, dtype=np.int64)
        return np.unique(self._hash(codes[:-2], codes[1:-1], codes[2:])).astype(np.int64)

    def candidates(self, text: str, limit: int) -> np.ndarray:
        grams = self.query_grams(text)
        if len(grams) == 0:
            return np.zeros(0, dtype=np.int64)
        lists = [self.titles[self.starts[g] : self.starts[g + 1]] for g in grams]
        hits = np.concatenate(lists)
        if len(hits) == 0:
            return np.zeros(0, dtype=np.int64)
        counts = np.bincount(hits, minlength=self.n).astype(np.float32)
        # Dice similarity of gram sets: favours titles of the query's length over long titles
        # that merely contain many of its grams
        score = 2 * counts / (self.gram_counts + len(grams))
        limit = min(limit, self.n)
        top = np.argpartition(-score, limit - 1)[:limit]
        return top[score[top] > 0]


def _add(table: dict[str, Any], key: str, n: int) -> None:
    """Map ``key`` to title ``n``: a plain int for the usual single title, a list when shared
    (a million one-element lists would cost hundreds of megabytes)."""
    found = table.get(key)
    if found is None:
        table[key] = n
    elif isinstance(found, list):
        found.append(n)
    else:
        table[key] = [found, n]


def _get(table: dict[str, Any], key: str) -> list[int]:
    found = table.get(key)
    return [] if found is None else found if isinstance(found, list) else [found]


class TitleTable(Protocol):
    """What grounding needs of a catalog: its distinct titles, and the items behind each."""

    ids: list[str]
    titles: list[str]
    unique_titles: list[str]
    title_positions: list[list[int]]


class Grounder:
    """Maps text onto catalog titles with ``title_score``. Catalogs of ``full_scan_below`` titles
    or more score only a trigram-preselected pool of ``candidates`` titles per query."""

    def __init__(
        self,
        catalog: TitleTable,
        *,
        full_scan_below: int = 50_000,
        candidates: int = 200,
    ) -> None:
        self.catalog = catalog
        self.candidates = candidates
        titles = catalog.unique_titles
        self.years = [split_year(t.strip())[1] for t in titles]
        self.without_year = [normalize_title(t, keep_year=False) for t in titles]
        # the with-year form is the bare form plus the year: no second normalisation pass
        self.with_year = [
            (f"{bare} {year}" if bare else year) if year else bare for bare, year in zip(self.without_year, self.years)
        ]
        self._exact: dict[str, Any] = {}
        self._no_year: dict[str, Any] = {}
        self._no_article: dict[str, Any] = {}
        for n, (full, bare) in enumerate(zip(self.with_year, self.without_year)):
            _add(self._exact, full, n)
            _add(self._no_year, bare, n)
            _add(self._no_article, strip_leading_article(bare), n)
        self._trigrams = _TrigramIndex(self.without_year) if len(titles) >= full_scan_below else None

    def _matches(self, scored: list[tuple[int, float]], limit: int) -> list[Match]:
        """Title numbers with scores -> one Match per item ID (a shared title yields all its IDs)."""
        out: list[Match] = []
        seen: set[int] = set()
        for n, score in sorted(scored, key=lambda p: (-p[1], p[0])):
            if n in seen:
                continue
            seen.add(n)
            for pos in self.catalog.title_positions[n]:
                out.append(Match(self.catalog.ids[pos], self.catalog.titles[pos], round(float(score), 2)))
            if len(seen) >= limit:
                break
        return out

    def _exact_scores(self, text: str) -> list[tuple[int, float]]:
        full = normalize_title(text)
        bare = normalize_title(text, keep_year=False)
        year = split_year(text.strip())[1]
        if full in self._exact:
            return [(n, 100.0) for n in _get(self._exact, full)]
        found = _get(self._no_year, bare) or _get(self._no_article, strip_leading_article(bare))
        scored = []
        for n in found:
            # the title is right but the year named differs from the catalog's: a weaker match
            scored.append((n, 100.0 if year is None or self.years[n] in (None, year) else 85.0))
        return scored

    def _query(self, text: str) -> tuple[str, list[str]]:
        """The normalised query and the title forms to compare it with (with years only when the
        query names one)."""
        year = split_year(text.strip())[1]
        query = normalize_title(text, keep_year=year is not None)
        return query, self.with_year if year is not None else self.without_year

    def _fuzzy_scores(self, text: str, limit: int, cutoff: float) -> list[tuple[int, float]]:
        query, choices = self._query(text)
        if not query:
            return []
        if self._trigrams is None:
            pool = np.arange(len(choices))
        else:
            pool = self._trigrams.candidates(normalize_title(text, keep_year=False), self.candidates)
        scores = title_scores(query, [choices[n] for n in pool])
        return _best(pool, scores, limit, cutoff)

    def full_scan(self, text: str, *, limit: int = 5) -> list[tuple[int, float]]:
        """Reference scoring against every title (no candidate preselection), for benchmarks."""
        query, choices = self._query(text)
        return _best(np.arange(len(choices)), title_scores(query, choices), limit, 0.0)

    def ground(self, text: str, *, limit: int = 5, threshold: float = DEFAULT_THRESHOLD) -> list[Match]:
        """Items ``text`` refers to, best first, scored 0-100; empty (abstain) when nothing reaches
        ``threshold``. An exact normalised match returns only the title(s) it names."""
        if not isinstance(text, str) or not text.strip():
            return []
        exact = self._exact_scores(text)
        if exact and max(s for _, s in exact) >= threshold:
            return self._matches(exact, limit)
        return self._matches(self._fuzzy_scores(text, limit, threshold), limit)

    def find_mentions(self, text: str, *, max_words: int = 12) -> list[tuple[str, list[Match]]]:
        """Catalog titles named inside running text ("I loved The Matrix but not Heat"), in order,
        as ``(span, matches)``.

        Every run of up to ``max_words`` words is looked up in the exact-title tables (longest
        first), so the cost depends on the text, not on the catalog size. A one-word title counts
        only when it is capitalised and not the first word of a sentence, or quoted: "Up" the
        film, not "up" the word.
        """
        words = list(_WORD.finditer(text))
        keys = [normalize_words(m.group()) for m in words]
        found: list[tuple[str, list[Match]]] = []
        i = 0
        while i < len(words):
            for length in range(min(max_words, len(words) - i), 0, -1):
                key = " ".join(k for k in keys[i : i + length] if k)
                if not key:
                    continue
                span = text[words[i].start() : words[i + length - 1].end()]
                numbers = _get(self._exact, key) or _get(self._no_year, key) or _get(self._no_article, key)
                if not numbers and length > 1 and has_moved_article(span):
                    # MovieLens style, "Matrix, The": the article goes back to the front
                    moved = normalize_title(span)
                    numbers = _get(self._exact, moved) or _get(self._no_year, moved)
                if not numbers or (length == 1 and not _stands_out(text, words[i])):
                    continue
                found.append((span, self._matches([(n, 100.0) for n in numbers], len(numbers))))
                i += length
                break
            else:
                i += 1
        return found

    def search(self, query: str, *, limit: int = 10) -> list[Match]:
        """Best fuzzy matches with no threshold (a catalog search box)."""
        if not query.strip():
            return []
        scored = self._exact_scores(query) + self._fuzzy_scores(query, limit, 0.0)
        return self._matches(scored, limit)

    def ground_list(self, text: str, *, threshold: float = DEFAULT_THRESHOLD) -> list[Mention]:
        """Split a list answer ("1. X\\n2. Y", "X, Y and Z") and ground each piece.

        Pieces that fail are kept (``grounded`` False), so nothing the text named is lost.
        """
        mentions: list[Mention] = []
        for piece in split_list(text, lambda span: bool(self._exact_scores(span))):
            matches = self.ground(piece, limit=1, threshold=threshold)
            if not matches:
                # "Title (1999) - because ..." / "Title: why": try the part before the explanation
                head = _EXPLANATION.split(piece, maxsplit=1)[0].strip()
                if head and head != piece:
                    matches = self.ground(head, limit=1, threshold=threshold)
            mentions.append(Mention(piece, matches))
        return mentions


def _best(pool: np.ndarray, scores: np.ndarray, limit: int, cutoff: float) -> list[tuple[int, float]]:
    """The ``limit`` best (title number, score) pairs at or above ``cutoff``; ties go to the lower
    title number, so the order never depends on the candidate pool's order."""
    keep = scores >= cutoff
    pool, scores = pool[keep], scores[keep]
    order = np.lexsort((pool, -scores))[:limit]
    return [(int(pool[i]), float(scores[i])) for i in order]


_WORD = re.compile(r"[\w'\u2019]+(?:[.:-][\w'\u2019]+)*")


def _stands_out(text: str, word: re.Match) -> bool:
    """A single word reads as a title: quoted, or capitalised in mid-sentence."""
    before = text[: word.start()].rstrip()
    if before.endswith(("\"", "'", "\u201c", "*", "_")):
        return True
    first = word.group()[0]
    return first.isupper() and bool(before) and before[-1] not in ".!?:\n"


def _clean_piece(piece: str) -> str:
    piece = _LIST_MARKER.sub("", piece)
    piece = re.sub(r"\*\*|__|`", "", piece)
    return piece.strip().strip("\"'*_`\u201c\u201d").strip().rstrip(".;,").strip()


def split_list(text: str, is_title: Callable[[str], bool] = lambda _: False) -> list[str]:
    """Pieces of a list answer. Lines are items when there are several; a single line is split on
    commas, semicolons and "and", except where the joined pieces form a known title
    ("Monsters, Inc.", "Matrix, The") according to ``is_title``."""
    lines = [_clean_piece(line) for line in text.splitlines()]
    lines = [line for line in lines if line]
    if len(lines) > 1:
        return lines
    if not lines:
        return []
    line = lines[0]
    # part boundaries as character spans, so joined parts are exact slices of the original line
    cuts = [(m.start(), m.end()) for m in _LIST_SEPARATOR.finditer(line)]
    if not cuts:
        return lines
    bounds = [(0, cuts[0][0])] + [(cuts[i][1], cuts[i + 1][0]) for i in range(len(cuts) - 1)] + [(cuts[-1][1], len(line))]
    pieces: list[str] = []
    i = 0
    while i < len(bounds):
        # the longest run of parts that, joined as written, is a known title
        for j in range(len(bounds), i, -1):
            joined = _clean_piece(line[bounds[i][0] : bounds[j - 1][1]])
            if j == i + 1 or is_title(joined):
                pieces.append(joined)
                i = j
                break
    return [p for p in pieces if p]

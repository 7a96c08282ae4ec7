"""The prompt pipeline every task and training share: a history (item IDs or titles) and a request
in, the exact token ids the model is fed out.

``PromptPipeline.prepare`` runs the steps in order: resolve the references onto catalog items
(saying how each was read), keep the newest ``Limits.max_history_items``, render the task's
template, fit the history into the prompt's token budget (cut from the oldest end),
split the text at the answer boundary (the title context the title index is tokenised in), and
collect the titles the answer must not be (the history's, and anything excluded).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..catalog import Catalog
from ..decoding import TitleContext, TitleIndex, TitleIndexes, split_prompt_context
from ..errors import LimitError, UnknownItemError
from ..limits import Limits
from ..prompts import PromptLibrary, fit_history, to_model_text
from ..text import normalize_title
from .results import HistoryEntry

__all__ = ["PromptPipeline", "PreparedPrompt", "TITLE_THRESHOLD"]

log = logging.getLogger(__name__)

#: a history entry given as a title must match a catalog title this well (0-100)
TITLE_THRESHOLD = 90.0
#: every variable some built-in task template expects, for rendering a template with no data
_EMPTY_TASK_CONTEXT: dict[str, Any] = {"candidates": [], "conversation": [], "rejected": []}


@dataclass(frozen=True)
class PreparedPrompt:
    """One user's prompt, ready to decode."""

    template: str
    prompt_ids: list[int]
    prompt_text: str
    ctx: TitleContext
    banned_titles: frozenset[int]
    history_positions: list[int]
    history_used: int
    history_dropped: int
    history: tuple[HistoryEntry, ...] = ()  # how each entry was read, and whether it is in the prompt


class PromptPipeline:
    """Turns histories and requests into model prompts for one catalog, tokenizer and template set."""

    def __init__(
        self,
        catalog: Catalog,
        tokenizer: Any,
        prompts: PromptLibrary,
        indexes: TitleIndexes,
        *,
        max_context: int,
        end_ids: tuple[int, ...],
        end_text: str,
        special_tokens: Sequence[str],
        limits: Limits = Limits(),
        max_prompt_tokens: int | None = None,
    ) -> None:
        self.catalog = catalog
        self.tokenizer = tokenizer
        self.prompts = prompts
        self.indexes = indexes
        self.max_context = max_context
        self.end_ids = end_ids
        self.end_text = end_text
        self.special_tokens = list(special_tokens)
        self.limits = limits
        self.max_prompt_tokens = max_prompt_tokens

    # ---------------------------------------------------------------- items
    def resolve(self, refs: Sequence[Any], what: str = "history") -> list[int]:
        """Catalog positions for a mix of IDs and titles; one UnknownItemError lists everything unknown."""
        return self.read(refs, what)[0]

    def read(
        self, refs: Sequence[Any], what: str = "history", min_match_score: float | None = None
    ) -> tuple[list[int], list[HistoryEntry]]:
        """Catalog positions for a mix of IDs and titles, and how each was read. A title is matched
        fuzzily (at least ``TITLE_THRESHOLD``); with ``min_match_score``, a fuzzy match scoring
        below it counts as unknown. One UnknownItemError lists everything unknown."""
        self.limits.check_refs(refs, what)
        positions: list[int] = []
        entries: list[HistoryEntry] = []
        unknown: list[str] = []
        shown: list[str] = []  # each unknown entry as the error names it
        for ref in refs:
            key = str(ref).strip() if ref is not None else ""
            if key in self.catalog:
                positions.append(self.catalog.position(key))
                entries.append(HistoryEntry(key, key, self.catalog.title_of(key), "id", 100.0))
                continue
            matches = self.catalog.grounder.ground(key, limit=1, threshold=TITLE_THRESHOLD) if key else []
            if not matches:
                unknown.append(key)
                shown.append(repr(key))
                continue
            best = matches[0]
            exact = normalize_title(key) == normalize_title(best.title)
            if not exact and min_match_score is not None and best.score < min_match_score:
                unknown.append(key)
                shown.append(f"{key!r} (closest: {best.title!r}, score {best.score:.0f} < {min_match_score:g})")
                continue
            positions.append(self.catalog.position(best.item_id))
            entries.append(HistoryEntry(key, best.item_id, best.title, "title" if exact else "fuzzy", 100.0 if exact else float(best.score)))
        if unknown:
            listed = ", ".join(shown[:10]) + (" ..." if len(shown) > 10 else "")
            raise UnknownItemError(
                f"{len(unknown)} {what} item(s) are neither IDs nor titles in catalog {self.catalog.name!r}: {listed}", unknown
            )
        return positions, entries

    def items(self, positions: Sequence[int]) -> list[dict[str, Any]]:
        """The items at ``positions`` with all their attributes, as templates see them."""
        return [self.catalog.item_at(p) for p in positions]

    def title_number(self, position: int) -> int:
        return self.catalog.title_number_of(self.catalog.ids[position])

    # ---------------------------------------------------------------- text
    def render(self, template: str, items: Sequence[Mapping[str, Any]], request: str | None, **extra: Any) -> str:
        """The exact text the model sees for ``template`` with these history items."""
        context = {"history": list(items), "request": request, "kind": self.catalog.kind, **extra}
        return to_model_text(self.prompts.render(template, **context), self.tokenizer)

    def split(self, text: str, template: str) -> tuple[str, TitleContext]:
        """(text to feed, title context): the prompt ends where the answer's title begins; the
        title ends where ``template`` says (its ``title_end`` block), else with the answer."""
        end_text = self.prompts.title_end(template)
        if end_text is None:
            return split_prompt_context(text, self.special_tokens, self.end_ids, self.end_text)
        return split_prompt_context(text, self.special_tokens, (), end_text)

    def encode(self, text: str) -> list[int]:
        add_special = not getattr(self.tokenizer, "chat_template", None)
        return self.tokenizer(text, add_special_tokens=add_special)["input_ids"]

    def check_fits(self, n_tokens: int, what: str) -> None:
        if n_tokens > self.max_context:
            raise LimitError(f"{what} needs {n_tokens} tokens; the model's context holds {self.max_context}")

    # ---------------------------------------------------------------- titles
    def index(self, ctx: TitleContext) -> TitleIndex:
        return self.indexes.get(ctx)

    def title_context(self, template: str) -> TitleContext:
        """The context titles are written in after ``template``'s prompt."""
        return self.split(self.render(template, [], "", k=1, **_EMPTY_TASK_CONTEXT), template)[1]

    def prompt_budget(self, ctx: TitleContext) -> int:
        # room for the longest title and its end marker, within any budget set
        budgets = [self.max_context - self.index(ctx).max_depth - 1, self.max_prompt_tokens, self.limits.max_prompt_tokens]
        return min(b for b in budgets if b is not None)

    # ---------------------------------------------------------------- the whole pipeline
    def prepare(
        self,
        history: Sequence[Any],
        template: str,
        *,
        request: str | None = None,
        exclude: Sequence[Any] = (),
        exclude_history: bool = True,
        k: int = 1,
        extra: Mapping[str, Any] | None = None,
        min_match_score: float | None = None,
        strict_history: bool = False,
    ) -> PreparedPrompt:
        """Resolve, cap, render, fit, split and ban: one user's prompt for ``template``. Every
        history item is banned (with ``exclude_history``), also those left out of the prompt.
        ``min_match_score``: fuzzy history matches below it are refused as unknown;
        ``strict_history``: a history over ``Limits.max_history_items`` is refused, not cut."""
        self.limits.check_request(request)
        positions, entries = self.read(history, min_match_score=min_match_score)
        excluded = self.resolve(exclude, "exclude") if len(exclude) else []
        capped = len(positions) - self.limits.cap_history(len(positions), strict_history)
        items = self.items(positions[capped:])  # before any rendering: a long history costs no tokens
        variables = {"k": k, **(extra or {})}

        def render(subset: Sequence[Mapping[str, Any]]) -> str:
            return self.render(template, subset, request, **variables)

        ctx = self.split(render(items[-1:]), template)[1]
        text, dropped = fit_history(
            items, render, lambda rendered: len(self.encode(self.split(rendered, template)[0])), self.prompt_budget(ctx)
        )
        if dropped:
            log.warning("history cut to fit the prompt's tokens: the %d oldest of %d items left out", dropped, len(items))
        if capped:
            log.info("history capped: the %d oldest of %d items left out of the prompt", capped, len(positions))
        reasons = ["cap"] * capped + ["context"] * dropped + [None] * (len(items) - dropped)
        prompt_text, ctx = self.split(text, template)
        banned = {self.title_number(p) for p in excluded}
        if exclude_history:
            banned |= {self.title_number(p) for p in positions}
        return PreparedPrompt(
            template=template,
            prompt_ids=self.encode(prompt_text),
            prompt_text=prompt_text,
            ctx=ctx,
            banned_titles=frozenset(banned),
            history_positions=positions,
            history_used=len(items) - dropped,
            history_dropped=capped + dropped,
            history=tuple(replace(e, left_out=why) for e, why in zip(entries, reasons)),
        )

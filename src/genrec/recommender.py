"""The facade: ``Recommender(catalog, model).recommend(history, k)``.

A history (item IDs or titles) and an optional request are rendered through a prompt template,
the model writes titles under constrained beam search, and the titles come back as catalog items.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .catalog import Catalog
from .decoding import Hypothesis, PrefixCache, beam_search, score_continuations
from .errors import CatalogError, LimitError, UnknownItemError
from .grounding import DEFAULT_THRESHOLD, Match, Mention
from .index import TitleContext, TitleIndex, load_or_build_index, split_prompt_context, tokenizer_fingerprint
from .model import LoadedModel, cache_root, load_model
from .prompts import Prompt, PromptLibrary, fit_history, to_model_text

__all__ = [
    "Recommender",
    "Recommendation",
    "Recommendations",
    "Explanation",
    "ChatResponse",
    "Limits",
    "TRAINING_RECORD",
]

log = logging.getLogger(__name__)

#: file a fine-tuned model directory carries: which catalog and template it was trained with
TRAINING_RECORD = "genrec.json"
_TITLE_THRESHOLD = 90.0  # a history entry given as a title must match this well


@dataclass(frozen=True)
class Recommendation:
    """One recommended item. ``score`` is the log-probability of the model writing its title."""

    item_id: str
    title: str
    score: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Recommendations(list):
    """A list of Recommendation, best first, with what happened on the way:

    - ``history_used`` / ``history_dropped``: history items in the prompt, and the oldest ones cut
      to fit the model's context window;
    - unconstrained mode only: ``outputs`` (every generated text, best beam first), ``ungrounded``
      (those that matched no catalog item) and ``history_repeats`` (those that named an excluded
      item: one of the history, or of ``exclude=``).
    """

    def __init__(
        self,
        items: Iterable[Recommendation] = (),
        *,
        history_used: int = 0,
        history_dropped: int = 0,
        ungrounded: Sequence[str] = (),
        outputs: Sequence[str] = (),
        history_repeats: Sequence[str] = (),
        prompt_text: str = "",
    ) -> None:
        super().__init__(items)
        self.history_used = history_used
        self.history_dropped = history_dropped
        self.ungrounded = list(ungrounded)
        self.outputs = list(outputs)
        self.history_repeats = list(history_repeats)
        self.prompt_text = prompt_text

    def to_dataframe(self):
        import pandas as pd

        return pd.DataFrame([r.to_dict() for r in self], columns=["item_id", "title", "score"])

    def to_dicts(self) -> list[dict[str, Any]]:
        return [r.to_dict() for r in self]


@dataclass(frozen=True)
class Explanation:
    """Why an item fits a user: the text, and the catalog items it names (grounded)."""

    item_id: str
    title: str
    text: str
    mentions: list[Match]

    def __str__(self) -> str:
        return self.text

    def to_dict(self) -> dict[str, Any]:
        return {"item_id": self.item_id, "title": self.title, "text": self.text, "mentions": [m.to_dict() for m in self.mentions]}


@dataclass(frozen=True)
class ChatResponse:
    """The assistant's reply and the catalog items it recommends, each grounded to an item ID;
    ``mentioned`` are the items named in the conversation (never recommended again), of which
    ``rejected`` are those the user turned down."""

    text: str
    items: list[Recommendation]
    mentioned: list[Match]
    rejected: list[Match]

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "items": [r.to_dict() for r in self.items],
            "mentioned": [m.to_dict() for m in self.mentioned],
            "rejected": [m.to_dict() for m in self.rejected],
        }


@dataclass(frozen=True)
class Limits:
    """Bounds on what one call may ask for; each breach is a LimitError naming the bound."""

    max_k: int = 1000
    max_beams: int = 256
    max_history: int = 10_000
    max_request_chars: int = 4000
    max_candidates: int = 1000
    max_conversation_chars: int = 50_000
    max_turns: int = 200
    max_new_tokens: int = 512


@dataclass
class _Job:
    """One user's prepared request."""

    template: str
    prompt_ids: list[int]
    prompt_text: str
    ctx: TitleContext
    banned_titles: set[int]
    history_positions: list[int]
    history_used: int
    history_dropped: int


class Recommender:
    """Recommends catalog items by having a causal language model write their titles.

    ``model``: None (the embedded default, SmolLM2-135M-Instruct), a transformers model id, a local
    directory, or an already loaded ``PreTrainedModel`` (then pass ``tokenizer``).
    ``catalog``: None for the bundled demo catalog.
    Beam search is deterministic whatever the model's generation_config says; ``length_penalty``
    defaults to 0 because length normalisation favours long titles.

    Thread safety: one Recommender may serve several threads. Inference holds no per-call state
    on the object; the lazily built title indexes are guarded by a lock.
    """

    def __init__(
        self,
        catalog: Catalog | None = None,
        model: Any = None,
        *,
        tokenizer: Any = None,
        prompts_dir: str | Path | None = None,
        device: str | None = None,
        dtype: str | None = None,
        cache_dir: str | Path | None = None,
        use_disk_cache: bool = True,
        num_beams: int = 10,
        length_penalty: float = 0.0,
        max_prompt_tokens: int | None = None,
        batch_size: int = 8,
        grounding_threshold: float = DEFAULT_THRESHOLD,
        free_text_slack: int = 16,
        limits: Limits = Limits(),
    ) -> None:
        self.catalog = catalog if catalog is not None else Catalog.demo()
        if len(self.catalog) == 0:
            raise CatalogError(f"catalog {self.catalog.name!r} has no items: nothing to recommend ({self.catalog.report})")
        self.cache_dir = cache_root(cache_dir)
        self.use_disk_cache = use_disk_cache
        if model is None or isinstance(model, (str, Path)):
            self.lm = load_model(model, device=device, dtype=dtype, cache_dir=self.cache_dir)
            if model is not None:
                _check_training_record(Path(model), self.catalog)
        else:
            if tokenizer is None:
                raise ValueError("pass tokenizer= together with a loaded model")
            lm_device = next(model.parameters()).device
            self.lm = LoadedModel(model=model.eval(), tokenizer=tokenizer, name=type(model).__name__, device=lm_device)
        self.tokenizer = self.lm.tokenizer
        self.num_beams = num_beams
        self.length_penalty = length_penalty
        self.max_prompt_tokens = max_prompt_tokens
        self.batch_size = batch_size
        self.grounding_threshold = grounding_threshold
        self.free_text_slack = free_text_slack
        self.limits = limits
        self.special_tokens = _special_token_strings(self.tokenizer)
        self.prompts = PromptLibrary(prompts_dir, special_tokens=self.special_tokens)
        self.end_ids, self.end_text = _answer_end(self.tokenizer)
        self.pad_token_id = _pad_id(self.tokenizer)
        self._tokenizer_hash = tokenizer_fingerprint(self.tokenizer)
        self._indexes: dict[TitleContext, TitleIndex] = {}
        # per template: the cache of the prompt text every user's prompt starts with
        self._prefix_caches: dict[str, PrefixCache] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Recommender(model={self.lm.name!r}, catalog={self.catalog!r})"

    # ------------------------------------------------------------------ public API
    def recommend(
        self,
        history: Sequence[Any] = (),
        k: int = 10,
        *,
        request: str | None = None,
        exclude: Sequence[Any] = (),
        constrained: bool = True,
        exclude_history: bool = True,
        template: str | None = None,
        num_beams: int | None = None,
    ) -> Recommendations:
        """The ``k`` items the model ranks highest for this history (IDs or titles, oldest first)
        and optional free-text ``request``. Items in the history are excluded unless
        ``exclude_history=False``, and so are the items in ``exclude`` (IDs or titles: items the
        user already has, or turned down). Fewer than ``k`` come back when fewer are left.

        ``template`` defaults to ``next_item``, or ``request`` when there is a request and no
        history (zero-shot from words alone)."""
        if template is None:
            template = "request" if request and not history else "next_item"
        return self.recommend_batch(
            [history],
            k,
            requests=[request],
            excludes=[exclude],
            constrained=constrained,
            exclude_history=exclude_history,
            template=template,
            num_beams=num_beams,
        )[0]

    def recommend_batch(
        self,
        histories: Sequence[Sequence[Any]],
        k: int = 10,
        *,
        requests: Sequence[str | None] | None = None,
        excludes: Sequence[Sequence[Any]] | None = None,
        constrained: bool = True,
        exclude_history: bool = True,
        template: str = "next_item",
        num_beams: int | None = None,
        batch_size: int | None = None,
        progress: bool = False,
    ) -> list[Recommendations]:
        """``recommend`` for many users; users are decoded together in batches for throughput."""
        k = self._check_k(k)
        requests = list(requests) if requests is not None else [None] * len(histories)
        excludes = list(excludes) if excludes is not None else [()] * len(histories)
        if len(requests) != len(histories) or len(excludes) != len(histories):
            raise LimitError(f"{len(histories)} histories need as many requests and exclude lists")
        jobs = [
            self._prepare(history, request, template, exclude_history, exclude)
            for history, request, exclude in zip(histories, requests, excludes)
        ]
        beams = max(num_beams or self.num_beams, k)
        if beams > self.limits.max_beams:
            raise LimitError(f"k={k} needs {beams} beams; the limit is {self.limits.max_beams} (Limits.max_beams)")
        results: list[Recommendations | None] = [None] * len(jobs)
        size = batch_size or self.batch_size
        # similar prompt lengths together: less padding per batch
        order = sorted(range(len(jobs)), key=lambda i: (jobs[i].ctx.context, len(jobs[i].prompt_ids)))
        batches = [order[i : i + size] for i in range(0, len(order), size)]
        bar = _progress(len(jobs), progress, "recommending")
        for batch in batches:
            run = self._run_constrained if constrained else self._run_free
            for i, recs in zip(batch, run([jobs[i] for i in batch], k, beams)):
                results[i] = recs
            bar.update(len(batch))
        bar.close()
        return [r for r in results if r is not None]

    def ground(self, text: str, *, limit: int = 5, threshold: float | None = None) -> list[Match]:
        """Catalog items that ``text`` names, best first (0-100); empty when none is close enough."""
        return self.catalog.grounder.ground(text, limit=limit, threshold=self._threshold(threshold))

    def ground_list(self, text: str, *, threshold: float | None = None) -> list[Mention]:
        """Split a list answer into pieces and ground each; ungrounded pieces are kept and flagged."""
        return self.catalog.grounder.ground_list(text, threshold=self._threshold(threshold))

    def resolve(self, refs: Sequence[Any]) -> list[str]:
        """Item IDs for a mix of IDs and titles; one UnknownItemError lists everything unknown."""
        return [self.catalog.ids[p] for p in self._resolve_positions(refs)]

    def rank(
        self,
        history: Sequence[Any],
        candidates: Sequence[Any],
        *,
        request: str | None = None,
        length_normalize: bool = False,
        template: str = "rank",
    ) -> Recommendations:
        """``candidates`` (IDs or titles) best first, each scored by the log-probability of the
        model writing its title as the answer to the ``rank`` prompt, all in one batched pass.

        Long and short titles: by default the score is the title's total log-probability, the
        same quantity beam search ranks by, which favours short titles (every token costs);
        ``length_normalize=True`` divides by the number of tokens (the end marker included), which
        favours long titles. Ties keep the candidates' given order. Repeated candidates count once.
        """
        self._check_request(request)
        if isinstance(candidates, (str, bytes)):
            raise LimitError("candidates must be a list of item IDs or titles, not one string")
        if len(candidates) > self.limits.max_candidates:
            raise LimitError(f"{len(candidates)} candidates; the limit is {self.limits.max_candidates} (Limits.max_candidates)")
        history_positions = self._resolve_positions(history)
        positions = list(dict.fromkeys(self._resolve_positions(candidates)))
        if not positions:
            return Recommendations([], history_used=len(history_positions))
        context = self._context(
            [self.catalog._item_at(p) for p in history_positions],
            request,
            candidates=[self.catalog._item_at(p) for p in positions],
            k=len(positions),
        )
        prompt_text, ctx = self._split(to_model_text(self.prompts.render(template, **context), self.tokenizer))
        prompt_ids = self._encode_prompt(prompt_text)
        self._check_fits(len(prompt_ids), f"the {template} prompt with {len(positions)} candidates")
        index = self._index(ctx)
        sequences = [index.sequence(self._title_number(p)) for p in positions]
        scores = score_continuations(self.lm.model, prompt_ids, sequences)
        if length_normalize:
            scores = [score / len(seq) for score, seq in zip(scores, sequences)]
        order = sorted(range(len(positions)), key=lambda i: -scores[i])
        recs = [Recommendation(self.catalog.ids[positions[i]], self.catalog.titles[positions[i]], scores[i]) for i in order]
        return Recommendations(recs, history_used=len(history_positions), prompt_text=prompt_text)

    def explain(
        self,
        history: Sequence[Any],
        item: Any,
        *,
        max_new_tokens: int = 96,
        do_sample: bool = False,
        temperature: float = 0.7,
        top_p: float = 0.9,
        seed: int | None = None,
        template: str = "explain",
    ) -> Explanation:
        """A short text saying why ``item`` (an ID or title) fits this history, written by the
        model from the item's attributes and the history. Greedy (deterministic) by default;
        ``do_sample=True`` samples with ``temperature``/``top_p`` (reproducibly with ``seed``).
        Catalog items the text names are grounded and returned in ``mentions``."""
        if not 1 <= max_new_tokens <= self.limits.max_new_tokens:
            raise LimitError(f"max_new_tokens must be 1..{self.limits.max_new_tokens}, got {max_new_tokens}")
        (position,) = self._resolve_positions([item])
        history_positions = self._resolve_positions(history)
        context = self._context([self.catalog._item_at(p) for p in history_positions], None, item=self.catalog._item_at(position))
        prompt_ids = self._encode_prompt(to_model_text(self.prompts.render(template, **context), self.tokenizer))
        self._check_fits(len(prompt_ids) + max_new_tokens, "the explanation prompt and answer")
        text = self._generate(prompt_ids, max_new_tokens, do_sample, temperature, top_p, seed)
        mentions = [m for _, matches in self.catalog.grounder.find_mentions(text) for m in matches]
        return Explanation(self.catalog.ids[position], self.catalog.titles[position], text, _unique_matches(mentions))

    def chat(
        self,
        messages: Sequence[dict[str, str]],
        k: int = 5,
        *,
        exclude: Sequence[Any] = (),
        template: str = "chat",
    ) -> ChatResponse:
        """Recommend from a conversation: ``messages`` are ``{"role", "content"}`` turns (system,
        user, assistant), as chat assistants hold them. Items named in the conversation are never
        recommended again; those the user liked inform the prompt, those turned down ("not X",
        "I hated X") are listed as such. Returns the reply and the items, every one a catalog item."""
        k = self._check_k(k)
        turns = self._check_messages(messages)
        grounder = self.catalog.grounder
        liked: list[Match] = []
        rejected: list[Match] = []
        mentioned: list[Match] = []
        for turn in turns:
            for sentence in _SENTENCE.split(turn["content"]):
                for _, matches in grounder.find_mentions(sentence):
                    mentioned.extend(matches)
                    if turn["role"] == "user":
                        (rejected if _NEGATIVE.search(sentence) else liked).extend(matches)
        mentioned, rejected = _unique_matches(mentioned), _unique_matches(rejected)
        rejected_ids = {m.item_id for m in rejected}
        liked = [m for m in _unique_matches(liked) if m.item_id not in rejected_ids]
        last_user = next(t["content"] for t in reversed(turns) if t["role"] == "user")
        conversation = [t for t in turns if t["role"] != "system"]
        extra = {"conversation": conversation, "rejected": [self.catalog.item(m.item_id) for m in rejected]}
        job = self._prepare(
            [m.item_id for m in liked], last_user, template, True, [m.item_id for m in mentioned] + list(exclude), extra
        )
        recs = self._run_constrained([job], k, max(self.num_beams, k))[0]
        reply = self.prompts.render_block(template, "reply", items=[self.catalog.item(r.item_id) for r in recs], kind=self.catalog.kind, k=k)
        return ChatResponse(reply, list(recs), mentioned, rejected)

    def _check_messages(self, messages: Any) -> list[dict[str, str]]:
        if not isinstance(messages, (list, tuple)) or not messages:
            raise LimitError("messages must be a non-empty list of {'role', 'content'} turns")
        if len(messages) > self.limits.max_turns:
            raise LimitError(f"{len(messages)} turns; the limit is {self.limits.max_turns} (Limits.max_turns)")
        turns = []
        for n, message in enumerate(messages):
            if not isinstance(message, dict) or not isinstance(message.get("content"), str):
                raise LimitError(f"message {n}: expected {{'role': ..., 'content': <text>}}, got {message!r:.80}")
            if message.get("role") not in ("system", "user", "assistant"):
                raise LimitError(f"message {n}: role must be system, user or assistant, got {message.get('role')!r}")
            turns.append({"role": message["role"], "content": message["content"]})
        total = sum(len(t["content"]) for t in turns)
        if total > self.limits.max_conversation_chars:
            raise LimitError(f"the conversation has {total} characters; the limit is {self.limits.max_conversation_chars}")
        if not any(t["role"] == "user" for t in turns):
            raise LimitError("the conversation has no user message")
        return turns

    def _generate(self, prompt_ids: list[int], max_new_tokens: int, do_sample: bool, temperature: float, top_p: float, seed: int | None) -> str:
        import torch
        from transformers import GenerationConfig

        # an explicit configuration: an Instruct model's generation_config must not turn sampling on
        config = GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            num_beams=1,
            eos_token_id=list(self.end_ids) or _eos_ids(self.tokenizer),
            pad_token_id=self.pad_token_id,
            **({"temperature": temperature, "top_p": top_p} if do_sample else {}),
        )
        ids = torch.tensor([prompt_ids], device=self.lm.device)
        with torch.random.fork_rng(devices=[]), torch.inference_mode():
            if seed is not None:
                torch.manual_seed(seed)
            out = self.lm.model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=config)
        return self.tokenizer.decode(out[0, len(prompt_ids) :], skip_special_tokens=True).strip()

    def _check_fits(self, n_tokens: int, what: str) -> None:
        if n_tokens > self.lm.max_context:
            raise LimitError(f"{what} needs {n_tokens} tokens; the model's context holds {self.lm.max_context}")

    def index_for(self, template: str = "next_item") -> TitleIndex:
        """The title index used with ``template`` (built or loaded on first use)."""
        empty = {"k": 1, "candidates": [], "conversation": [], "rejected": []}  # every task's variables
        prompt = self.prompts.render(template, **self._context([], "", **empty))
        _, ctx = self._split(to_model_text(prompt, self.tokenizer))
        return self._index(ctx)

    # ------------------------------------------------------------------ preparation
    def _threshold(self, threshold: float | None) -> float:
        return self.grounding_threshold if threshold is None else threshold

    def _check_k(self, k: Any) -> int:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise LimitError(f"k must be a whole number, got {k!r}")
        if k < 1:
            raise LimitError(f"k must be at least 1, got {k}")
        if k > self.limits.max_k:
            raise LimitError(f"k={k} is above the limit of {self.limits.max_k} (Limits.max_k)")
        return int(k)

    def _resolve_positions(self, refs: Sequence[Any]) -> list[int]:
        if isinstance(refs, (str, bytes)):
            raise LimitError("history must be a list of item IDs or titles, not one string")
        if len(refs) > self.limits.max_history:
            raise LimitError(f"{len(refs)} items given; the limit is {self.limits.max_history} (Limits.max_history)")
        positions: list[int] = []
        unknown: list[str] = []
        for ref in refs:
            key = str(ref).strip() if ref is not None else ""
            if key in self.catalog:
                positions.append(self.catalog.position(key))
                continue
            matches = self.catalog.grounder.ground(key, limit=1, threshold=_TITLE_THRESHOLD) if key else []
            if matches:
                positions.append(self.catalog.position(matches[0].item_id))
            else:
                unknown.append(key)
        if unknown:
            shown = ", ".join(repr(u) for u in unknown[:10]) + (" ..." if len(unknown) > 10 else "")
            raise UnknownItemError(
                f"{len(unknown)} history item(s) are neither IDs nor titles in catalog {self.catalog.name!r}: {shown}",
                unknown,
            )
        return positions

    def _context(self, items: Sequence[dict[str, Any]], request: str | None, **extra: Any) -> dict[str, Any]:
        return {"history": list(items), "request": request, "kind": self.catalog.kind, **extra}

    def _check_request(self, request: str | None) -> None:
        if request is not None and not isinstance(request, str):
            raise LimitError(f"request must be text, got {type(request).__name__}")
        if request and len(request) > self.limits.max_request_chars:
            raise LimitError(
                f"request has {len(request)} characters; the limit is {self.limits.max_request_chars}"
            )

    def _split(self, text: str) -> tuple[str, TitleContext]:
        return split_prompt_context(text, self.special_tokens, self.end_ids, self.end_text)

    def _encode_prompt(self, text: str) -> list[int]:
        add_special = not getattr(self.tokenizer, "chat_template", None)
        return self.tokenizer(text, add_special_tokens=add_special)["input_ids"]

    def _prompt_budget(self, ctx: TitleContext) -> int:
        if self.max_prompt_tokens is not None:
            return self.max_prompt_tokens
        # room for the longest title and its end marker
        return self.lm.max_context - self._index(ctx).max_depth - 1

    def _prepare(
        self,
        history: Sequence[Any],
        request: str | None,
        template: str,
        exclude_history: bool,
        exclude: Sequence[Any] = (),
        extra: dict[str, Any] | None = None,
    ) -> _Job:
        self._check_request(request)
        positions = self._resolve_positions(history)
        excluded = self._resolve_positions(exclude) if len(exclude) else []
        items = [self.catalog._item_at(p) for p in positions]

        def render(subset: Sequence[dict[str, Any]]) -> tuple[Prompt, str]:
            prompt = self.prompts.render(template, **self._context(subset, request, k=1, **(extra or {})))
            return prompt, to_model_text(prompt, self.tokenizer)

        _, first_text = render(items[-1:] if items else [])
        _, ctx = self._split(first_text)
        (_, text), dropped = fit_history(
            items,
            render,
            lambda rendered: len(self._encode_prompt(self._split(rendered[1])[0])),
            self._prompt_budget(ctx),
        )
        if dropped:
            log.warning("history cut to fit the model's context: the %d oldest of %d items left out", dropped, len(items))
        prompt_text, ctx = self._split(text)
        banned = {self._title_number(p) for p in excluded}
        if exclude_history:
            banned |= {self._title_number(p) for p in positions}
        return _Job(
            template=template,
            prompt_ids=self._encode_prompt(prompt_text),
            prompt_text=prompt_text,
            ctx=ctx,
            banned_titles=banned,
            history_positions=positions,
            history_used=len(items) - dropped,
            history_dropped=dropped,
        )

    def _title_number(self, position: int) -> int:
        return self.catalog.title_number_of(self.catalog.ids[position])

    def _prefix_cache(self, template: str) -> PrefixCache:
        with self._lock:
            return self._prefix_caches.setdefault(template, PrefixCache())

    def _index(self, ctx: TitleContext) -> TitleIndex:
        with self._lock:
            index = self._indexes.get(ctx)
            if index is None:
                index = load_or_build_index(
                    self.catalog.unique_titles,
                    self.tokenizer,
                    ctx,
                    catalog_hash=self.catalog.content_hash,
                    cache_dir=self.cache_dir if self.use_disk_cache else None,
                    tokenizer_hash=self._tokenizer_hash,
                    vocab_size=_vocab_size(self.lm.model, self.tokenizer),
                )
                self._indexes[ctx] = index
            return index

    # ------------------------------------------------------------------ decoding
    def _run_constrained(self, jobs: list[_Job], k: int, beams: int) -> list[Recommendations]:
        out: list[Recommendations] = []
        # jobs with different tokenisation contexts (different templates) use different indexes
        groups: dict[TitleContext, list[int]] = {}
        for i, job in enumerate(jobs):
            groups.setdefault(job.ctx, []).append(i)
        results: list[list[Hypothesis]] = [[] for _ in jobs]
        for ctx, members in groups.items():
            index = self._index(ctx)
            available = [index.n_titles - len(jobs[i].banned_titles) for i in members]
            width = max(1, min(beams, max(available)))
            hyps = beam_search(
                self.lm.model,
                [jobs[i].prompt_ids for i in members],
                num_beams=width,
                num_return=min(k, width),
                index=index,
                dead_nodes=[index.dead_nodes(jobs[i].banned_titles) for i in members],
                length_penalty=self.length_penalty,
                pad_token_id=self.pad_token_id,
                prefix_cache=self._prefix_cache(jobs[members[0]].template),
            )
            for i, h in zip(members, hyps):
                results[i] = h
        for job, hyps in zip(jobs, results):
            index = self._index(job.ctx)
            recs: list[Recommendation] = []
            for hyp in hyps:
                for title_number in index.titles_at(hyp.node):
                    if title_number in job.banned_titles:
                        continue
                    for pos in self.catalog.title_positions[title_number]:
                        recs.append(Recommendation(self.catalog.ids[pos], self.catalog.titles[pos], hyp.score))
            out.append(
                Recommendations(
                    recs[:k],
                    history_used=job.history_used,
                    history_dropped=job.history_dropped,
                    prompt_text=job.prompt_text,
                )
            )
        return out

    def _run_free(self, jobs: list[_Job], k: int, beams: int) -> list[Recommendations]:
        """Unconstrained generation, each beam's text grounded onto the catalog (BIGRec-style)."""
        hyps_per_user = beam_search(
            self.lm.model,
            [job.prompt_ids for job in jobs],
            num_beams=beams,
            num_return=beams,
            index=None,
            eos_token_ids=self.end_ids or _eos_ids(self.tokenizer),
            # room for the longest catalog title plus some words around it
            max_new_tokens=self._index(jobs[0].ctx).max_depth + self.free_text_slack,
            length_penalty=self.length_penalty,
            pad_token_id=self.pad_token_id,
            prefix_cache=self._prefix_cache(jobs[0].template),
        )
        out = []
        for job, hyps in zip(jobs, hyps_per_user):
            recs: list[Recommendation] = []
            seen: set[str] = set()
            outputs: list[str] = []
            ungrounded: list[str] = []
            repeats: list[str] = []
            for hyp in hyps:
                text = self.tokenizer.decode(list(hyp.tokens), skip_special_tokens=True).split("\n")[0].strip()
                outputs.append(text)
                matches = self.catalog.grounder.ground(text, limit=1, threshold=self.grounding_threshold) if text else []
                if not matches:
                    ungrounded.append(text)
                    continue
                if self.catalog.title_number(matches[0].title) in job.banned_titles:
                    repeats.append(text)
                    continue
                for match in matches:
                    if match.item_id not in seen:
                        seen.add(match.item_id)
                        recs.append(Recommendation(match.item_id, match.title, hyp.score))
            out.append(
                Recommendations(
                    recs[:k],
                    history_used=job.history_used,
                    history_dropped=job.history_dropped,
                    ungrounded=ungrounded,
                    outputs=outputs,
                    history_repeats=repeats,
                    prompt_text=job.prompt_text,
                )
            )
        return out


# ---------------------------------------------------------------------- helpers
_SENTENCE = re.compile(r"(?<=[.!?;\n])\s+|\s+(?:but|although|though|however)\s+", re.IGNORECASE)
# a sentence that turns an item down: "not X", "I hated X", "no more X", "already seen X"
_NEGATIVE = re.compile(
    r"\b(?:not|no|never|don'?t|didn'?t|doesn'?t|won'?t|hate[ds]?|hating|dislike[ds]?|boring|bored|awful|terrible|"
    r"worst|avoid|skip|already (?:seen|watched|read)|seen it|instead of|rather than|except|other than)\b|n't\b",
    re.IGNORECASE,
)


def _unique_matches(matches: Sequence[Match]) -> list[Match]:
    seen: dict[str, Match] = {}
    for m in matches:
        seen.setdefault(m.item_id, m)
    return list(seen.values())


def _special_token_strings(tokenizer: Any) -> list[str]:
    tokens = set(map(str, getattr(tokenizer, "all_special_tokens", []) or []))
    for added in getattr(tokenizer, "added_tokens_decoder", {}).values():
        if getattr(added, "special", False):
            tokens.add(str(added.content))
    return sorted(t for t in tokens if t)


def _eos_ids(tokenizer: Any) -> list[int]:
    eos = tokenizer.eos_token_id
    return [eos] if isinstance(eos, int) else list(eos or [])


def _pad_id(tokenizer: Any) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if isinstance(candidate, int):
            return candidate
    return 0


def _vocab_size(model: Any, tokenizer: Any) -> int:
    out = model.get_output_embeddings()
    return int(out.weight.shape[0]) if out is not None else len(tokenizer)


def _answer_end(tokenizer: Any) -> tuple[tuple[int, ...], str]:
    """What closes an answer: a chat model's end-of-turn token (found by rendering a dummy
    exchange through its chat template), else a newline written after the title."""
    if getattr(tokenizer, "chat_template", None):
        marker = "GENREC_ANSWER_MARKER"
        try:
            text = tokenizer.apply_chat_template(
                [{"role": "user", "content": "q"}, {"role": "assistant", "content": marker}], tokenize=False
            )
        except Exception:  # a chat template that rejects this exchange: fall back to EOS
            text = ""
        after = text.split(marker, 1)[1] if marker in text else ""
        specials = sorted(_special_token_strings(tokenizer), key=len, reverse=True)
        for special in specials:
            if after.lstrip(" ").startswith(special):
                token_id = tokenizer.convert_tokens_to_ids(special)
                if isinstance(token_id, int):
                    return (token_id,), ""
        eos = _eos_ids(tokenizer)
        if eos:
            return tuple(eos[:1]), ""
    return (), "\n"


def _check_training_record(model_dir: Path, catalog: Catalog) -> None:
    record_path = model_dir / TRAINING_RECORD
    if not record_path.is_file():
        return
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        warnings.warn(f"{record_path} is unreadable; cannot check which catalog the model was trained on", stacklevel=3)
        return
    trained = record.get("catalog_hash")
    if trained and trained != catalog.content_hash:
        warnings.warn(
            f"model {model_dir} was fine-tuned on catalog {record.get('catalog_name', '?')!r} "
            f"({record.get('catalog_items', '?')} items), not on this one ({catalog.name!r}, {len(catalog)} items): "
            f"it may write titles that are not here or rank these poorly",
            stacklevel=3,
        )


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool, desc: str):
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="user")

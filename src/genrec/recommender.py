"""The facade: ``Recommender(catalog, model).recommend(history, k)``.

It holds the model, tokenizer, catalog, prompt library and limits; each public method delegates to
its task module in ``genrec.tasks`` (recommend, rank, explain, chat); what it builds once and keeps
(prompt-prefix caches, content and item vectors, ``warm``) is ``resources.py``'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from .catalog import Catalog
from .decoding import DEFAULT_FAMILY_SHARE, TitleIndexes, check_family_cap, check_output_vocabulary
from .decoding.runtime import check_runtime, with_runtime
from .encoder import embed_texts, model_fingerprint
from .errors import CatalogError, ConfigError
from .grounding import DEFAULT_THRESHOLD, Match, Mention
from .limits import Limits
from .log_model import fit_log_model, read_log
from .log_model_io import load_log_model
from .model_record import TRAINING_RECORD, check_training_record, fine_tuned_by_genrec, trained_template, trained_vocabulary
from .model import LoadedModel, answer_end, cache_root, load_model, pad_token_id, special_token_strings, vocab_size
from .prompts import PromptLibrary
from .resources import KeptResources
from .tasks import ChatResponse, Explanation, PromptPipeline, Recommendation, Recommendations
from .tasks.chat import chat
from .tasks.content_search import ContentSearch, check_search
from .tasks.explain import explain
from .tasks.prior import Prior, PriorScores
from .tasks.rank import rank
from .tasks.recommend import default_template, recommend_batch

__all__ = [
    "Recommender",
    "Recommendation",
    "Recommendations",
    "Explanation",
    "ChatResponse",
    "Limits",
    "TRAINING_RECORD",
    "trained_template",
    "trained_vocabulary",
]


class Recommender(KeptResources):
    """Recommends catalog items by having a causal language model write their titles.

    ``model``: None (the embedded default, SmolLM2-135M-Instruct), a transformers model id, a local
    directory, or an already loaded ``PreTrainedModel`` (then pass ``tokenizer``).
    ``catalog``: None for the bundled demo catalog.
    ``runtime``: "torch" (on a CPU, a lean loop over a Llama or Qwen2 model's blocks), "transformers" or
    "onnxruntime" (float32, CPU, a second copy of the weights): the same lists (``decoding/runtime.py``).
    Beam search is deterministic whatever the model's generation_config says; ``length_penalty``
    defaults to 0 because length normalisation favours long titles. ``lookahead`` feeds each
    beam's forced title continuation in one model call (exact; off only to measure it). ``prior`` / ``prior_weight``:
    the collaborative prior every call mixes into beam search unless it passes its own (none: the
    model alone). ``max_per_family``: at most that many variants of one product (titles sharing
    ``family_share`` of their tokens, such as one filament in many colours) in a list, unless the
    beam finds too few other titles (then the best held-back variants close the list); None: no cap.
    ``output_vocabulary``: "full" (the model's softmax over its whole vocabulary) or "catalog"
    (over the tokens the catalog's titles are written with; ``decoding/vocabulary.py``); None:
    what a genrec-fine-tuned model directory was trained with (its ``genrec.json``), else "full".
    ``search``: "beam" (the model writes titles over the whole catalog), "content" (the items
    nearest the history and request in words, TF-IDF mixed with the model's reading of each item,
    as ``content_search`` says; ``tasks/content_search.py``), "log" (the mixture ``fit`` fitted on
    an interaction log) or "auto": beam with an active prior, else log once a log is fitted, else
    beam for a genrec-fine-tuned directory (whatever learned from a log), else content.

    Thread safety: one Recommender may serve several threads. Inference holds no per-call state
    on the object; the lazily built title indexes and prompt-prefix caches are created under locks.
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
        runtime: str = "torch",
        cache_dir: str | Path | None = None,
        use_disk_cache: bool = True,
        num_beams: int = 10,
        length_penalty: float = 0.0,
        lookahead: bool = True,
        max_prompt_tokens: int | None = None,
        batch_size: int = 8,
        grounding_threshold: float = DEFAULT_THRESHOLD,
        free_text_slack: int = 16,
        limits: Limits = Limits(),
        prior: PriorScores | Prior | None = None,
        prior_weight: float = 0.0,
        prior_aggregation: str = "logsumexp",
        max_per_family: int | None = None,
        family_share: float = DEFAULT_FAMILY_SHARE,
        output_vocabulary: str | None = None,
        search: str = "auto",
        content_search: ContentSearch = ContentSearch(),
    ) -> None:
        self.catalog = catalog if catalog is not None else Catalog.demo()
        if len(self.catalog) == 0:
            raise CatalogError(f"catalog {self.catalog.name!r} has no items: nothing to recommend ({self.catalog.report})")
        self.max_per_family, self.family_share = check_family_cap(max_per_family, family_share)  # before loading
        check_runtime(runtime)
        if output_vocabulary is not None:
            check_output_vocabulary(output_vocabulary)
        self.cache_dir = cache_root(cache_dir)
        if model is None or isinstance(model, (str, Path)):
            self.lm = load_model(model, device=device, dtype=dtype, cache_dir=self.cache_dir)
            if model is not None:
                check_training_record(Path(model), self.catalog)
        else:
            if tokenizer is None:
                raise ConfigError("pass tokenizer= together with a loaded model")
            lm_device = next(model.parameters()).device
            self.lm = LoadedModel(model=model.eval(), tokenizer=tokenizer, name=type(model).__name__, device=lm_device)
        self.lm = with_runtime(self.lm, runtime, self.cache_dir)
        self.tokenizer = self.lm.tokenizer
        self.output_vocabulary = output_vocabulary or trained_vocabulary(model if isinstance(model, (str, Path)) else None)
        self.num_beams = num_beams
        self.length_penalty = length_penalty
        self.lookahead = lookahead
        self.batch_size = batch_size
        self.grounding_threshold = grounding_threshold
        self.free_text_slack = free_text_slack
        self.default_prior = Prior(weight=prior_weight, aggregation=prior_aggregation).override(prior)
        self.search, self.content_search = check_search(search), content_search
        self.fine_tuned = fine_tuned_by_genrec(model)
        self.special_tokens = special_token_strings(self.tokenizer)
        self.prompts = PromptLibrary(prompts_dir, special_tokens=self.special_tokens)
        self.end_ids, self.end_text = answer_end(self.tokenizer)
        self.pad_token_id = pad_token_id(self.tokenizer)
        indexes = TitleIndexes(
            self.catalog.unique_titles,
            self.tokenizer,
            catalog_hash=self.catalog.content_hash,
            vocab_size=vocab_size(self.lm.model, self.tokenizer),
            cache_dir=self.cache_dir if use_disk_cache else None,
        )
        self.pipeline = PromptPipeline(
            self.catalog,
            self.tokenizer,
            self.prompts,
            indexes,
            max_context=self.lm.max_context,
            end_ids=self.end_ids,
            end_text=self.end_text,
            special_tokens=self.special_tokens,
            limits=limits,
            max_prompt_tokens=max_prompt_tokens,
        )
        self._keep(self.cache_dir, use_disk_cache)

    def __repr__(self) -> str:
        return f"Recommender(model={self.lm.name!r}, catalog={self.catalog!r})"

    @property
    def limits(self) -> Limits:
        return self.pipeline.limits

    @limits.setter
    def limits(self, value: Limits) -> None:
        self.pipeline.limits = value

    # the default prior's parts, as attributes (each assignment checked as the constructor checks it)
    @property
    def prior(self) -> PriorScores | None:
        return self.default_prior.scores

    @prior.setter
    def prior(self, scores: PriorScores | None) -> None:
        self.default_prior = replace(self.default_prior, scores=scores)

    @property
    def prior_weight(self) -> float:
        return self.default_prior.weight

    @prior_weight.setter
    def prior_weight(self, weight: float) -> None:
        self.default_prior = replace(self.default_prior, weight=weight)

    @property
    def prior_aggregation(self) -> str:
        return self.default_prior.aggregation

    @prior_aggregation.setter
    def prior_aggregation(self, aggregation: str) -> None:
        self.default_prior = replace(self.default_prior, aggregation=aggregation)

    def fit(
        self, log: Any, *, valid: Sequence[tuple[Sequence[str], str]] | None = None, epochs: int = 8, seed: int = 0,
        lenient: bool = False, progress: bool = False,
    ) -> Recommender:  # fmt: skip
        """Fit the trained mixture on an interaction log (``genrec.log_model``): ItemKNN where the
        log has seen an item and TF-IDF over words everywhere, mixed with the model's item vectors
        under a map trained on the log. ``search="auto"`` then ranks by it (a call with a request:
        by the words). ``log``: a pandas table or a file of ``user_id, item_id[, timestamp]``, or a
        mapping of user to item IDs, oldest first. ``valid``: (history, target) pairs the log does
        not hold to choose the settings on (a later period); by default each user's last
        interaction is held back, then everything refitted. An item the catalog lacks is an error,
        or with ``lenient`` left out and counted (``log_model.tuned``). Reading the catalog's item
        vectors takes minutes on a CPU the first time (then kept on disk). ``save_fit`` keeps it."""
        def read(layers: Sequence[int]) -> dict[int, Any]:
            return self.item_vectors(layers, progress=progress)

        self.log_model = fit_log_model(
            self.catalog, read_log(log), read, self.lm.model.config.num_hidden_layers, valid=valid, epochs=epochs, seed=seed,
            lenient=lenient, progress=progress, model_fingerprint=model_fingerprint(self.lm.model),
        )  # fmt: skip
        return self

    def save_fit(self, path: str | Path) -> Path:
        """The fitted log kept in folder ``path`` (``genrec.log_model_io``), for ``load_fit``."""
        if self.log_model is None:
            raise ConfigError("nothing to save: call Recommender.fit(log) first")
        return self.log_model.save(path)

    def load_fit(self, path: str | Path, *, progress: bool = False) -> Recommender:
        """A fit saved by ``save_fit`` (seconds, not the minutes of fitting). Items the catalog
        gained since are read by the model now (it must be the model the fit read with)."""
        def read(texts: Sequence[str], layer: int) -> Any:
            return embed_texts(self.lm.model, self.tokenizer, texts, layers=[layer], progress=progress)[layer]

        self.log_model = load_log_model(path, self.catalog, read, model_fingerprint(self.lm.model))
        return self

    # ------------------------------------------------------------------ tasks
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
        prior: PriorScores | Prior | None = None,
        prior_weight: float | None = None,
        prior_aggregation: str | None = None,
        min_match_score: float | None = None,
        strict_history: bool = False,
        deadline: float | None = None,
        search: str | None = None,
    ) -> Recommendations:
        """The ``k`` items the model ranks highest for this history (IDs or titles, oldest first)
        and optional free-text ``request``. Items in the history are excluded unless
        ``exclude_history=False``, and so are the items in ``exclude`` (IDs or titles: items the
        user already has, or turned down). Fewer than ``k`` come back when fewer are left.

        ``template`` defaults to ``next_item``, or ``request`` when there is a request and no
        history (zero-shot from words alone).

        ``prior``: per-item log-scores in catalog order (an array, or a callable taking the
        histories), mixed into every decoding step with ``prior_weight`` in [0, 1] (0: the model
        alone; 1: the prior decides, the model spells titles); ``prior_aggregation`` (``logsumexp``
        or ``max``) is how a title prefix gathers the scores of the titles under it. Defaults: the
        Recommender's. A whole ``Prior(scores, weight, aggregation)`` may be given as ``prior``.

        How the history was read is in ``.history`` (``HistoryEntry``: by ID, by title, or fuzzily
        with a score; in the prompt or left out). ``min_match_score``: a title matched fuzzily
        below this score (0-100) is refused as unknown; ``strict_history``: a history longer than
        ``Limits.max_history_items`` is refused instead of keeping its newest items.
        ``deadline`` (a ``time.monotonic()`` value): decoding stops there with a DeadlineError.
        ``search``: "beam", "content" or "auto" in place of the Recommender's (see the class)."""
        return self.recommend_batch(
            [history],
            k,
            requests=[request],
            excludes=[exclude],
            constrained=constrained,
            exclude_history=exclude_history,
            template=template or default_template(history, request),
            num_beams=num_beams,
            prior=self.default_prior.override(prior, prior_weight, prior_aggregation),
            min_match_score=min_match_score,
            strict_history=strict_history,
            deadline=deadline,
            search=search,
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
        prior: PriorScores | Prior | None = None,
        prior_weight: float | None = None,
        prior_aggregation: str | None = None,
        min_match_score: float | None = None,
        strict_history: bool = False,
        deadline: float | None = None,
        max_batch_tokens: int | None = None,
        search: str | None = None,
    ) -> list[Recommendations]:
        """``recommend`` for many users; users are decoded together in batches for throughput
        (similar prompt lengths together; with ``max_batch_tokens``, no batch pads more prompt
        tokens than that). A 2-D ``prior`` has one row per history."""
        return recommend_batch(
            self, histories, k, requests=requests, excludes=excludes, constrained=constrained,
            exclude_history=exclude_history, template=template, num_beams=num_beams,
            batch_size=batch_size, progress=progress, prior=self.default_prior.override(prior, prior_weight, prior_aggregation),
            min_match_score=min_match_score, strict_history=strict_history, deadline=deadline,
            max_batch_tokens=max_batch_tokens, search=search,
        )  # fmt: skip

    def rank(
        self,
        history: Sequence[Any],
        candidates: Sequence[Any],
        *,
        request: str | None = None,
        length_normalize: bool = False,
        template: str = "rank",
        prior: PriorScores | Prior | None = None,
        prior_weight: float | None = None,
    ) -> Recommendations:
        """``candidates`` (IDs or titles) best first, each scored by the log-probability of the
        model writing its title as the answer to the ``rank`` prompt, all in one batched pass.

        Long and short titles: by default the score is the title's total log-probability, the
        same quantity beam search ranks by, which favours short titles (every token costs);
        ``length_normalize=True`` divides by the number of tokens (the end marker included), which
        favours long titles. Ties keep the candidates' given order. Repeated candidates count once.
        """
        return rank(
            self, history, candidates, request=request, length_normalize=length_normalize, template=template,
            prior=self.default_prior.override(prior, prior_weight),
        )  # fmt: skip

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
        return explain(
            self, history, item, max_new_tokens=max_new_tokens, do_sample=do_sample,
            temperature=temperature, top_p=top_p, seed=seed, template=template,
        )  # fmt: skip

    def chat(
        self,
        messages: Sequence[dict[str, str]],
        k: int = 5,
        *,
        exclude: Sequence[Any] = (),
        template: str = "chat",
        prior: PriorScores | Prior | None = None,
        prior_weight: float | None = None,
        prior_aggregation: str | None = None,
        search: str | None = None,
    ) -> ChatResponse:
        """Recommend from a conversation: ``messages`` are ``{"role", "content"}`` turns (system,
        user, assistant), as chat assistants hold them. Items named in the conversation are never
        recommended again; those the user liked inform the prompt, those turned down ("not X",
        "I hated X") are listed as such. Returns the reply and the items, every one a catalog item."""
        prior = self.default_prior.override(prior, prior_weight, prior_aggregation)
        return chat(self, messages, k, exclude=exclude, template=template, prior=prior, search=search)

    # ------------------------------------------------------------------ grounding and lookup
    def ground(self, text: str, *, limit: int = 5, threshold: float | None = None) -> list[Match]:
        """Catalog items that ``text`` names, best first (0-100); empty when none is close enough."""
        return self.catalog.grounder.ground(text, limit=limit, threshold=self._threshold(threshold))

    def ground_list(self, text: str, *, threshold: float | None = None) -> list[Mention]:
        """Split a list answer into pieces and ground each; ungrounded pieces are kept and flagged."""
        return self.catalog.grounder.ground_list(text, threshold=self._threshold(threshold))

    def resolve(self, refs: Sequence[Any]) -> list[str]:
        """Item IDs for a mix of IDs and titles; one UnknownItemError lists everything unknown."""
        return [self.catalog.ids[p] for p in self.pipeline.resolve(refs)]

    def _threshold(self, threshold: float | None) -> float:
        return self.grounding_threshold if threshold is None else threshold

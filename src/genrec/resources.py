"""What a ``Recommender`` builds once and keeps, lazily and thread-safely: the prompt-prefix cache
of each template, the catalog's TF-IDF vectors and the catalog as the model reads it (item vectors,
kept on disk), which content search's words mix (``words``), and ``warm``, which builds them
before serving."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .catalog import Catalog
from .content import ContentScores, catalog_texts
from .decoding import PrefixCache, TitleIndex
from .encoder import EncoderSettings, ItemEncoder, cached_embed_texts, embed_texts
from .log_model import LogModel
from .model import LoadedModel
from .tasks import PromptPipeline
from .tasks.content_search import ContentSearch, search_mode
from .words import Words, reading_layer

__all__ = ["KeptResources"]


class KeptResources:
    """The kept resources of ``Recommender`` (a base it shares them through); ``_keep`` starts them."""

    catalog: Catalog
    lm: LoadedModel
    tokenizer: Any
    pipeline: PromptPipeline
    search: str
    content_search: ContentSearch
    default_prior: Any
    fine_tuned: bool

    def _keep(self, cache_dir: Path, use_disk_cache: bool) -> None:
        # per template: the cache of the prompt text every user's prompt starts with
        self._prefix_caches: dict[str, PrefixCache] = {}
        self._content_scores: ContentScores | None = None
        self._words: tuple[ContentSearch, Words] | None = None  # with the settings they were built for
        self._words_lock = threading.Lock()  # (building the words takes the other lock)
        self._vectors_dir = cache_dir / "item_vectors" if use_disk_cache else None
        self.log_model: LogModel | None = None  # fitted by Recommender.fit
        self._lock = threading.Lock()

    def index_for(self, template: str = "next_item") -> TitleIndex:
        """The title index used with ``template`` (built or loaded on first use)."""
        return self.pipeline.index(self.pipeline.title_context(template))

    def warm(self, template: str = "next_item") -> None:
        """Build now what the first call with ``template`` would build: its title index, and the
        cache of the prompt text every prompt of it starts with, taken from two renderings that
        differ in their history, so it is the same in every process whichever users come first
        (services and batch workers call this before serving); and content search's vectors."""
        import torch

        from .decoding.attention import cache_argument

        self.index_for(template)
        # every search but beam reads the words (a fitted log's too, for requests); "auto" resolves now
        auto_beam = self.search == "auto" and search_mode("auto", self.default_prior, self.fine_tuned, self.log_model is not None) == "beam"
        if self.search != "beam" and not auto_beam:
            self.words()  # the catalog's TF-IDF vectors and the model's reading, or the first request pays for them
        if len(self.catalog) < 2:
            return
        ids = self.catalog.ids
        prompts = [self.pipeline.prepare(history, template).prompt_ids for history in ([ids[0]], [ids[1], ids[0]])]
        with torch.inference_mode():
            self.prefix_cache(template).get(self.lm.search_model, prompts, cache_argument(self.lm.model))

    def content_scores(self) -> ContentScores:
        """The catalog's TF-IDF similarities ``search="content"`` proposes from (built on first use)."""
        with self._lock:
            if self._content_scores is None:
                scores = ContentScores(self.catalog, window=self.content_search.window, decay=self.content_search.decay)
                scores.vectors  # built here, under the lock, once
                self._content_scores = scores
            return self._content_scores

    def words(self) -> Words:
        """What content search scores with (``genrec.words``), as ``content_search`` says: TF-IDF,
        mixed with the model's reading of the catalog unless its ``reading`` is None (built on first
        use; reading a catalog takes a minute or more on a CPU, then it is kept on disk)."""
        settings = self.content_search  # (may be replaced between calls: the words follow it)
        with self._words_lock:
            if self._words is None or self._words[0] != settings:
                self._words = (settings, self._build_words(settings))
            return self._words[1]

    def _build_words(self, settings: ContentSearch) -> Words:
        content = self.content_scores()
        shape = {"window": settings.window, "decay": settings.decay, "request_share": settings.request_share}
        if settings.reading is None:
            return Words(content, **shape)
        layer = reading_layer(settings.reading, self.lm.model.config.num_hidden_layers)
        encoder = ItemEncoder(self.item_vectors((layer,), progress=True)[layer], EncoderSettings(epochs=0))

        def read(texts: Sequence[str]) -> Any:
            return embed_texts(self.lm.model, self.tokenizer, texts, layers=[layer])[layer]

        return Words(content, encoder, weight=settings.reading_weight, read=read if settings.read_requests else None, **shape)

    def item_vectors(self, layers: Sequence[int] = (8,), *, progress: bool = False) -> dict[int, Any]:
        """``{layer: [n_items, hidden]}``: each catalog item's text as the model reads it, the
        features of ``genrec.encoder.ItemEncoder``; read once, then kept on disk (unless ``use_disk_cache=False``)."""
        texts = catalog_texts(self.catalog)
        return cached_embed_texts(self.lm.model, self.tokenizer, texts, layers=layers, cache_dir=self._vectors_dir, progress=progress)

    def prefix_cache(self, template: str) -> PrefixCache:
        """The shared prompt-prefix cache of ``template`` (created on first use)."""
        with self._lock:
            return self._prefix_caches.setdefault(template, PrefixCache())

"""Items read by the language model: each item's words become a vector, and a history scores every
item by how near it lies to the history's items.

The model that writes titles also reads them. An item's vector is the mean of one layer's hidden
states over its text (its title and attributes, as ``content.item_text`` gives them, read with the
leading space a title has after a prompt). Each dimension is standardised over the catalog (the raw
states of a causal model share a few large directions that would make every item near every
other). A history's profile is the sum of its most recent ``window`` items' unit vectors, weighted
``decay ** age``, and an item's score is its cosine with that profile.

That needs no interaction log: a new item is scored from its words like any other. Where a log
exists, ``ItemEncoder.train`` fits a linear map of the vectors (started at the identity, so the
untrained encoder is its first candidate) on the training part's sequences: the next item is
predicted among the items training has seen, so a new item's words never meet a gradient; the
map learns which directions of the model's reading say "bought next", and applies them to every
item. The epoch kept is the one a validation function scores best (UniSRec and Recformer measure
the same idea, text encoders transferring to items no log has seen).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_file
from .content import history_weights
from .errors import ConfigError

__all__ = ["EncoderSettings", "ItemEncoder", "cached_embed_texts", "embed_texts", "model_fingerprint", "text_batches", "training_pairs"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncoderSettings:
    """How histories are read (``window``, ``decay``) and how the map is trained."""

    window: int = 20  # the history's most recent items in its profile (0: all)
    decay: float = 0.7
    epochs: int = 8  # the most; validation keeps the best epoch (0: the untrained encoder)
    lr: float = 3e-4
    temperature: float = 0.07  # of the softmax over known items; cosines lie in [-1, 1]
    batch_size: int = 512
    seed: int = 0
    # up to this many known items every one is a negative (the exact softmax); above it each batch
    # maps and ranks its targets, its histories' items and ``negatives`` known items drawn uniformly
    # (the full softmax over 100,000 items maps them all at every step: 10x slower an epoch, and
    # about 32 hours for a fit on a million interactions here; eval/notes/2026-12-07-sampled-softmax.md)
    full_softmax_items: int = 20_000
    negatives: int = 8192

    def check(self) -> EncoderSettings:
        if (self.window < 0 or not 0.0 < self.decay <= 1.0 or self.epochs < 0 or self.lr <= 0 or self.temperature <= 0
                or self.negatives < 1 or self.full_softmax_items < 0):  # fmt: skip
            raise ConfigError(f"encoder settings out of range: {self}")
        return self


def embed_texts(
    model: Any, tokenizer: Any, texts: Sequence[str], *, layers: Sequence[int], batch_size: int = 32,
    max_tokens: int = 64, progress: bool = False,
) -> dict[int, np.ndarray]:  # fmt: skip
    """``{layer: [len(texts), hidden]}``: each text's mean hidden state at each of ``layers`` (0:
    the embeddings, ``n``: after block n), over its first ``max_tokens`` tokens. Texts are read
    one batch of similar lengths at a time, right-padded, so padding never reaches a real token."""
    import torch
    from tqdm.auto import tqdm

    n_layers = model.config.num_hidden_layers
    if not layers or any(not 0 <= layer <= n_layers for layer in layers):
        raise ConfigError(f"layers must lie in 0..{n_layers} for this model, got {list(layers)}")
    out = {layer: np.zeros((len(texts), model.config.hidden_size), dtype=np.float32) for layer in layers}
    device = next(model.parameters()).device
    reader = _blocks_up_to(model, max(layers))
    with torch.inference_mode(), tqdm(total=len(texts), desc="reading items", unit="item", disable=not progress) as bar:
        for batch, tokens, mask in text_batches(tokenizer, texts, batch_size=batch_size, max_tokens=max_tokens):
            states = reader(input_ids=tokens.to(device), attention_mask=mask.to(device), output_hidden_states=True).hidden_states
            weights = mask.to(device).unsqueeze(-1).float()
            for layer in layers:
                mean = (states[layer].float() * weights).sum(1) / weights.sum(1)
                out[layer][batch] = mean.cpu().numpy()
            bar.update(len(batch))
    return out


def text_batches(tokenizer: Any, texts: Sequence[str], *, batch_size: int = 32, max_tokens: int = 64) -> Iterator[tuple[list[int], Any, Any]]:
    """``(positions, tokens, mask)`` per batch of texts of similar lengths, right-padded: each
    text read with the leading space a title has after a prompt, cut to ``max_tokens`` tokens."""
    import torch

    ids = [tokenizer(" " + text, add_special_tokens=False)["input_ids"][:max_tokens] or [_any_token(tokenizer)] for text in texts]
    order = sorted(range(len(texts)), key=lambda n: len(ids[n]))
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        tokens = torch.zeros((len(batch), max(len(ids[n]) for n in batch)), dtype=torch.long)
        mask = torch.zeros_like(tokens)
        for row, n in enumerate(batch):
            tokens[row, : len(ids[n])] = torch.tensor(ids[n])
            mask[row, : len(ids[n])] = 1
        yield batch, tokens, mask


def _blocks_up_to(model: Any, layer: int) -> Any:
    """The model's blocks without its output layer, and only as deep as ``layer`` needs (its
    hidden state is block ``layer - 1``'s output; the last layer's is after the final norm, so that
    one needs the whole model). A copy that shares the weights and leaves the model as it is
    (another thread may be decoding with it). Reading the default model at layer 8 of 30 runs 8
    blocks and no output layer, not 30 and logits over the 49,152-token vocabulary for every
    token: about 4x faster, the same states to the bit."""
    import torch

    base = model.base_model
    blocks, norm = getattr(base, "layers", None), getattr(base, "norm", None)
    if not isinstance(blocks, torch.nn.ModuleList) or layer >= len(blocks):
        return base  # (a layout other than a list of blocks named ``layers``: all of them)
    try:
        from transformers.utils.output_capturing import maybe_install_capturing_hooks
    except ImportError:  # (a transformers whose forward collects the states itself: no hooks to share)
        pass
    else:
        # transformers records hidden states with hooks on the blocks, installed at a model's first
        # call and flagged on it: installed by the copy first, the model would install them again
        # on the same blocks and record every state twice
        maybe_install_capturing_hooks(base)
    reader = copy.copy(base)
    reader._modules = dict(base._modules)  # its own table of submodules: the model keeps all of its own
    if isinstance(norm, torch.nn.Module):
        # the hidden states' last entry is the final norm of the last block run: here no norm, so
        # that entry is block ``layer - 1``'s output itself (at least one block: with none, no state
        # is recorded at all, not even the embeddings)
        reader.layers, reader.norm = torch.nn.ModuleList(list(blocks)[: max(layer, 1)]), torch.nn.Identity()
    else:
        reader.layers = torch.nn.ModuleList(list(blocks)[: layer + 1])  # one block more, its input kept
    return reader


def model_fingerprint(model: Any) -> str:
    """A hash of the model's configuration and of up to 4,096 evenly spaced values of every weight
    tensor (their bytes: no sum whose rounding would depend on threads): another checkpoint, or
    the same one trained further, has another fingerprint, so a cache keyed by it is read again."""
    import torch

    digest = hashlib.sha256(model.config.to_json_string(use_diff=False).encode("utf-8"))
    with torch.no_grad():
        for name, weight in model.named_parameters():
            flat = weight.detach().reshape(-1)
            sample = flat[:: max(1, flat.numel() // 4096)].float().cpu().numpy()
            digest.update(name.encode("utf-8") + sample.tobytes())
    return digest.hexdigest()[:24]


def cached_embed_texts(
    model: Any, tokenizer: Any, texts: Sequence[str], *, layers: Sequence[int], cache_dir: str | Path | None,
    max_tokens: int = 64, progress: bool = False,
) -> dict[int, np.ndarray]:  # fmt: skip
    """``embed_texts``, kept in ``cache_dir`` (None: not kept): one file per model and texts,
    holding every layer read so far, so a layer asked for again is read from disk and a new layer
    reads the texts once more for that layer alone (reading a product catalog takes minutes)."""
    if cache_dir is None:
        return embed_texts(model, tokenizer, texts, layers=layers, max_tokens=max_tokens, progress=progress)
    sample = [tokenizer(" " + text, add_special_tokens=False)["input_ids"][:max_tokens] for text in texts[:8]]
    reading = json.dumps([model_fingerprint(model), type(tokenizer).__name__, len(tokenizer), sample, max_tokens, list(texts)])
    path = Path(cache_dir) / f"item-vectors-{hashlib.sha256(reading.encode('utf-8')).hexdigest()[:24]}.npz"
    kept = _kept_vectors(path, len(texts))
    missing = sorted({int(layer) for layer in layers} - set(kept))
    if missing:
        kept.update(embed_texts(model, tokenizer, texts, layers=missing, max_tokens=max_tokens, progress=progress))
        with atomic_file(path, suffix=".npz") as tmp, open(tmp, "wb") as handle:
            np.savez(handle, **{str(layer): vectors for layer, vectors in kept.items()})
    return {int(layer): kept[int(layer)] for layer in layers}


def _kept_vectors(path: Path, n_texts: int) -> dict[int, np.ndarray]:
    """The layers kept in ``path``; a file that cannot be read, or holds another number of rows,
    is read again from the texts (and replaced), never trusted."""
    if not path.exists():
        return {}
    try:
        with np.load(path) as stored:
            kept = {int(layer): stored[layer] for layer in stored.files}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
        logger.warning("item vectors %s unreadable (%s): reading the texts again", path, error)
        return {}
    if any(vectors.ndim != 2 or len(vectors) != n_texts for vectors in kept.values()):
        logger.warning("item vectors %s do not hold %d rows: reading the texts again", path, n_texts)
        return {}
    return kept


def _any_token(tokenizer: Any) -> int:
    # an item whose text holds no token still needs one position to read (its vector says little)
    return int(tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0)


def training_pairs(sequences: Iterable[Sequence[int]], window: int) -> tuple[list[list[int]], list[int]]:
    """Every (history, next item) of the sequences (catalog positions, oldest first): the history
    the ``window`` items before each item after the first (0: all of them)."""
    histories, targets = [], []
    for sequence in sequences:
        for t in range(1, len(sequence)):
            histories.append(list(sequence[max(0, t - window) if window else 0 : t]))
            targets.append(int(sequence[t]))
    return histories, targets


class ItemEncoder:
    """Scores items for histories from the model's vectors of them (see the module docstring)."""

    def __init__(self, features: np.ndarray, settings: EncoderSettings = EncoderSettings()) -> None:
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2:
            raise ConfigError(f"features must be [items, dimensions], got shape {features.shape}")
        self.mean = features.mean(axis=0)
        self.scale = (features - self.mean).std(axis=0) + 1e-6
        self.features = ((features - self.mean) / self.scale).astype(np.float32)
        self.settings = settings.check()
        self.weight: np.ndarray | None = None  # the trained map (None: the identity)
        self.bias: np.ndarray | None = None
        self.history: list[dict[str, float]] = []  # per epoch: loss and validation score
        self._cached: tuple[tuple[Any, ...], np.ndarray, np.ndarray] | None = None

    @classmethod
    def from_standardised(
        cls, features: np.ndarray, mean: np.ndarray, scale: np.ndarray, settings: EncoderSettings = EncoderSettings()
    ) -> ItemEncoder:  # fmt: skip
        """An encoder over ``features`` already standardised by ``mean`` and ``scale`` (those of the
        catalog a saved fit read): a catalog that gained items since keeps the old items' scale."""
        encoder = cls(np.zeros((1, len(mean))), settings)
        encoder.mean, encoder.scale = np.asarray(mean, dtype=np.float64), np.asarray(scale, dtype=np.float64)
        encoder.features = np.asarray(features, dtype=np.float32)
        return encoder

    @property
    def vectors(self) -> np.ndarray:
        """Every item's unit vector, after the trained map if any."""
        return self._vectors()[0]

    def _vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """The unit vectors, and in float64 (what a float64 profile multiplies), made once while
        the features and the map stay the same arrays: remade per user, they cost most of a search
        from words. The key holds the arrays themselves, so a new one is never taken for an old."""
        key = (self.features, self.weight, self.bias)
        cached = self._cached
        if cached is None or any(a is not b for a, b in zip(cached[0], key)):
            vectors = self._unit(self.features)
            cached = self._cached = (key, vectors, vectors.astype(np.float64))
        return cached[1], cached[2]

    def unit_vectors(self, features: np.ndarray) -> np.ndarray:
        """Unit vectors of texts read apart from the catalog (a request), standardised and mapped
        as the catalog's items are."""
        return self._unit(((np.asarray(features, dtype=np.float64) - self.mean) / self.scale).astype(np.float32))

    def _unit(self, standard: np.ndarray) -> np.ndarray:
        mapped = standard if self.weight is None else standard @ self.weight.T + self.bias
        return mapped / (np.linalg.norm(mapped, axis=1, keepdims=True) + 1e-9)

    def scores(self, histories: Sequence[Sequence[int]], *, extra: np.ndarray | None = None) -> np.ndarray:
        """``[users, n_items]`` cosines of every item with each history's profile (positions);
        ``extra``: ``[users, dimensions]`` added to the profiles (a request's unit vector)."""
        vectors, wide = self._vectors()
        profile = history_weights(histories, len(vectors), window=self.settings.window, decay=self.settings.decay) @ vectors
        if extra is not None:
            profile = profile + extra
        profile = profile / (np.linalg.norm(profile, axis=1, keepdims=True) + 1e-9)
        return np.asarray(profile @ (wide if profile.dtype == np.float64 else vectors).T, dtype=np.float64)

    def train(
        self, sequences: Iterable[Sequence[int]], known: np.ndarray, *, select: Callable[[], float] | None = None,
        progress: bool = False,
    ) -> ItemEncoder:  # fmt: skip
        """Fit the map on next-item prediction over ``known`` items (a mask over the catalog) and
        keep the epoch ``select()`` scores best (epoch 0: the untrained encoder); without
        ``select``, the last epoch. An item outside ``known`` is never a target nor a negative."""
        import torch
        from tqdm.auto import tqdm

        s = self.settings
        known_t = torch.as_tensor(np.asarray(known, dtype=bool))
        histories, targets = training_pairs(sequences, s.window)
        keep = [n for n, t in enumerate(targets) if known_t[t] and histories[n]]
        if not keep or s.epochs == 0:
            self.history = [{"epoch": 0, "valid": select() if select else 0.0}]
            return self
        torch.manual_seed(s.seed)
        width = max(len(histories[n]) for n in keep)
        padded = torch.full((len(keep), width), -1, dtype=torch.long)  # left-padded: the newest item last
        for row, n in enumerate(keep):
            padded[row, width - len(histories[n]) :] = torch.tensor(histories[n])
        target = torch.tensor([targets[n] for n in keep])
        ages = s.decay ** torch.arange(width - 1, -1, -1, dtype=torch.float32)
        features = torch.as_tensor(self.features)
        dim = features.shape[1]
        mapping = torch.nn.Linear(dim, dim)
        with torch.no_grad():
            mapping.weight.copy_(torch.eye(dim))
            mapping.bias.zero_()
        optimizer = torch.optim.Adam(mapping.parameters(), lr=s.lr)
        best = (select() if select else float("-inf"), None)
        self.history = [{"epoch": 0, "valid": best[0]}]
        known_items = known_t.nonzero().view(-1)
        sampled = len(known_items) > s.full_softmax_items
        if sampled:
            # each item's chance of being in a step's set, whose log is taken from its logit (the
            # sampled softmax's correction): the batch's targets make popular items negatives more
            # often, and uncorrected that pushed them down (5% less validation NDCG where measured)
            log_inclusion = _log_inclusion(target, len(features), s.batch_size, len(known_items), s.negatives)
        for epoch in tqdm(range(1, s.epochs + 1), desc="training the item encoder", unit="epoch", disable=not progress):
            total = 0.0
            for batch in torch.randperm(len(keep)).split(s.batch_size):
                items, wanted = padded[batch], target[batch]
                # the items this step ranks (all of them, or a sample) and where each ID sits among them
                rows = _step_items(items, wanted, known_items, s.negatives) if sampled else None
                vectors = torch.nn.functional.normalize(mapping(features if rows is None else features[rows]), dim=1)
                weights = (items >= 0).float() * ages
                slots = _positions(rows, items.clamp(min=0))
                profile = torch.nn.functional.normalize((vectors[slots] * weights.unsqueeze(-1)).sum(1), dim=1)
                candidates = known_t if rows is None else known_t[rows]
                logits = (profile @ vectors.T / s.temperature).masked_fill(~candidates, float("-inf"))
                if rows is not None:
                    logits = logits - log_inclusion[rows]
                # the history's own items are not the answer (the protocol excludes them), unless one is
                in_history = torch.zeros_like(logits, dtype=torch.bool).scatter(1, slots, items >= 0)
                answers = _positions(rows, wanted)
                in_history[torch.arange(len(batch)), answers] = False
                loss = torch.nn.functional.cross_entropy(logits.masked_fill(in_history, float("-inf")), answers)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(batch)
            self.weight = mapping.weight.detach().numpy().copy()
            self.bias = mapping.bias.detach().numpy().copy()
            score = select() if select else 0.0
            self.history.append({"epoch": epoch, "loss": round(total / len(keep), 4), "valid": score})
            if select is None or score > best[0]:
                best = (score, copy.deepcopy((self.weight, self.bias)))
        self.weight, self.bias = best[1] if best[1] is not None else (None, None)
        return self


def _step_items(items: Any, targets: Any, known: Any, negatives: int) -> Any:
    """The sorted item IDs one sampled step maps and ranks: its targets, its histories' items (their
    profiles need them; only known ones are candidates) and ``negatives`` known items drawn uniformly."""
    import torch

    drawn = known if negatives >= len(known) else known[torch.randint(len(known), (negatives,))]
    return torch.unique(torch.cat([targets, items[items >= 0], drawn]))


def _log_inclusion(targets: Any, n_items: int, batch_size: int, n_known: int, negatives: int) -> Any:
    """Each item's log-chance of being in a sampled step's set: among the ``batch_size`` targets
    (drawn as often as they are targets) or the ``negatives`` uniform draws from ``n_known`` items."""
    import torch

    share = torch.bincount(targets, minlength=n_items).double() / len(targets)
    drawn_absent = 0.0 if negatives >= n_known else (1 - 1 / n_known) ** negatives
    return torch.log((1 - (1 - share) ** batch_size * drawn_absent).clamp(min=1e-12)).float()


def _positions(rows: Any, ids: Any) -> Any:
    """Where item IDs sit among a sampled step's ``rows`` (sorted); without a sample, the IDs themselves."""
    import torch

    return ids if rows is None else torch.searchsorted(rows, ids)

"""A fitted log kept on disk: ``Recommender.save_fit`` writes it, ``Recommender.load_fit`` (and
``--log FOLDER`` on the command line) reads it back in seconds, where fitting took minutes.

The folder holds what the fit chose and learned (``genrec_log_fit.json``: the settings, the
choices and their validation scores) and ``arrays.npz``: every item's vector as the fit read it
(standardised, with the mean and spread it was standardised by), the encoder's trained map, and
the log itself (the hybrid's ItemKNN and TF-IDF are refitted from it at load, with the settings
the fit chose: seconds). A saved fit is self-contained: it ranks without reading the catalog
through the model again.

A catalog may have changed since the fit (the reason new items matter): an item with the same ID
and the same words keeps its saved vector; an item added (or whose words changed) is read by the
model at load (which must then be the model the fit read with: its fingerprint is checked), and
standardised as the fit's items were; interactions with an item the catalog no longer holds are
left out of the refitted hybrid, counted in ``tuned["interactions_left_out_at_load"]``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_dir
from .catalog import Catalog
from .content import catalog_texts
from .data.splits import Split
from .encoder import EncoderSettings, ItemEncoder
from .errors import ConfigError, DataError
from .log_model import EncoderScores, LogModel

__all__ = ["FIT_FILE", "is_saved_fit", "load_log_model", "save_log_model"]

log = logging.getLogger(__name__)

FIT_FILE = "genrec_log_fit.json"
ARRAYS_FILE = "arrays.npz"
FORMAT = 1

#: reads texts at one layer: ``[len(texts), hidden]`` (the model's reading, as ``embed_texts``)
ReadTexts = Callable[[Sequence[str], int], np.ndarray]


def is_saved_fit(path: str | Path) -> bool:
    """Whether ``path`` is a folder a fit was saved to."""
    return (Path(path) / FIT_FILE).is_file()


def _text_sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _plain(value: Any) -> Any:
    # numpy scalars in the choices' records (counts, scores) are written as JSON numbers
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON")


def save_log_model(model: LogModel, path: str | Path) -> Path:
    """``model`` kept in folder ``path`` (replaced whole, atomically: a kill leaves the old one)."""
    scores, encoder = model.scores, model.scores.encoder
    hybrid, catalog = scores.base, scores.catalog
    if hybrid is None or "layer" not in model.tuned:
        raise ConfigError("only a fit of Recommender.fit (the hybrid mixed with the item vectors) can be saved")
    record = {
        "format": FORMAT, "saved": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "catalog": {"name": catalog.name, "items": len(catalog), "content_hash": catalog.content_hash},
        "model_fingerprint": model.model_fingerprint,
        "mixture_weight": scores.weight,
        "hybrid": hybrid.settings(),
        "encoder": {"layer": model.tuned["layer"], **asdict(encoder.settings)},
        "tuned": model.tuned,
    }  # fmt: skip
    users = list(model.sequences)
    arrays = {
        "item_ids": np.array(catalog.ids, dtype=str), "text_sha": np.array([_text_sha(t) for t in catalog_texts(catalog)], dtype=str),
        "features": encoder.features, "mean": encoder.mean, "scale": encoder.scale,
        "log_users": np.array(users, dtype=str), "log_lengths": np.array([len(model.sequences[u]) for u in users], dtype=np.int64),
        "log_items": np.array([item for u in users for item in model.sequences[u]], dtype=str),
    }  # fmt: skip
    if encoder.weight is not None:
        arrays.update(weight=encoder.weight, bias=encoder.bias)
    with atomic_dir(path) as tmp:
        (tmp / FIT_FILE).write_text(json.dumps(record, indent=1, default=_plain) + "\n", encoding="utf-8")
        with open(tmp / ARRAYS_FILE, "wb") as handle:
            np.savez(handle, **arrays)
    return Path(path)


def _read(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    if not is_saved_fit(path):
        raise DataError(f"{path} holds no saved fit ({FIT_FILE} missing): save one with Recommender.save_fit or `genrec fit`")
    try:
        record = json.loads((path / FIT_FILE).read_text(encoding="utf-8"))
        with np.load(path / ARRAYS_FILE) as stored:
            arrays = {name: stored[name] for name in stored.files}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
        raise DataError(f"saved fit {path} cannot be read ({error}): fit again") from None
    if record.get("format") != FORMAT:
        raise DataError(f"saved fit {path} has format {record.get('format')!r}; this genrec reads format {FORMAT}: fit again")
    return record, arrays


def _features(record: dict[str, Any], arrays: dict[str, np.ndarray], catalog: Catalog, read: ReadTexts | None, fingerprint: str) -> tuple[np.ndarray, int]:
    """Every catalog item's standardised vector: the saved one where the item's ID and words are
    unchanged, else read now; and how many were read."""
    saved = {str(item_id): row for row, item_id in enumerate(arrays["item_ids"])}
    texts = catalog_texts(catalog)
    rows = np.array([saved.get(item_id, -1) for item_id in catalog.ids], dtype=np.int64)
    for position in np.flatnonzero(rows >= 0):
        if arrays["text_sha"][rows[position]] != _text_sha(texts[position]):
            rows[position] = -1  # its words changed: its saved vector read other words
    features = np.zeros((len(catalog), arrays["features"].shape[1]), dtype=np.float32)
    features[rows >= 0] = arrays["features"][rows[rows >= 0]]
    unread = np.flatnonzero(rows < 0)
    if len(unread):
        example = catalog.ids[int(unread[0])]
        if read is None or fingerprint != record["model_fingerprint"]:
            raise ConfigError(f"{len(unread)} catalog item(s) (such as {example!r}) are new to the saved fit or their words changed, "
                              "and this model is not the one the fit read items with: load with that model, or fit again")  # fmt: skip
        raw = read([texts[p] for p in unread], int(record["encoder"]["layer"]))
        features[unread] = (raw - arrays["mean"]) / arrays["scale"]
    return features, len(unread)


def _sequences(arrays: dict[str, np.ndarray], catalog: Catalog) -> tuple[dict[str, list[str]], int]:
    """The saved log, less interactions with items the catalog no longer holds (counted)."""
    items = [str(item) for item in arrays["log_items"]]
    ends = np.cumsum(arrays["log_lengths"])
    sequences = {str(user): items[end - length : end] for user, length, end in zip(arrays["log_users"], arrays["log_lengths"], ends)}
    gone = sum(item not in catalog for item in items)
    if gone:
        log.warning("%d interaction(s) of the saved log name items this catalog no longer holds: left out", gone)
        sequences = {user: [item for item in seq if item in catalog] for user, seq in sequences.items()}
    return sequences, gone


def load_log_model(path: str | Path, catalog: Catalog, read: ReadTexts | None = None, model_fingerprint: str = "") -> LogModel:
    """The fit saved in ``path``, serving ``catalog``. ``read``: the model's reading of texts at a
    layer, for items the fit has no vector of; ``model_fingerprint``: that model's."""
    from .baselines.content import Hybrid  # (scikit-learn, imported only when a log is loaded)

    path = Path(path)
    record, arrays = _read(path)
    features, n_read = _features(record, arrays, catalog, read, model_fingerprint)
    settings = {k: v for k, v in record["encoder"].items() if k != "layer"}
    encoder = ItemEncoder.from_standardised(features, arrays["mean"], arrays["scale"], EncoderSettings(**settings))
    if "weight" in arrays:
        encoder.weight, encoder.bias = arrays["weight"], arrays["bias"]
    sequences, gone = _sequences(arrays, catalog)
    hybrid = Hybrid(catalog, **record["hybrid"])
    hybrid.fit(Split(train=sequences, valid=[], test=[]))  # (nothing to choose on: the saved settings stay)
    tuned = {**record["tuned"], "loaded_from": str(path), "items_read_at_load": n_read, "interactions_left_out_at_load": gone}
    return LogModel(EncoderScores(catalog, encoder, hybrid, record["mixture_weight"]), tuned, sequences, record["model_fingerprint"])

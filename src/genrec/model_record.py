"""The record a model directory fine-tuned by genrec carries (``genrec.json``): the catalog,
template, split and output vocabulary it was trained with, which ``Recommender`` and the harness
follow when they load it."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from .catalog import Catalog
from .decoding import OUTPUT_VOCABULARIES

__all__ = ["TRAINING_RECORD", "fine_tuned_by_genrec", "trained_template", "trained_vocabulary", "check_training_record"]

#: file a fine-tuned model directory carries: which catalog and template it was trained with
TRAINING_RECORD = "genrec.json"


def fine_tuned_by_genrec(model: Any) -> bool:
    """Whether ``model`` (an id, a directory or a loaded model) is a directory genrec fine-tuned:
    one that holds its ``genrec.json``."""
    return isinstance(model, (str, Path)) and (Path(model) / TRAINING_RECORD).is_file()


def trained_template(model: str | Path | None) -> str | None:
    """The template a genrec-fine-tuned model directory was trained with (its ``genrec.json``), so
    it is prompted the way it learnt; None for any other model."""
    template = _trained_setting(model, "template")
    return template if isinstance(template, str) else None


def trained_vocabulary(model: str | Path | None) -> str:
    """The output vocabulary a genrec-fine-tuned model directory was trained with ("full" for
    models fine-tuned before the setting existed, and for any other model)."""
    value = _trained_setting(model, "output_vocabulary")
    return value if value in OUTPUT_VOCABULARIES else "full"


def _trained_setting(model: str | Path | None, key: str) -> Any:
    """``key`` of a model directory's ``genrec.json``; None without one, or when it is unreadable."""
    try:
        record = _read_training_record(Path(model)) if model else None
    except (OSError, ValueError):
        return None
    return record.get(key) if record else None


def _read_training_record(model_dir: Path) -> dict[str, Any] | None:
    """A model directory's ``genrec.json``; None when it has none. Unreadable: OSError or ValueError."""
    path = model_dir / TRAINING_RECORD
    if not path.is_file():
        return None
    record = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(record, dict):
        raise ValueError(f"{path} does not hold a JSON object")
    return record


def check_training_record(model_dir: Path, catalog: Catalog) -> None:
    try:
        record = _read_training_record(model_dir)
    except (OSError, ValueError):
        warnings.warn(
            f"{model_dir / TRAINING_RECORD} is unreadable; cannot check which catalog the model was trained on", stacklevel=3
        )
        return
    if record is None:
        return
    trained = record.get("catalog_hash")
    if trained and trained != catalog.content_hash:
        config = record.get("config")
        data = config.get("data") if isinstance(config, dict) else None
        data = data if isinstance(data, dict) else {}
        # The same item list with another title form is the likely slip: say which form was trained.
        forms = [f"--title-years {data['title_years']}"] if data.get("title_years", "always") != "always" else []
        forms += [f"--title-words {data['title_words']}"] if "title_words" in data else []
        hint = f"; it was trained on titles with {' '.join(forms)}" if forms else ""
        warnings.warn(
            f"model {model_dir} was fine-tuned on catalog {record.get('catalog_name', '?')!r} "
            f"({record.get('catalog_items', '?')} items), not on this one ({catalog.name!r}, {len(catalog)} items): "
            f"it may write titles that are not here or rank these poorly{hint}",
            stacklevel=3,
        )

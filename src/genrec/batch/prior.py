"""``genrec batch --prior``: a collaborative prior read for a whole batch run, and the checksum of
an input file that a run's manifest records (a changed input is another run)."""

from __future__ import annotations

import hashlib

import numpy as np

from ..catalog import Catalog
from ..errors import DataError
from ..tasks.prior import prior_scores
from .inputs import UserJob

__all__ = ["batch_prior", "file_sha"]


def batch_prior(source: str | None, catalog: Catalog, users: list[UserJob]) -> tuple[np.ndarray | None, str | None]:
    """``genrec batch --prior``: popularity counted in the histories file itself (``pop``), or an
    array of per-item log-scores from a .npy file; and what it was, for the manifest."""
    if not source:
        return None, None
    if source == "pop":
        counts = np.zeros(len(catalog))
        for user in users:
            for item in user.history:
                if item in catalog:
                    counts[catalog.position(item)] += 1
        return np.log1p(counts), "pop"
    try:
        prior = np.load(source, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"--prior {source}: not 'pop' and not a readable .npy array ({exc})") from None
    if prior.ndim != 1:
        raise DataError(f"--prior {source} has shape {prior.shape}; expected ({len(catalog)},): one log-score per catalog item")
    prior_scores(prior, [[]], len(catalog))  # shape and finiteness, as a PriorError naming the problem
    return prior, f"file:{file_sha(source)}"


def file_sha(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]

"""``genrec batch``: recommendations for many users, on one machine or a Ray cluster, written as
resumable part files (see ``parts`` for the folder layout)."""

from .inputs import UserJob, read_users
from .prior import batch_prior, file_sha
from .job import BatchSummary, decode_parts, fingerprint, run_batch, run_batch_stream
from .runner import DecodeSettings, PartOutcome, PartRunner, RecommenderSpec, decode_part
from .stream import StreamInput

__all__ = [
    "UserJob",
    "read_users",
    "RecommenderSpec",
    "DecodeSettings",
    "PartOutcome",
    "PartRunner",
    "decode_part",
    "decode_parts",
    "run_batch",
    "run_batch_stream",
    "StreamInput",
    "BatchSummary",
    "fingerprint",
    "batch_prior",
    "file_sha",
]

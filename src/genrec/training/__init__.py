"""Fine-tuning: training data rendered exactly as inference renders it (``data``), and the
resumable training loop (``trainer``), optionally distilling a collaborative baseline (``teacher``),
over all of the decoder stack or part of it (``layers``: frozen or dropped layers), its learning
rate set step by step by ``schedule``."""

from .data import MODES, Encoded, encode_all_positions, encode_examples, training_examples
from .trainer import PRECISIONS, TrainConfig, TrainResult, train

__all__ = [
    "MODES",
    "PRECISIONS",
    "Encoded",
    "TrainConfig",
    "TrainResult",
    "encode_all_positions",
    "encode_examples",
    "train",
    "training_examples",
]

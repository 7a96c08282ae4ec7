"""Interaction data: dataset loaders (MovieLens, an interactions CSV, D3 CSV files, RecBole atomic
files), the splits every consumer shares (leave-one-out by time, or the files' own parts), and the
command-line options that name a dataset. Training and the evaluation harness both read data
through here. (``demo_movies.csv``, the demo catalog, lives beside these modules.)"""

from .datasets import Dataset, Example, load_dataset
from .splits import Split, sample_examples, split_dataset

__all__ = ["Dataset", "Example", "load_dataset", "Split", "split_dataset", "sample_examples"]

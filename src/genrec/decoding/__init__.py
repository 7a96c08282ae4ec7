"""Constrained decoding: the title index (a prefix trie as flat arrays), the title constraint,
the family cap, batched beam search, the shared prompt-prefix cache, candidate scoring, the output
vocabulary, and the constraint as a transformers ``LogitsProcessor``."""

from .beam_search import Hypothesis, beam_search
from .constraint import TitleConstraint
from .family import DEFAULT_FAMILY_SHARE, FamilyCap, check_family_cap
from .index import TitleIndex, build_index
from .index_cache import TitleIndexes, load_or_build_index
from .logits_process import TrieLogitsProcessor
from .prefix_cache import PrefixCache
from .prior import TitlePrior
from .scoring import score_continuations
from .vocabulary import OUTPUT_VOCABULARIES, OutputVocabulary, check_output_vocabulary
from .tokenization import TitleContext, split_prompt_context, tokenize_titles, tokenizer_fingerprint

__all__ = [
    "Hypothesis",
    "beam_search",
    "TitleConstraint",
    "FamilyCap",
    "check_family_cap",
    "DEFAULT_FAMILY_SHARE",
    "TitleIndex",
    "TitleIndexes",
    "build_index",
    "load_or_build_index",
    "TrieLogitsProcessor",
    "PrefixCache",
    "TitlePrior",
    "score_continuations",
    "TitleContext",
    "split_prompt_context",
    "tokenize_titles",
    "tokenizer_fingerprint",
    "OUTPUT_VOCABULARIES",
    "OutputVocabulary",
    "check_output_vocabulary",
]

"""The types one beam search works with: its finished hypotheses, its settings, and the state it
carries from step to step (the live beams, the lookahead each beam holds, a step's candidates).
``beam_search.py`` runs the steps; ``lookahead.py`` feeds the model; ``kv_rows.py`` keeps the
key/value cache's rows in step with the state."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .constraint import TitleConstraint
from .prior import TitlePrior
from .vocabulary import OutputVocabulary

__all__ = ["Hypothesis", "SearchSettings", "ModelCall", "Ahead", "SearchState", "Candidates", "CANDIDATE_FIELDS"]


@dataclass(frozen=True)
class Hypothesis:
    """A finished beam: its tokens (end marker included), score and, when constrained, its trie leaf."""

    tokens: tuple[int, ...]
    score: float
    node: int = -1
    finished: bool = True


@dataclass(frozen=True)
class SearchSettings:
    """What stays fixed during one search."""

    beams: int
    num_return: int
    max_steps: int
    length_penalty: float
    pad_token_id: int
    constraint: TitleConstraint | None
    prior: TitlePrior | None
    eos: torch.Tensor | None
    cache_arg: str
    mask_dtype: torch.dtype
    lookahead: bool
    vocabulary: OutputVocabulary | None
    max_chain: int | None = None  # forced tokens fed ahead of a beam, topped up at every call (None: whole chains)


@dataclass(frozen=True)
class ModelCall:
    """One model call of a search after its prefill, as a step hook (``beam_search(on_model_call=)``)
    sees it: what was fed, to how many users, and how long the call took."""

    users: int  # users with a beam fed in this call
    active: int  # users still decoding
    rows: int  # beam rows fed (topped up ones included)
    tokens: int  # tokens fed: each fed beam's last token and the fed part of its chain, and top-ups
    width: int  # queries per user in the call (padded)
    keys: int  # cache positions before the call (prompt and generated)
    seconds: float


@dataclass
class Ahead:
    """Per beam row, what its last model call computed for the steps to come: the forced tokens
    it was fed ahead (a chain of single-child trie nodes), each one's log-probability, the cache
    slot each sits in, and the full next-token row where the chain ends."""

    tokens: torch.Tensor  # [rows, width] forced tokens, in order (-1: none)
    logp: torch.Tensor  # [rows, width] log-probability of each forced token
    slots: torch.Tensor  # [rows, width] cache slot of each (-1: not fed: a title's end marker)
    length: torch.Tensor  # [rows] forced tokens known
    taken: torch.Tensor  # [rows] of those, how many the beam has taken
    row: torch.Tensor  # [rows, vocab] log-probabilities after the last fed token

    def select(self, rows: torch.Tensor) -> Ahead:
        return Ahead(*(t[rows] for t in (self.tokens, self.logp, self.slots, self.length, self.taken, self.row)))


@dataclass
class SearchState:
    """The live beams of the users still decoding (one row per user, ``beams`` per row)."""

    active: torch.Tensor  # original user number of each row
    scores: torch.Tensor  # [users, beams] running log-probabilities (-inf: no beam)
    generated: torch.Tensor  # [users, beams, step] tokens so far
    slots: torch.Tensor  # [users, beams, step] where each token's key sits among the generated keys (-1: not fed yet)
    prompt_keep: torch.Tensor  # [users, prompt] real (not padding) prompt positions
    first_position: torch.Tensor  # [users] position id of the first generated token
    nodes: torch.Tensor | None  # [users * beams] trie node of each beam (constrained)
    last_token: torch.Tensor | None  # [users, beams] the token each beam took last
    ahead: Ahead
    n_keys: int = 0  # generated-key slots in the cache (the same count for every user)
    step: int = 0


@dataclass
class Candidates:
    """The best (beam, token) extensions of one step, ``2 * beams`` per user, best first (then,
    under a family cap, the best ``beams`` of the held-back ones: ``spare``)."""

    scores: torch.Tensor
    beam_of: torch.Tensor
    token: torch.Tensor
    parent_row: torch.Tensor
    valid: torch.Tensor
    child: torch.Tensor
    is_final: torch.Tensor
    spare: torch.Tensor | None = None


CANDIDATE_FIELDS = ("scores", "beam_of", "token", "parent_row", "valid", "child", "is_final")

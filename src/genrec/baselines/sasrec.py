"""SASRec (Kang & McAuley, 2018), compact, as a baseline trained by the harness.

Two losses, named in the harness: ``sasrec-bce`` is the paper's (binary cross-entropy with one
sampled negative per position; 2 blocks, 1 head, hidden 50, dropout 0.2, at most 200 positions,
Adam lr 1e-3 betas 0.9/0.98, batches of 128); ``sasrec-ce`` is full-softmax cross-entropy over the
whole catalog at every position (Klenitskiy & Vasilev, RecSys 2023: with it SASRec beats
BERT4Rec), hidden 64. Training stops early on validation NDCG@10 (full catalog, history
excluded), checked every ``eval_every`` epochs, and the best epoch's weights are kept.
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from ..catalog import Catalog
from ..data.datasets import Example
from ..data.splits import Split
from .scored import ScoredMethod, validation_ndcg
from ..errors import ConfigError

__all__ = ["SASRecConfig", "SASRecModel", "SASRec"]


@dataclass
class SASRecConfig:
    hidden: int = 50
    blocks: int = 2
    heads: int = 1
    dropout: float = 0.2
    max_len: int = 200
    lr: float = 1e-3
    batch_size: int = 128
    max_epochs: int = 200
    eval_every: int = 5
    patience: int = 5  # evaluations without improvement before stopping
    seed: int = 0
    loss: str = "bce"  # "bce": one sampled negative per position; "ce": softmax over the catalog

    @classmethod
    def for_loss(cls, loss: str, **overrides: object) -> SASRecConfig:
        """The settings each loss is published with (module docstring), then ``overrides``."""
        if loss == "ce":
            return cls(**{"loss": "ce", "hidden": 64, "dropout": 0.5, "eval_every": 2, **overrides})  # type: ignore[arg-type]
        if loss == "bce":
            return cls(**{"loss": "bce", **overrides})  # type: ignore[arg-type]
        raise ConfigError(f"unknown SASRec loss {loss!r} (bce or ce)")


class SASRecModel(nn.Module):
    def __init__(self, n_items: int, config: SASRecConfig):
        super().__init__()
        h = config.hidden
        self.hidden = h
        self.item_emb = nn.Embedding(n_items + 1, h, padding_idx=0)  # 0 pads, items are 1..n
        self.pos_emb = nn.Embedding(config.max_len, h)
        self.dropout = nn.Dropout(config.dropout)
        self.attn_norms = nn.ModuleList([nn.LayerNorm(h, eps=1e-8) for _ in range(config.blocks)])
        self.attns = nn.ModuleList(
            [nn.MultiheadAttention(h, config.heads, dropout=config.dropout, batch_first=True) for _ in range(config.blocks)]
        )
        self.ffn_norms = nn.ModuleList([nn.LayerNorm(h, eps=1e-8) for _ in range(config.blocks)])
        self.ffns = nn.ModuleList(
            [
                nn.Sequential(nn.Linear(h, h), nn.ReLU(), nn.Dropout(config.dropout), nn.Linear(h, h), nn.Dropout(config.dropout))
                for _ in range(config.blocks)
            ]
        )
        self.last_norm = nn.LayerNorm(h, eps=1e-8)
        # small initial embeddings, as the reference implementations use (Xavier): with
        # nn.Embedding's N(0, 1) start a rare item's vector barely moves in a few hundred Adam
        # steps, and the model ranks by popularity
        for weight in (self.item_emb.weight, self.pos_emb.weight):
            nn.init.xavier_normal_(weight)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def encode(self, seqs: torch.Tensor) -> torch.Tensor:
        """Hidden states ``[B, L, h]`` for left-padded item sequences ``[B, L]``, ``L <= max_len``.

        Positions count as in a window of ``max_len`` ending at the last item, so a batch trimmed
        to its longest sequence computes exactly what the full window would. Padding is masked
        out as attention keys (each padding position attends only to itself, to stay finite).
        """
        batch, length = seqs.shape
        x = self.item_emb(seqs) * math.sqrt(self.hidden)
        offset = self.pos_emb.num_embeddings - length
        x = x + self.pos_emb(torch.arange(offset, offset + length, device=seqs.device)).unsqueeze(0)
        x = self.dropout(x)
        pad = seqs == 0
        keep = (~pad).unsqueeze(-1).to(x.dtype)
        x = x * keep
        blocked = torch.triu(torch.ones(length, length, dtype=torch.bool, device=seqs.device), diagonal=1)
        blocked = blocked.unsqueeze(0) | pad.unsqueeze(1)
        blocked = blocked & ~torch.eye(length, dtype=torch.bool, device=seqs.device).unsqueeze(0)
        heads = self.attns[0].num_heads
        blocked = blocked.repeat_interleave(heads, dim=0)
        for attn_norm, attn, ffn_norm, ffn in zip(self.attn_norms, self.attns, self.ffn_norms, self.ffns):
            q = attn_norm(x)
            out, _ = attn(q, x, x, attn_mask=blocked, need_weights=False)
            x = q + out
            x = ffn_norm(x)
            x = (x + ffn(x)) * keep
        return self.last_norm(x)

    def item_scores(self, seqs: torch.Tensor) -> torch.Tensor:
        """Scores of every item (1..n) after each sequence's last position: ``[B, n]``."""
        last = self.encode(seqs)[:, -1, :]
        return last @ self.item_emb.weight[1:].T


def _left_pad(seqs: Sequence[Sequence[int]], max_len: int) -> torch.Tensor:
    """Left-padded batch, as wide as its longest sequence (at most ``max_len``)."""
    length = max(1, min(max_len, max((len(s) for s in seqs), default=1)))
    out = torch.zeros((len(seqs), length), dtype=torch.long)
    for row, seq in enumerate(seqs):
        seq = list(seq)[-length:]
        if seq:
            out[row, length - len(seq) :] = torch.tensor(seq, dtype=torch.long)
    return out


class SASRec(ScoredMethod):
    name = "sasrec"
    scores_are_logits = True

    def __init__(self, catalog: Catalog, config: SASRecConfig | None = None, *, progress: bool = True):
        super().__init__(catalog)
        self.config = config or SASRecConfig()
        self.progress = progress
        self.model: SASRecModel | None = None
        self.history: list[dict[str, float]] = []

    def _ids(self, items: Sequence[str]) -> list[int]:
        return [self.index[i] + 1 for i in items if i in self.index]

    def fit(self, split: Split) -> None:
        cfg = self.config
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        n_items = len(self.catalog)
        sequences = [self._ids(s) for s in split.train.values()]
        sequences = [s for s in sequences if len(s) >= 2]
        model = SASRecModel(n_items, cfg)
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98))
        loss_fn = nn.BCEWithLogitsLoss()
        rng = np.random.default_rng(cfg.seed)
        best_score, best_state, best_epoch, stale = -1.0, None, 0, 0
        bar = _bar(cfg.max_epochs, self.progress)
        for epoch in range(1, cfg.max_epochs + 1):
            model.train()
            order = rng.permutation(len(sequences))
            total = 0.0
            started = time.perf_counter()
            for start in range(0, len(order), cfg.batch_size):
                batch = [sequences[i] for i in order[start : start + cfg.batch_size]]
                inputs = _left_pad([s[:-1] for s in batch], cfg.max_len)
                positives = _left_pad([s[1:] for s in batch], cfg.max_len)
                hidden = model.encode(inputs)
                mask = positives != 0
                if cfg.loss == "ce":
                    # every position predicts its next item among all items (ids 1..n -> classes 0..n-1)
                    logits = hidden[mask] @ model.item_emb.weight[1:].T
                    loss = nn.functional.cross_entropy(logits, positives[mask] - 1)
                else:
                    negatives = self._negatives(batch, positives, rng)
                    pos_logits = (hidden * model.item_emb(positives)).sum(-1)
                    neg_logits = (hidden * model.item_emb(negatives)).sum(-1)
                    loss = loss_fn(pos_logits[mask], torch.ones_like(pos_logits[mask])) + loss_fn(
                        neg_logits[mask], torch.zeros_like(neg_logits[mask])
                    )
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(batch)
            record = {"epoch": epoch, "loss": total / max(len(sequences), 1), "epoch_s": time.perf_counter() - started}
            if split.valid and (epoch % cfg.eval_every == 0 or epoch == cfg.max_epochs):
                self.model = model
                score = self.validate(split.valid)
                record["valid_ndcg@10"] = score
                if score > best_score:
                    best_score, best_state, best_epoch, stale = score, copy.deepcopy(model.state_dict()), epoch, 0
                else:
                    stale += 1
            self.history.append(record)
            bar.set_postfix(loss=f"{record['loss']:.3f}", best_ndcg=f"{max(best_score, 0):.4f}")
            bar.update(1)
            if stale >= cfg.patience:
                break
        bar.close()
        if best_state is not None:
            model.load_state_dict(best_state)
        model.eval()
        self.model = model
        self.best_epoch = best_epoch or len(self.history)
        self.best_valid_ndcg = best_score
        self._record_tuned()

    def _record_tuned(self) -> None:
        cfg = self.config
        self.tuned = {"loss": cfg.loss, "hidden": cfg.hidden, "blocks": cfg.blocks, "dropout": cfg.dropout,
                      "max_len": cfg.max_len, "epochs_run": len(self.history), "best_epoch": self.best_epoch,
                      "best_valid_NDCG@10": round(self.best_valid_ndcg, 4)}  # fmt: skip

    def _negatives(self, batch: list[list[int]], positives: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """One random item per position that the user never interacted with (redrawn until so)."""
        n_items = len(self.catalog)
        seen = np.zeros((len(batch), n_items + 1), dtype=bool)
        for row, seq in enumerate(batch):
            seen[row, seq] = True
        negatives = rng.integers(1, n_items + 1, size=positives.shape)
        rows = np.arange(len(batch))[:, None].repeat(positives.shape[1], axis=1)
        clash = seen[rows, negatives]
        while clash.any():
            negatives[clash] = rng.integers(1, n_items + 1, size=int(clash.sum()))
            clash = seen[rows, negatives]
        return torch.from_numpy(negatives).long() * (positives != 0)

    @torch.inference_mode()
    def score(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        if self.model is None:
            raise ConfigError("SASRec is not trained: call fit() first, or load_state()")
        self.model.eval()
        out = []
        for start in range(0, len(histories), 256):
            seqs = _left_pad([self._ids(h) for h in histories[start : start + 256]], self.config.max_len)
            out.append(self.model.item_scores(seqs).numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.catalog)))

    def validate(self, examples: Sequence[Example], limit: int = 2000) -> float:
        """Mean NDCG@10 over validation examples, full catalog, history excluded."""
        self.model.eval()
        return validation_ndcg(self, examples, limit)

    def state(self) -> dict:
        return {"config": asdict(self.config), "state_dict": self.model.state_dict(), "history": self.history,
                "best_epoch": self.best_epoch, "best_valid_ndcg": self.best_valid_ndcg, "fit_s": self.fit_s}  # fmt: skip

    def load_state(self, state: dict) -> None:
        self.config = SASRecConfig(**state["config"])
        self.model = SASRecModel(len(self.catalog), self.config)
        self.model.load_state_dict(state["state_dict"])
        self.model.eval()
        self.history = state["history"]
        self.best_epoch = state["best_epoch"]
        self.best_valid_ndcg = state["best_valid_ndcg"]
        self.fit_s = state.get("fit_s", 0.0)
        self._record_tuned()


def _bar(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="training SASRec", unit="epoch", disable=not enabled)

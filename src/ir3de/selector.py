"""Sample Route Selectors: turn per-token domain probabilities into one decision.

Per token t, ``p_t = softmax(x̃_t W)``. A token's probabilities, entropy and
vote depend only on its id, so :func:`vocab_scores` computes them once per
vocabulary entry and routing is table look-ups plus a small sort.

Selectors (``P`` prompts are processed together, vectorised):

* ``topk``: the k tokens of the prompt with the lowest entropy vote for their
  argmax domain; majority wins. Prompts shorter than k let every token vote.
* ``all``: every token (at most the prompt cap, 1024 by default) votes.
* ``avg``: argmax of the mean of the tokens' probability vectors.

Tie-breaking (deterministic):

1. a token's vote is its most probable domain; equal probabilities go to the
   expert listed first;
2. tokens of equal entropy are taken in prompt order (earlier first);
3. domains with equal votes are separated by the sum of their probabilities
   over the voting tokens, then by expert order (first listed wins);
4. ``avg`` ties go to the expert listed first.

Confidence is the winner's vote share (``topk``/``all``) or its mean
probability (``avg``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .embedding import Embedder
from .errors import EmptyInputError, IR3DEError

__all__ = ["SELECTORS", "Selection", "SelectorName", "VocabScores", "select", "vocab_scores"]

SelectorName = Literal["topk", "all", "avg"]
SELECTORS: tuple[str, ...] = ("topk", "all", "avg")


@dataclass(frozen=True, eq=False)
class VocabScores:
    """Per-vocabulary routing tables: ``probs`` (V, D), ``entropy`` (V,), ``vote`` (V,) and
    ``rank`` (V,), the dense rank of each entropy (equal entropies share a rank), which lets
    a batch be ordered by one integer sort instead of a two-key lexsort."""

    probs: np.ndarray
    entropy: np.ndarray
    vote: np.ndarray
    rank: np.ndarray

    @classmethod
    def build(cls, probs: np.ndarray, entropy: np.ndarray) -> VocabScores:
        """Derive votes (argmax, first expert on ties) and entropy ranks."""
        rank = np.unique(entropy, return_inverse=True)[1].reshape(-1)
        return cls(probs=probs, entropy=entropy, vote=probs.argmax(axis=1), rank=rank)


def vocab_scores(embedder: Embedder, W: np.ndarray,
                 offset: np.ndarray | None = None) -> VocabScores:
    """Softmax probabilities, entropy and argmax vote of every token id under ``W``
    (plus ``offset[t]``, the per-token scores of identity features, when given)."""
    V, D = embedder.vocab_size, W.shape[1]
    probs = np.empty((V, D))
    entropy = np.empty(V)
    # Small blocks keep the temporaries in cache (faster at h = 4096, same result).
    for start, rows in embedder.blocks(512):
        logits = rows @ W[:-1] + W[-1]
        if offset is not None:
            logits += offset[start:start + rows.shape[0]]
        logits -= logits.max(axis=1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        p = np.exp(logp)
        stop = start + rows.shape[0]
        probs[start:stop] = p
        entropy[start:stop] = -(p * logp).sum(axis=1)
    return VocabScores.build(probs, entropy)


@dataclass(frozen=True, eq=False)
class Selection:
    """Batched selector output.

    ``choice`` (P,) expert indices; ``confidence`` (P,); ``scores`` (P, D) vote
    shares or mean probabilities; ``voters`` per prompt, the positions (in the
    prompt's token ids) of the tokens that voted, lowest entropy first (for
    ``avg``, every position in prompt order).
    """

    choice: np.ndarray
    confidence: np.ndarray
    scores: np.ndarray
    voters: list[np.ndarray]


def select(ids: Sequence[np.ndarray], table: VocabScores, *, selector: str = "topk",
           k: int = 10) -> Selection:
    """Route a batch of tokenised prompts with one selector (see the module docs)."""
    if selector not in SELECTORS:
        raise IR3DEError(f"unknown selector {selector!r}; choose one of {', '.join(SELECTORS)}")
    if selector == "topk" and (not isinstance(k, (int, np.integer)) or k <= 0):
        raise IR3DEError(f"k must be a positive integer, got {k!r}")
    P, D = len(ids), table.probs.shape[1]
    if P == 0:
        return Selection(np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros((0, D)), [])
    if P == 1 and ids[0].size:
        return _select_one(ids[0], table, selector, int(k))
    lengths = np.fromiter((x.size for x in ids), dtype=np.int64, count=P)
    if np.any(lengths == 0):
        first = int(np.flatnonzero(lengths == 0)[0])
        raise EmptyInputError(f"prompt #{first} has no token to route on (empty or only "
                              "special tokens)")
    flat = np.concatenate(ids)
    starts = np.cumsum(lengths) - lengths
    pid = np.repeat(np.arange(P), lengths)
    rows = np.arange(P)

    if selector == "avg":
        scores = np.add.reduceat(table.probs[flat], starts, axis=0) / lengths[:, None]
        choice = scores.argmax(axis=1)
        voters = [np.arange(n) for n in lengths]
        return Selection(choice, scores[rows, choice], scores, voters)

    if selector == "all":
        k = int(lengths.max())
    # Primary key prompt, secondary entropy rank; the sort is stable, so equal entropies
    # stay in prompt order.
    order = np.argsort(pid * (int(table.rank.max()) + 1) + table.rank[flat], kind="stable")
    rank = np.arange(flat.size) - starts[pid]
    keep = order[rank < k]
    n_voters = np.minimum(lengths, k)
    tokens = flat[keep]
    counts = np.bincount(pid[keep] * D + table.vote[tokens], minlength=P * D).reshape(P, D)
    vstarts = np.cumsum(n_voters) - n_voters
    prob_sums = np.add.reduceat(table.probs[tokens], vstarts, axis=0)
    best = counts.max(axis=1)
    choice = np.where(counts == best[:, None], prob_sums, -np.inf).argmax(axis=1)
    positions = keep - starts[pid[keep]]
    voters = np.split(positions, np.cumsum(n_voters)[:-1])
    return Selection(choice, best / n_voters, counts / n_voters[:, None], voters)


def _select_one(x: np.ndarray, table: VocabScores, selector: str, k: int) -> Selection:
    """:func:`select` for a single prompt with fewer numpy calls: single-request latency is
    what a gateway pays on every request. Same results as the batched path (tested)."""
    if selector == "avg":
        scores = table.probs[x].mean(axis=0)
        choice = int(scores.argmax())
        return Selection(np.array([choice]), scores[[choice]], scores[None, :],
                         [np.arange(x.size)])
    order = np.argsort(table.entropy[x], kind="stable")
    if selector == "topk":
        order = order[:k]
    tokens = x[order]
    counts = np.bincount(table.vote[tokens], minlength=table.probs.shape[1])
    best = counts.max()
    choice = int(np.where(counts == best, table.probs[tokens].sum(axis=0), -np.inf).argmax())
    return Selection(np.array([choice]), np.array([best / order.size]),
                     counts[None, :] / order.size, [order])

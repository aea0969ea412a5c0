"""Issue 6 exploration: count-based log-likelihood routers (numbers in EVALUATION.md).

The identity features showed that per-token counts carry most of the routing evidence, so
this script measures routers whose per-token table comes from the counts alone, in the
Naive-Bayes form: ``L[t, d] = log((c[t, d] + alpha) / (n[d] + alpha V))`` and a prompt's score is
``Σ_t f(tf_t) L[t, d]`` over its distinct tokens (a uniform prior: every domain weighs the
same, like the balanced ridge). It is linear in static token features (one-hot ids),
closed form, and its statistics are per-domain sums (each column depends on its own
domain only, so add/remove is exact); routing is one table look-up per token. Families:

* ``nb tf idf comp wn alpha``: tf transform f = raw counts, log(1 + tf) or binary; optional
  IDF weights (document frequencies are additive too), complement classes (CNB) and weight
  normalisation (Rennie et al., 2003).
* ``bigram tf alpha``: the same with (previous id, id) pairs as extra features (hashed into
  2²⁰ buckets).
* ``prior tf alpha μ``: the embedding as a back-off: μ pseudo-counts spread by the balanced
  embedding-only ridge's (clipped, renormalised) domain posterior of each token.
* ``blend tf alpha β``: the ``default`` router's per-token probabilities + β x L (centred per
  token), pooled with the same f(tf) weights.

Settings are chosen on a held-out 20 % of each split's FIT data (first in grid order on
ties); test prompts are only scored.

Run:  python benchmarks/explore_counts.py [--embedder wordllama] [--settings domains ...]
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
from _holdout import explore_args, report_splits
from explore_combiners import _fit_stats, _scores
from explore_document import _default_table

from ir3de import load_embedder

PAIR_BUCKETS = 1 << 20
ALPHAS = (0.01, 0.03, 0.1, 0.3, 1.0)
Groups = dict[str, list[np.ndarray]]


def _features(ids: Sequence[np.ndarray], tf: str, n_features: int,
              bigram: bool) -> sp.csr_matrix:
    """Prompts x features matrix of f(tf) (token ids, then hashed pairs when ``bigram``)."""
    V = n_features - (PAIR_BUCKETS if bigram else 0)
    rows, cols = [], []
    for i, x in enumerate(ids):
        keys = x.astype(np.int64)
        if bigram:
            prev = np.concatenate([[V], keys[:-1]])  # V marks the prompt start
            keys = np.concatenate([keys, V + (prev * 1_000_003 + keys) % PAIR_BUCKETS])
        rows.append(np.full(keys.size, i))
        cols.append(keys)
    M = sp.csr_matrix((np.ones(sum(c.size for c in cols)),
                       (np.concatenate(rows), np.concatenate(cols))),
                      shape=(len(ids), n_features))
    M.sum_duplicates()
    if tf == "log":
        M.data = np.log1p(M.data)
    elif tf == "bin":
        M.data[:] = 1.0
    return M


class _Counts:
    """Per-domain feature sums and document frequencies of one fit set for one tf."""

    def __init__(self, groups: Groups, tf: str, n_features: int, bigram: bool) -> None:
        mats = [_features(ids, tf, n_features, bigram) for ids in groups.values()]
        self.C = np.stack([np.asarray(M.sum(axis=0)).ravel() for M in mats], axis=1)
        df = sum(np.asarray((M > 0).sum(axis=0)).ravel() for M in mats)
        self.idf = np.log(sum(M.shape[0] for M in mats) / np.maximum(df, 1))

    def table(self, alpha: float, idf: bool = False, comp: bool = False,
              wn: bool = False, pseudo: np.ndarray | None = None) -> np.ndarray:
        C = self.C * self.idf[:, None] if idf else self.C
        if comp:  # complement NB: evidence against every other domain
            C = C.sum(axis=1, keepdims=True) - C
        num = C + alpha + (0 if pseudo is None else pseudo)
        L = np.log(num / num.sum(axis=0))
        if comp:
            L = -L
        if wn:
            L = L / np.abs(L).sum(axis=0)
        return L - L.mean(axis=1, keepdims=True)


def _embedding_prior(emb, groups: Groups) -> np.ndarray:
    """Balanced embedding-only ridge posterior of each token id (clipped, renormalised)."""
    p = np.clip(_scores(emb, _fit_stats(emb, groups), np.inf), 1e-3, None)
    return p / p.sum(axis=1, keepdims=True)


def _variants(emb, fit: Groups, ids: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """Scores of every variant fitted on ``fit`` for the prompts ``ids``."""
    V = emb.vocab_size
    out: dict[str, np.ndarray] = {}
    default = _default_table(emb, fit)
    prior = _embedding_prior(emb, fit)
    for tf in ("raw", "log", "bin"):
        counts = _Counts(fit, tf, V, bigram=False)
        M = _features(ids, tf, V, bigram=False)
        weighted = (M, M @ sp.diags(counts.idf))  # without / with IDF weights
        for idf, comp, wn, alpha in itertools.product((0, 1), (0, 1), (0, 1), ALPHAS):
            L = counts.table(alpha, bool(idf), bool(comp), bool(wn))
            out[f"nb {tf} idf={idf} comp={comp} wn={wn} a={alpha:g}"] = weighted[idf] @ L
        weight = np.asarray(M.sum(axis=1))
        for alpha in ALPHAS[1:4]:
            L = counts.table(alpha)
            for mu in (1.0, 10.0):
                out[f"prior {tf} a={alpha:g} μ={mu:g}"] = \
                    M @ counts.table(alpha, pseudo=mu * prior)
            for beta in (0.01, 0.1, 1.0):
                out[f"blend {tf} a={alpha:g} β={beta:g}"] = M @ (default + beta * L) / weight
    for tf in ("log", "bin"):
        n = V + PAIR_BUCKETS
        counts = _Counts(fit, tf, n, bigram=True)
        M = _features(ids, tf, n, bigram=True)
        for alpha in ALPHAS[1:4]:
            out[f"bigram {tf} a={alpha:g}"] = M @ counts.table(alpha)
    return out


def main() -> int:
    args = explore_args(__doc__, ["reasoning-paper", "reasoning-2fold", "reasoning-xdata",
                                  "domains"])
    emb = load_embedder(args.embedder)
    print(f"embedder {emb.name}; balanced accuracy (%): held-out fit → test\n")
    report_splits(emb, args.settings, args.data, lambda fit, ids: _variants(emb, fit, ids))
    return 0


if __name__ == "__main__":
    sys.exit(main())

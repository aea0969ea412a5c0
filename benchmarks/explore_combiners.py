"""Issue 6 exploration: how token scores are combined into one decision.

Every variant keeps the router linear and closed-form (the identity-feature ridge of
``ir3de.solver.solve_identity``, or the embedding-only ridge when μ = ∞); only the
per-token table and the pooling change, and every table is precomputable per vocabulary
entry:

* ``avg-p``: mean of softmax(s_t) (the ``avg`` selector);
* ``avg-s``: mean of the raw ridge scores s_t (a linear classifier on the mean token
  feature; mean log-softmax at any temperature decides exactly like it, because a token's
  log-normaliser is the same for every domain);
* ``avg-log ε``: mean of log max(s_t, ε) (the scores estimate p(domain | token), so this is
  a Naive-Bayes-like product of token posteriors); ``uniq-log ε`` and ``uniq-s`` count
  each distinct token of a prompt once (binary bag of tokens);
* ``ent-avg-p``: ``avg-p`` with token weights log D - H(p_t) (entropy-weighted votes);
* ``topk-avg k``: ``avg-p`` over the k lowest-entropy tokens only.

Each split's settings are chosen on a held-out 20 % of that split's FIT data; test prompts
are only scored, never used to choose.

Run:  python benchmarks/explore_combiners.py [--embedder wordllama] [--data ../shared/data]
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np
from _holdout import balanced, explore_args, tokenized_splits

from ir3de import load_embedder
from ir3de.solver import design, solve, solve_identity
from ir3de.statistics import stats_from_counts

MUS = (0.1, 1.0, 10.0, 100.0, np.inf)
EPS = (1e-3, 1e-2, 0.05, 0.2)
KS = (10, 50)


def _scores(emb, stats: dict, mu: float) -> np.ndarray:
    """Per-vocabulary ridge scores (V, D)."""
    experts = list(stats)
    if np.isinf(mu):
        A, B = design(stats, experts, balance=True, embedder=emb)
        W, U = solve(A, B, normalize=False), 0.0
    else:
        W, U = solve_identity(stats, experts, emb, mu=mu, balance=True)
    E = np.concatenate([rows for _, rows in emb.blocks()])
    return E @ W[:-1] + W[-1] + U


def _log_softmax(s: np.ndarray) -> np.ndarray:
    s = s - s.max(axis=1, keepdims=True)
    return s - np.log(np.exp(s).sum(axis=1, keepdims=True))


def _pool(ids: Sequence[np.ndarray], table: np.ndarray,
          weights: np.ndarray | None = None) -> np.ndarray:
    lengths = np.array([x.size for x in ids])
    flat = np.concatenate(ids)
    rows = table[flat] if weights is None else table[flat] * weights[flat, None]
    return np.add.reduceat(rows, np.cumsum(lengths) - lengths, axis=0)


def _topk(ids: Sequence[np.ndarray], table: np.ndarray, entropy: np.ndarray,
          k: int) -> np.ndarray:
    return np.stack([table[x[np.argsort(entropy[x], kind="stable")[:k]]].sum(axis=0)
                     for x in ids])


def _variants(s: np.ndarray, ids: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """Pooled scores of every combiner for tokenised prompts."""
    logp = _log_softmax(s)
    p = np.exp(logp)
    H = -(p * logp).sum(axis=1)
    out = {"avg-p": _pool(ids, p), "avg-s": _pool(ids, s),
           "ent-avg-p": _pool(ids, p, np.log(s.shape[1]) - H)}
    for eps in EPS:
        clipped = np.log(np.clip(s, eps, None))
        out[f"avg-log ε={eps:g}"] = _pool(ids, clipped)
        out[f"uniq-log ε={eps:g}"] = _pool([np.unique(x) for x in ids], clipped)
    out["uniq-s"] = _pool([np.unique(x) for x in ids], s)
    for k in KS:
        out[f"topk-avg k={k}"] = _topk(ids, p, H, k)
    return out


def _fit_stats(emb, groups: dict[str, list[np.ndarray]]) -> dict:
    out = {}
    for d, ids in groups.items():
        counts = np.bincount(np.concatenate(ids), minlength=emb.vocab_size)
        out[d] = stats_from_counts(emb, counts, domain=d, n_prompts=len(ids))
    return out


def main() -> int:
    args = explore_args(__doc__, ["reasoning-paper", "reasoning-2fold", "reasoning-xdata",
                                  "domains"])
    emb = load_embedder(args.embedder)
    print(f"embedder {emb.name}; balanced accuracy (%): held-out fit → test\n")
    for name, data in tokenized_splits(emb, args.settings, args.data):
        inner_stats, full_stats = _fit_stats(emb, data.inner), _fit_stats(emb, data.fit)
        rows = []
        for mu in MUS:
            held = _variants(_scores(emb, inner_stats, mu), data.held)
            test = _variants(_scores(emb, full_stats, mu), data.test)
            for v in held:
                rows.append((f"μ={mu:g} {v}", balanced(held[v], data.held_y),
                             balanced(test[v], data.test_y)))
        best = max(rows, key=lambda r: r[1])
        print(f"## {name}: chosen on held-out fit: {best[0]} "
              f"({100 * best[1]:.1f} → test {100 * best[2]:.1f})")
        for label, h, t in rows:
            print(f"  {label:28s} {100 * h:5.1f} → {100 * t:5.1f}")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())

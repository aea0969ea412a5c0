"""Issue 6 exploration: variants measured and dropped (numbers in EVALUATION.md).

Each family is a closed-form ridge whose statistics are sums over the fit data; every
setting is chosen on a held-out 20 % of each split's FIT data (test prompts only scored):

* ``bigram``: nested identity features, token id ⊕ (previous id, id) pair, on top of the
  embedding. A pair belongs to exactly one token id, so the pair block eliminates into a
  diagonal correction of the token block, which eliminates into the usual (h+1) Schur
  system: still exact and closed form, but the statistics grow a sparse bigram histogram
  and routing a hash look-up per token. Ridges μ (token ids) and nu (pairs).
* ``weights``: per-occurrence training weights (raw counts, 1/length of the prompt, or
  sublinear 1 + log tf per distinct token) and routing-time pooling (mean, IDF-weighted
  sum, sublinear-tf x IDF over distinct tokens; IDF from document frequencies, which are
  additive too).
* ``doc``: prompt-level ridge: the features of a prompt are the mean of its token
  embeddings (the router still reads one per-token table), optionally through random
  Fourier features (kernel ridge, the paper's future work; no longer a per-token table).

Run:  python benchmarks/explore_dropped.py [--embedder wordllama] [--settings domains ...]
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

import numpy as np
import scipy.sparse as sp
from _holdout import balanced, best_per_family, explore_args, tokenized_splits

from ir3de import load_embedder
from ir3de.solver import solve

LAM = 1e-2


def _table(emb) -> np.ndarray:
    E = np.concatenate([rows for _, rows in emb.blocks()])
    return np.hstack([E, np.ones((E.shape[0], 1))])


def _schur(X: np.ndarray, c: np.ndarray, C: np.ndarray, mu: float) -> np.ndarray:
    """Per-token scores of the identity ridge with (effective) counts c and targets C."""
    keep = mu / (c + mu)
    M = X.T @ (X * (c * keep)[:, None])
    W = solve((M + M.T) / 2, X.T @ (C * keep[:, None]), lam=LAM, normalize=False)
    dense = X @ W
    return dense + (C - c[:, None] * dense) / (c + mu)[:, None]


# ------------------------------------------------------------------ bigrams
def _pair_keys(x: np.ndarray, V: int) -> np.ndarray:
    prev = np.concatenate([[V], x[:-1]]).astype(np.int64)  # V marks the prompt start
    return prev * V + x


def _bigram(X: np.ndarray, groups: dict[str, list[np.ndarray]], mu: float, nu: float):
    V = X.shape[0]
    per = [np.unique(np.concatenate([_pair_keys(x, V) for x in ids]), return_counts=True)
           for ids in groups.values()]
    n = np.array([c.sum() for _, c in per], dtype=float)
    w = n.mean() / n  # balanced domains
    keys = np.unique(np.concatenate([k for k, _ in per]))
    Cg = np.zeros((keys.size, len(per)))
    for j, (k, c) in enumerate(per):
        Cg[np.searchsorted(keys, k), j] = w[j] * c
    cg = Cg.sum(axis=1)
    tok = keys % V
    # Eliminating the pair block: effective token counts and targets.
    f = nu / (cg + nu)
    kappa = np.bincount(tok, weights=cg * f, minlength=V)
    R = np.stack([np.bincount(tok, weights=Cg[:, j] * f, minlength=V)
                  for j in range(len(per))], axis=1)
    T = _schur(X, kappa, R, mu)
    G = (Cg - cg[:, None] * T[tok]) / (cg + nu)[:, None]

    def score(ids: Sequence[np.ndarray]) -> np.ndarray:
        out = []
        for x in ids:
            s = T[x].copy()
            k = _pair_keys(x, V)
            pos = np.minimum(np.searchsorted(keys, k), keys.size - 1)
            hit = keys[pos] == k
            s[hit] += G[pos[hit]]
            out.append(s.mean(axis=0))
        return np.array(out)
    return score


# ----------------------------------------------------------------- weights
def _occurrence_weights(x: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    u, c = np.unique(x, return_counts=True)
    if kind == "raw":
        return u, c.astype(float)
    if kind == "1/len":
        return u, c / x.size
    return u, 1 + np.log(c)  # "sublinear"


def _weighted(X: np.ndarray, groups: dict[str, list[np.ndarray]], mu: float, kind: str,
              pool: str):
    V = X.shape[0]
    C = np.zeros((V, len(groups)))
    df = np.zeros(V)
    n_docs = 0
    for j, ids in enumerate(groups.values()):
        for x in ids:
            u, w = _occurrence_weights(x, kind)
            C[u, j] += w
            df[u] += 1
            n_docs += 1
    C *= C.sum() / len(groups) / C.sum(axis=0)  # balanced domains
    T = _schur(X, C.sum(axis=1), C, mu)
    idf = np.log((1 + n_docs) / (1 + df)) + 1

    def score(ids: Sequence[np.ndarray]) -> np.ndarray:
        out = []
        for x in ids:
            if pool == "mean":
                out.append(T[x].mean(axis=0))
            elif pool == "idf":
                out.append((T[x] * idf[x, None]).sum(axis=0))
            else:  # "sub-idf": distinct tokens, sublinear tf x idf
                u, c = np.unique(x, return_counts=True)
                out.append((((1 + np.log(c)) * idf[u])[:, None] * T[u]).sum(axis=0))
        return np.array(out)
    return score


# ---------------------------------------------------------------- doc level
def _bag(ids: Sequence[np.ndarray], V: int) -> sp.csr_matrix:
    """Prompts x vocabulary: each token's share of its prompt (rows sum to 1)."""
    rows = np.repeat(np.arange(len(ids)), [x.size for x in ids])
    vals = np.concatenate([np.full(x.size, 1.0 / x.size) for x in ids])
    return sp.csr_matrix((vals, (rows, np.concatenate(ids))), shape=(len(ids), V))


def _mean_features(X: np.ndarray, ids: Sequence[np.ndarray]) -> np.ndarray:
    return np.asarray(_bag(ids, X.shape[0]) @ X)


def _doc(X: np.ndarray, groups: dict[str, list[np.ndarray]], lam: float,
         gamma: float | None):
    ids = [x for g in groups.values() for x in g]
    y = np.concatenate([np.full(len(g), j) for j, g in enumerate(groups.values())])
    F = _mean_features(X, ids)
    rff: Callable[[np.ndarray], np.ndarray] = lambda Z: Z  # noqa: E731
    if gamma is not None:
        scale = gamma * np.median(np.linalg.norm(F[:, :-1] - F[:, :-1].mean(0), axis=1))
        omega = np.random.default_rng(1).normal(size=(X.shape[1] - 1, 4096)) / scale
        phase = np.random.default_rng(2).uniform(0, 2 * np.pi, 4096)

        def rff(Z: np.ndarray) -> np.ndarray:
            out = np.sqrt(2 / 4096) * np.cos(Z[:, :-1] @ omega + phase)
            return np.hstack([out, np.ones((Z.shape[0], 1))])
        F = rff(F)
    weight = (len(y) / len(groups)) / np.bincount(y)[y]  # balanced domains
    A = F.T @ (F * weight[:, None])
    B = (F * weight[:, None]).T @ np.eye(len(groups))[y]
    W = np.linalg.solve(A + lam * np.trace(A) / A.shape[0] * np.eye(A.shape[0]), B)
    return lambda test: rff(_mean_features(X, test)) @ W


def _grid() -> dict[str, Callable]:
    grid: dict[str, Callable] = {}
    for mu in (1.0, 10.0):
        for nu in (1.0, 10.0, 100.0):
            grid[f"bigram μ={mu:g} nu={nu:g}"] = \
                lambda X, g, mu=mu, nu=nu: _bigram(X, g, mu, nu)
    for kind in ("raw", "1/len", "sublinear"):
        for mu in ((1.0, 10.0) if kind != "1/len" else (1e-3, 1e-2)):
            for pool in ("mean", "idf", "sub-idf"):
                grid[f"weights {kind} μ={mu:g} pool={pool}"] = \
                    lambda X, g, mu=mu, kind=kind, pool=pool: _weighted(X, g, mu, kind, pool)
    for gamma in (None, 1.0, 2.0):
        for lam in (1e-3, 1e-2, 1.0):
            grid[f"doc rff={gamma} λ={lam:g}"] = \
                lambda X, g, lam=lam, gamma=gamma: _doc(X, g, lam, gamma)
    return grid


def main() -> int:
    args = explore_args(__doc__, ["domains", "reasoning-xdata"])
    emb = load_embedder(args.embedder)
    X = _table(emb)
    print(f"embedder {emb.name}; balanced accuracy (%): held-out fit → test\n")
    for name, data in tokenized_splits(emb, args.settings, args.data):
        print(f"## {name}")
        rows = []
        for label, make in _grid().items():
            held = balanced(make(X, data.inner)(data.held), data.held_y)
            test = balanced(make(X, data.fit)(data.test), data.test_y)
            print(f"  {label:36s} {100 * held:5.1f} → {100 * test:5.1f}", flush=True)
            rows.append((label, held, test))
        for family, (label, held, test, _) in best_per_family(rows).items():
            print(f"  chosen {family}: {label} ({100 * held:.1f} → test {100 * test:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

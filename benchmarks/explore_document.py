"""Issue 6 exploration: document-level objectives (measured and dropped; EVALUATION.md).

The ``default`` router is a token-level ridge: every token occurrence is one training
sample. TF-IDF + LR beats it on ``domains`` with a discriminative, prompt-level objective;
this script measures the closed-form, additive ways of training at the prompt level that
still route with one per-token table (a linear model on mean token features routes like
the mean of per-token scores):

* ``doc λ``: ridge on one sample per fit prompt, features = mean x̃ of its tokens ⊕ the
  mean of its tokens' signed-hashed one-hot ids (4096 buckets: an exact bag of tokens
  would make the statistics V x V). The statistics Σ f fᵀ, Σ f yᵀ are sums over prompts,
  so add/remove stays exact; λ moves it from discriminative (small) towards the class
  means (large).
* ``window w λ``: the same on non-overlapping windows of w tokens (between token and
  prompt level).
* ``blend gamma``: the default's per-token probabilities + gamma x the ``doc`` (λ = 1e-2) per-token
  scores, one table again. Chosen on the random held-out fit part, and separately by
  *cluster* hold-out: each domain's fit prompts are cut into 5 k-means clusters of their
  mean embeddings and each cluster is held out in turn, a simulated shift.
* ``gate q``: route with ``doc`` when the prompt's mean embedding is within the
  q-quantile (on held-out fit prompts) of the pooled-covariance Mahalanobis distance to
  its nearest domain mean, with the default otherwise.

Settings are chosen on a held-out 20 % of each split's FIT data; test prompts are only
scored.

Run:  python benchmarks/explore_document.py [--embedder wordllama] [--settings domains ...]
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

import numpy as np
import scipy.sparse as sp
from _holdout import balanced, best_per_family, explore_args, flatten, holdout, tokenized_splits
from explore_combiners import _fit_stats, _pool
from explore_dropped import _bag, _mean_features, _table
from sklearn.cluster import KMeans

from ir3de import load_embedder
from ir3de.selector import vocab_scores
from ir3de.solver import solve_identity_auto

BUCKETS = 4096
Groups = dict[str, list[np.ndarray]]
Scorer = Callable[[Sequence[np.ndarray]], np.ndarray]


def _default_table(emb, groups: Groups) -> np.ndarray:
    """Per-token probabilities of the ``default`` preset (identity features, μ by LOO)."""
    stats = _fit_stats(emb, groups)
    W, U, _ = solve_identity_auto(stats, list(stats), emb, balance=True)
    return vocab_scores(emb, W, U).probs


def _windows(ids: Sequence[np.ndarray], w: int | None) -> list[np.ndarray]:
    if w is None:
        return list(ids)
    return [x[i:i + w] for x in ids for i in range(0, x.size, w)]


class _Doc:
    """Prompt- (or window-) level ridge on mean x̃ ⊕ mean hashed one-hot token ids."""

    def __init__(self, X: np.ndarray, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        V = X.shape[0]
        self.X = X
        self.bucket = rng.integers(0, BUCKETS, V)
        self.sign = rng.choice([-1.0, 1.0], V)
        self.hasher = sp.csr_matrix((self.sign, (np.arange(V), self.bucket)),
                                    shape=(V, BUCKETS))

    def _features(self, docs: Sequence[np.ndarray]) -> np.ndarray:
        bag = _bag(docs, self.X.shape[0])
        return np.hstack([np.asarray(bag @ self.X), (bag @ self.hasher).toarray()])

    def table(self, groups: Groups, lam: float, w: int | None = None) -> np.ndarray:
        """Per-token scores (V, D); each domain's statistics are summed in, balanced."""
        docs = [_windows(ids, w) for ids in groups.values()]
        total = sum(len(d) for d in docs)
        n = self.X.shape[1] + BUCKETS
        A, B = lam * np.eye(n), np.zeros((n, len(docs)))
        for j, d in enumerate(docs):
            weight = total / len(docs) / len(d)  # every domain weighs the same
            for start in range(0, len(d), 20000):  # bounded memory for short windows
                F = self._features(d[start:start + 20000])
                A += weight * (F.T @ F)
                B[:, j] += weight * F.sum(axis=0)
        Wt = np.linalg.solve(A, B)
        h = self.X.shape[1]
        return self.X @ Wt[:h] + Wt[h:][self.bucket] * self.sign[:, None]


def _gate(X: np.ndarray, groups: Groups, eps: float = 1e-3) -> Scorer:
    """Squared Mahalanobis distance of a prompt's mean embedding to the nearest domain mean."""
    feats = [_mean_features(X, ids)[:, :-1] for ids in groups.values()]
    means = np.stack([F.mean(axis=0) for F in feats])
    cov = sum((F - m).T @ (F - m) for F, m in zip(feats, means, strict=True))
    cov /= sum(len(F) for F in feats)
    cov += eps * np.trace(cov) / cov.shape[0] * np.eye(cov.shape[0])
    L = np.linalg.cholesky(np.linalg.inv(cov))
    M = means @ L

    def distance(ids: Sequence[np.ndarray]) -> np.ndarray:
        Z = _mean_features(X, ids)[:, :-1] @ L
        return ((Z[:, None, :] - M[None]) ** 2).sum(axis=2).min(axis=1)
    return distance


def _blends(emb, doc: _Doc, fit: Groups) -> tuple[dict[str, Scorer], np.ndarray, np.ndarray]:
    """The default and its blends with ``doc`` (λ = 1e-2), fitted on ``fit``; also returns
    both per-token tables."""
    base, discriminative = _default_table(emb, fit), doc.table(fit, 1e-2)
    out: dict[str, Scorer] = {"default (gamma=0)": lambda ids: _pool(ids, base)}
    for gamma in (0.03, 0.1, 0.3, 1.0):
        blended = base + gamma * discriminative
        out[f"blend gamma={gamma:g}"] = lambda ids, T=blended: _pool(ids, T)
    return out, base, discriminative


def _candidates(emb, X: np.ndarray, doc: _Doc, fit: Groups) -> dict[str, Scorer]:
    """Scorers of every variant, fitted on ``fit`` (the gate on 80 % of it, its thresholds
    are distance quantiles of the other 20 %)."""
    out, base, discriminative = _blends(emb, doc, fit)
    for lam in (1e-2, 1.0, 100.0, 1e4):
        T = discriminative if lam == 1e-2 else doc.table(fit, lam)
        out[f"doc λ={lam:g}"] = lambda ids, T=T: _pool(ids, T)
    for w in (8, 32):
        for lam in (1e-2, 1.0):
            T = doc.table(fit, lam, w)
            out[f"window w={w} λ={lam:g}"] = lambda ids, T=T: _pool(ids, T)
    sub, rest = holdout(fit, seed=1)
    distance = _gate(X, sub)
    near = distance(flatten(rest)[0])
    for q in (0.95, 0.99):
        threshold = np.quantile(near, q)

        def gated(ids, threshold=threshold):
            inside = distance(ids) <= threshold
            return np.where(inside[:, None], _pool(ids, discriminative), _pool(ids, base))
        out[f"gate q={q:g}"] = gated
    return out


def _cluster_folds(X: np.ndarray, groups: Groups, k: int = 5) -> list[tuple[Groups, list,
                                                                             np.ndarray]]:
    """Leave-one-cluster-out folds: k-means clusters of each domain's mean embeddings."""
    labels = {}
    for d, ids in groups.items():
        F = _mean_features(X, ids)[:, :-1]
        F /= np.linalg.norm(F, axis=1, keepdims=True)
        labels[d] = KMeans(k, n_init=3, random_state=0).fit_predict(F)
    folds = []
    for f in range(k):
        fit = {d: [x for x, c in zip(ids, labels[d], strict=True) if c != f]
               for d, ids in groups.items()}
        held = [(x, j) for j, (d, ids) in enumerate(groups.items())
                for x, c in zip(ids, labels[d], strict=True) if c == f]
        folds.append((fit, [x for x, _ in held], np.array([j for _, j in held])))
    return folds


def main() -> int:
    args = explore_args(__doc__, ["domains", "reasoning-xdata"])
    emb = load_embedder(args.embedder)
    X = _table(emb)
    doc = _Doc(X)
    print(f"embedder {emb.name}; balanced accuracy (%): held-out fit → test "
          "[leave-one-cluster-out for blend]\n")
    for name, data in tokenized_splits(emb, args.settings, args.data):
        held = _candidates(emb, X, doc, data.inner)
        test = _candidates(emb, X, doc, data.fit)
        clustered: dict[str, list[float]] = {}
        for fit, ids, gold in _cluster_folds(X, data.fit):
            for label, score in _blends(emb, doc, fit)[0].items():
                clustered.setdefault(label, []).append(balanced(score(ids), gold))
        print(f"## {name}")
        rows = []
        for label in held:
            h = balanced(held[label](data.held), data.held_y)
            t = balanced(test[label](data.test), data.test_y)
            extra = f" [{100 * np.mean(clustered[label]):5.1f}]" if label in clustered else ""
            print(f"  {label:24s} {100 * h:5.1f} → {100 * t:5.1f}{extra}", flush=True)
            rows.append((label, h, t))
        for family, (label, h, t, _) in best_per_family(rows).items():
            print(f"  chosen {family}: {label} ({100 * h:.1f} → test {100 * t:.1f})")
        pick = max(clustered, key=lambda lab: np.mean(clustered[lab]))
        test_of = {label: t for label, _, t in rows}
        print(f"  chosen by cluster hold-out among default/blend: {pick} "
              f"(test {100 * test_of[pick]:.1f})\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

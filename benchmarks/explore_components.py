"""Issue 6 exploration: a domain as several components, each a count table of its own.

The default gives every domain one binary-NB token table and one pair table. A domain that
is a union of unlike parts is then one spread-out distribution: the multilingual expert's
fit set is 31 languages of 120 prompts, so a Spanish pair it has seen once is worth less to
it than to a small domain that has never seen it (with ``n_d`` = 388 099 pair occurrences
against coding's 16 355 on ``reasoning-paper``), and the pairs no fit prompt holds lean
towards the small domain by the same factor (``explore_backoff.py``). The default's last
Reasoning misses are multilingual-ARC prompts lost that way. A mixture keeps the same
closed form: each domain's owner splits its fit prompts into components of about s
prompts (k-means, a private step before counting), counts each component as it counts a
domain today, and ships the components' statistics; the router solves one table column per
component, exactly as today, and scores a domain by the log-sum-exp over its components of
``log π_c + score_c`` (π_c: the component's share of the domain's prompts; domains keep a
uniform prior). Every column still depends on the summed integer statistics only, so
add/remove of an expert (all its components) and federation stay exact; routing is the
same linear look-up with more columns, then a max-like reduction per domain.

Families (first word of a label), each with s ∈ {250, 500, 1000, 2000} fit prompts per
component (K_d = max(1, round(N_d / s)), k-means with 3 restarts, seed 0) and the pair
table's Dirichlet mass m ∈ {1e4, 1e5}; α = 0.03 for the token table, as the default:

* ``emb``: components by k-means on each prompt's L2-normalised mean token embedding;
* ``bag``: components by k-means on each prompt's L2-normalised binary bag of token ids;
* ``pair m``: today's default (one component per domain), m ∈ {1e4, 1e5, 1e6}.

Decision rule: ``fresh_unseen.py``'s selection rule (held-out pick per family, strictly
above today's default on held-out, then higher on the mean of the two fresh checks), plus
one condition: a winner is adopted only if ``bench_route.py`` finds it within twice
today's routing time, the issue's cost bound. Fixed with this file committed before its
first run.

Run:  python benchmarks/explore_components.py [--embedder wordllama] [--settings ...]
      python benchmarks/explore_components.py --fresh "emb s=500 m=100000"   (step 3)
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Sequence

import fresh_unseen
import numpy as np
import scipy.sparse as sp
from explore_blend import PAIR_DIR
from explore_counts import _features
from explore_longer import _Grams
from explore_smoothing import EPS, Unigrams, _ngram_keys, _pairs
from sklearn.cluster import KMeans
from sklearn.preprocessing import normalize

from ir3de import load_embedder

DEFAULT = "pair m=100000"
SIZES = (250, 500, 1000, 2000)
MASSES = (1e4, 1e5)
Groups = dict[str, list[np.ndarray]]


def _split(ids: list[np.ndarray], features: np.ndarray | sp.csr_matrix,
           size: int) -> list[list[np.ndarray]]:
    """One domain's fit prompts in K = max(1, round(N / size)) k-means components."""
    k = max(1, round(len(ids) / size))
    if k == 1:
        return [ids]
    labels = KMeans(k, n_init=3, random_state=0).fit_predict(features)
    return [[x for x, c in zip(ids, labels, strict=True) if c == j] for j in range(k)
            if np.any(labels == j)]


def _scores(V: int, comps: dict[str, list[list[np.ndarray]]], Mb: sp.csr_matrix,
            ids: Sequence[np.ndarray], masses: Sequence[float]) -> dict[float, np.ndarray]:
    """Per mass m: each prompt's mixture score per domain (P, D), the components scored as
    the default scores a domain (token table + pooled-Dirichlet pair table)."""
    flat = {f"{d}#{j}": c for d, cs in comps.items() for j, c in enumerate(cs)}
    owner = np.array([list(comps).index(name.rsplit("#", 1)[0]) for name in flat])
    sizes = np.array([len(c) for c in flat.values()], float)
    prior = np.log(sizes / np.bincount(owner, weights=sizes)[owner])  # log π_c in its domain
    uni = Mb @ Unigrams(flat, "bin", V).additive(0.03)
    grams = _Grams(flat, lambda x: _ngram_keys(x, V, 2))
    M = grams.matrix(ids)
    q = grams.C.sum(axis=1) + EPS
    q = (q / q.sum())[:, None]
    out = {}
    for m in masses:
        s = uni + M @ np.log((grams.C + m * q) / (grams.C.sum(axis=0) + m)) + prior
        per_domain = np.full((s.shape[0], len(comps)), -np.inf)
        for j in range(len(comps)):
            cols = s[:, owner == j]
            top = cols.max(axis=1, keepdims=True)
            per_domain[:, j] = (top + np.log(np.exp(cols - top).sum(axis=1, keepdims=True)))[:, 0]
        out[m] = per_domain
    return out


def _variants_for(emb):
    """``_variants(V, fit, ids)`` for the scripts' shared loop, with the embedder at hand
    (the ``emb`` components need token embeddings)."""

    def variants(V: int, fit: Groups, ids: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        Mb = _features(ids, "bin", V, bigram=False)
        one = {d: [xs] for d, xs in fit.items()}
        out = {f"pair m={m:g}": s for m, s in _scores(V, one, Mb, ids, (1e4, 1e5, 1e6)).items()}
        # today's default, through explore_smoothing's scoring (as explore_longer checks it)
        assert np.allclose(out[DEFAULT], _pairs(V, fit, ids, {"bin": Unigrams(fit, "bin", V)},
                                                Mb, lambda f: f == "pair-dir")[PAIR_DIR])
        features = {
            "emb": {d: normalize(np.stack([emb.rows(x).mean(axis=0) for x in xs]))
                    for d, xs in fit.items()},
            "bag": {d: normalize(_features(xs, "bin", V, bigram=False)) for d, xs in fit.items()},
        }
        for family, size in itertools.product(features, SIZES):
            comps = {d: _split(xs, features[family][d], size) for d, xs in fit.items()}
            for m, s in _scores(V, comps, Mb, ids, MASSES).items():
                out[f"{family} s={size} m={m:g}"] = s
        return out

    return variants


def main() -> int:
    # the embedder is needed before the shared command line runs, so peek at --embedder
    name = sys.argv[sys.argv.index("--embedder") + 1] if "--embedder" in sys.argv else None
    emb = load_embedder(name or "wordllama")
    return fresh_unseen.rule_main(__doc__, _variants_for(emb), DEFAULT)


if __name__ == "__main__":
    sys.exit(main())

"""Issue 6 exploration: longer context on top of the default, smoothed like its pairs.

The default adds to the unigram table a table of exact (previous id, id) pairs smoothed
towards the pooled pair distribution (Dirichlet, m = 1e5). ``explore_smoothing`` measured
triples only with additive smoothing (``tri``: `domains` 97.8, `reasoning-xdata` 98.6).
This script measures the same Dirichlet smoothing for two longer contexts, each as one more
additive table of per-domain document frequencies (exact keys, integer counts, so it would
stay additive and exact under add / remove like the pairs):

* ``tri-dir w m``: + w x exact (id[i-2], id[i-1], id[i]) triples, Dirichlet towards the
  pooled triple distribution with mass m;
* ``skip-dir w m``: + w x exact skip pairs (id[i-2], id[i]), smoothed the same way (word
  order evidence that survives one inserted token);

w ∈ {0.25, 0.5, 1}, m ∈ {1e4, 1e5, 1e6}; BOS ids pad the start. Same rule as every
exploration: one configuration per family by the mean held-out-fit accuracy over the five
splits (``explore_smoothing._one_configuration``), test prompts only scored.

Run:  python benchmarks/explore_longer.py [--embedder wordllama] [--settings domains ...]
"""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np
import scipy.sparse as sp
from _holdout import explore_args, report_split, tokenized_splits
from explore_blend import PAIR_DIR
from explore_counts import _features
from explore_smoothing import EPS, SETTINGS, Unigrams, _ngram_keys, _one_configuration, _pairs

from ir3de import load_embedder

WEIGHTS = (0.25, 0.5, 1.0)
MASSES = (1e4, 1e5, 1e6)
Groups = dict[str, list[np.ndarray]]


class _Grams:
    """Binary per-domain document frequencies ``C`` (K, D) of exact keys (``keys_of`` maps a
    prompt's ids to one key per position) over the fit keys plus one shared OOV slot."""

    def __init__(self, groups: Groups, keys_of: Callable[[np.ndarray], np.ndarray]) -> None:
        self.keys_of = keys_of
        per_domain = [np.concatenate([np.unique(keys_of(x)) for x in ids])
                      for ids in groups.values()]
        self.vocab = np.unique(np.concatenate(per_domain))
        self.K = self.vocab.size + 1
        self.C = np.stack([np.bincount(self.index(k), minlength=self.K) for k in per_domain],
                          axis=1).astype(float)

    def index(self, keys: np.ndarray) -> np.ndarray:
        pos = np.minimum(np.searchsorted(self.vocab, keys), self.vocab.size - 1)
        return np.where(self.vocab[pos] == keys, pos, self.K - 1)

    def matrix(self, ids: Sequence[np.ndarray]) -> sp.csr_matrix:
        """Prompts x keys, binary (every unseen key of a prompt lands on the OOV slot once)."""
        cols = [np.unique(self.index(np.unique(self.keys_of(x)))) for x in ids]
        rows = [np.full(c.size, i) for i, c in enumerate(cols)]
        return sp.csr_matrix((np.ones(sum(c.size for c in cols)),
                              (np.concatenate(rows), np.concatenate(cols))),
                             shape=(len(ids), self.K))

    def dirichlet(self, ids: Sequence[np.ndarray]) -> dict[float, np.ndarray]:
        """Per mass m: each prompt's summed Dirichlet log-likelihoods of its distinct keys,
        smoothed towards the pooled key distribution (as ``solver.solve_pairs``)."""
        q = self.C.sum(axis=1) + EPS
        q /= q.sum()
        M = self.matrix(ids)
        return {m: M @ np.log((self.C + m * q[:, None]) / (self.C.sum(axis=0) + m))
                for m in MASSES}


def _variants(V: int, fit: Groups, ids: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    Mb = _features(ids, "bin", V, bigram=False)
    base = _pairs(V, fit, ids, {"bin": Unigrams(fit, "bin", V)}, Mb,
                  lambda family: family == "pair-dir")[PAIR_DIR]
    out = {PAIR_DIR: base}
    base_ = V + 1

    def triples(x: np.ndarray) -> np.ndarray:
        return _ngram_keys(x, V, 3)

    def skips(x: np.ndarray) -> np.ndarray:  # the triple key without its middle id
        k = _ngram_keys(x, V, 3)
        return (k // base_**2) * base_ + k % base_

    for family, keys_of in (("tri-dir", triples), ("skip-dir", skips)):
        tables = _Grams(fit, keys_of).dirichlet(ids)
        for w, m in itertools.product(WEIGHTS, MASSES):
            out[f"{family} w={w:g} m={m:g}"] = base + w * tables[m]
    return out


def _precise(per_split: dict[str, list[tuple[str, float, float]]]) -> None:
    """Every configuration's mean held-out and per-split test accuracy with two decimals
    (the bars are a few hundredths apart), best mean held-out first."""
    names = list(per_split)
    rows = {label: [] for label, _, _ in per_split[names[0]]}
    for name in names:
        for label, h, t in per_split[name]:
            rows[label].append((h, t))
    print("\n# two decimals: mean held-out → test per split")
    for label, ht in sorted(rows.items(), key=lambda kv: -np.mean([h for h, _ in kv[1]])):
        print(f"  {label:32s} {100 * np.mean([h for h, _ in ht]):6.2f} → "
              + " ".join(f"{100 * t:6.2f}" for _, t in ht))


def main() -> int:
    start = time.perf_counter()
    args = explore_args(__doc__, SETTINGS)
    emb = load_embedder(args.embedder)
    print(f"embedder {emb.name}; balanced accuracy (%): held-out fit → test\n", flush=True)
    per_split = {}
    for name, data in tokenized_splits(emb, args.settings, args.data):
        per_split[name] = report_split(name, _variants(emb.vocab_size, data.inner, data.held),
                                       _variants(emb.vocab_size, data.fit, data.test), data)
        print(f"  [{time.perf_counter() - start:.0f} s]\n", flush=True)
    if per_split:
        _one_configuration(per_split)
        _precise(per_split)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Issue 6 exploration: unseen keys and longer contexts in the default's count tables.

The default scores a prompt by a binary NB unigram table (Laplace α = 0.03) plus a table of
exact (previous id, id) pairs smoothed towards the pooled pair distribution (Dirichlet,
m = 1e5); every distinct pair of the prompt that no fit prompt contains adds one shared
OOV row, ``log(m q_oov / (n_d + m))``, and every token no fit prompt contains adds
``log(α / (n_d + αV))``. Both are larger for domains with fewer fit prompts / pairs
(``n_d``), the Bayesian reading of "a small domain has seen less", so a prompt made mostly
of unseen keys leans towards the small domains whatever it says. This script measures:

* ``oov``: what an unseen key adds: ``each`` (today: the OOV row once per distinct unseen
  key), ``once`` (the OOV row once per prompt if it has any unseen key) or ``none`` (nothing:
  an unseen key is evidence for no domain); ``uni``: the same for tokens no fit prompt
  contains (``each`` today, or ``none``);
* longer contexts as one more exact, additive table of per-domain document frequencies,
  Dirichlet-smoothed towards its pooled distribution like the pairs (``explore_smoothing``
  tried triples only with additive smoothing): ``tri`` triples (id[i-2], id[i-1], id[i]),
  ``skip`` skip pairs (id[i-2], id[i]), weight w ∈ {0.25, 0.5, 1}, mass m ∈ {1e4, 1e5, 1e6},
  with the same ``oov`` treatment as the pairs.

Families (a label's first word): ``pair uni oov m`` (m ∈ {1e4, 1e5, 1e6}; ``uni=each
oov=each m=1e5`` is today's default, reproduced to the digit), ``tri`` and ``skip`` (pairs
at m = 1e5). Same rule as every exploration: one configuration per family by the mean
held-out-fit accuracy over the five splits (``explore_smoothing._one_configuration``), test
prompts only scored; then every configuration with two decimals.

``--by-source`` holds out whole sub-sources of the fit data instead (the rule that
``explore_tfidf.py --by-source`` describes); ``--fresh LABEL`` judges one configuration
against the default on ``fresh_unseen.py``'s fresh checks (step 3 of that rule).

Run:  python benchmarks/explore_longer.py [--embedder wordllama] [--settings domains ...]
                                          [--by-source] [--fresh LABEL]
"""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np
import scipy.sparse as sp
from _holdout import explore_args, report_splits
from explore_blend import PAIR_DIR
from explore_counts import _features
from explore_smoothing import EPS, SETTINGS, Unigrams, _ngram_keys, _one_configuration, _pairs

from ir3de import load_embedder

WEIGHTS = (0.25, 0.5, 1.0)
MASSES = (1e4, 1e5, 1e6)
OOV = ("each", "once", "none")
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
        """(P, K) binary indicators of each prompt's distinct keys; the OOV column holds the
        number of distinct unseen keys, so ``M @ T`` adds the OOV row once per such key."""
        cols = [self.index(np.unique(self.keys_of(x))) for x in ids]
        rows = np.concatenate([np.full(c.size, i) for i, c in enumerate(cols)])
        M = sp.csr_matrix((np.ones(rows.size), (rows, np.concatenate(cols))),
                          shape=(len(ids), self.K))
        M.sum_duplicates()
        return M

    def table(self, m: float) -> np.ndarray:
        """(K, D) Dirichlet log-likelihoods of the keys, mass ``m`` towards the pooled key
        distribution (as ``solver.solve_pairs``)."""
        q = self.C.sum(axis=1) + EPS
        return np.log((self.C + m * (q / q.sum())[:, None]) / (self.C.sum(axis=0) + m))

    def scores(self, ids: Sequence[np.ndarray], masses: Sequence[float] = MASSES
               ) -> dict[tuple[str, float], np.ndarray]:
        """Per (oov, m), m in ``masses``: each prompt's summed :meth:`table` log-likelihoods
        of its distinct keys."""
        M = self.matrix(ids)
        unseen = M[:, -1].toarray()
        out = {}
        for m in masses:
            T = self.table(m)
            each = M @ T
            seen = each - unseen * T[-1]
            out["each", m] = each
            out["once", m] = seen + (unseen > 0) * T[-1]
            out["none", m] = seen
        return out


def _variants(V: int, fit: Groups, ids: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    Mb = _features(ids, "bin", V, bigram=False)
    unigrams = Unigrams(fit, "bin", V)
    L = unigrams.additive(0.03)
    L_none = np.where(unigrams.C.sum(axis=1, keepdims=True) > 0, L, 0.0)
    uni = {"each": Mb @ L, "none": Mb @ L_none}
    reference = _pairs(V, fit, ids, {"bin": unigrams}, Mb,
                       lambda family: family == "pair-dir")[PAIR_DIR]
    base = V + 1

    def skips(x: np.ndarray) -> np.ndarray:  # the triple key without its middle id
        k = _ngram_keys(x, V, 3)
        return (k // base**2) * base + k % base

    pairs = _Grams(fit, lambda x: _ngram_keys(x, V, 2)).scores(ids)
    out = {}
    for u, oov, m in itertools.product(uni, OOV, MASSES):
        out[f"pair uni={u} oov={oov} m={m:g}"] = uni[u] + pairs[oov, m]
    # today's default, through _pairs: the check that this script scores it the same way
    assert np.allclose(out["pair uni=each oov=each m=100000"], reference)
    for family, keys_of in (("tri", lambda x: _ngram_keys(x, V, 3)), ("skip", skips)):
        longer = _Grams(fit, keys_of).scores(ids)
        for u, oov, w, m in itertools.product(uni, OOV, WEIGHTS, MASSES):
            out[f"{family} uni={u} oov={oov} w={w:g} m={m:g}"] = (
                uni[u] + pairs[oov, 1e5] + w * longer[oov, m])
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


def score_all(emb, settings: Sequence[str], data_dir: str, variants,
              start: float, by_source: bool = False) -> None:
    """Score every configuration of ``variants(V, fit, ids)`` on the splits of
    ``settings`` (held-out fit → test; ``by_source``: whole sub-sources held out), then
    print the one pick per family and every configuration with two decimals: the body of
    this script and of the scripts that run through ``fresh_unseen.rule_main``."""
    held = "held-out sub-sources" if by_source else "held-out fit"
    print(f"embedder {emb.name}; balanced accuracy (%): {held} → test\n", flush=True)
    per_split = report_splits(emb, settings, data_dir,
                              lambda fit, ids: variants(emb.vocab_size, fit, ids), start,
                              by_source)
    if per_split:
        _one_configuration(per_split)
        _precise(per_split)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


def main() -> int:
    start = time.perf_counter()
    args = explore_args(__doc__, SETTINGS, by_source=True, fresh=True)
    emb = load_embedder(args.embedder)
    if args.fresh is not None:
        from fresh_unseen import DEFAULT, judge  # (fresh_unseen imports this module)

        return judge(emb, args.data, _variants, DEFAULT, args.fresh)
    score_all(emb, args.settings, args.data, _variants, start, args.by_source)
    return 0


if __name__ == "__main__":
    sys.exit(main())

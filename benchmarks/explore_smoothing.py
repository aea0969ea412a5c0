"""Smoothing, filtering and n-gram variants of the count-based (Naive-Bayes) routers.

``explore_counts`` settled on the additive-smoothing NB table; this script measures what else
can be done with the same per-domain counts. Every variant scores a prompt as
``S[d] = Σ_features f(tf) · L[feature, d]`` (+ a per-domain bias for ``bern``, ``len``,
``prior`` and ``trilen``), where L depends only on per-domain sums of f(tf) over fit prompts
(and per-domain document frequencies / prompt counts), so it stays linear in one-hot token
(or exact token n-gram) features and add/remove stays exact.

Notation: C[t, d] = Σ_prompts f(tf_t) over domain d's fit prompts, n[d] = Σ_t C[t, d],
V = vocabulary size, DF[t, d] = number of domain-d prompts holding t, N[d] = number of
domain-d prompts, |x| = number of distinct tokens of a prompt x, q(t) = background
distribution: ``pool`` (Σ_d C[t, d] + ε, normalised) or ``bal`` (mean_d C[t, d] / n[d] + ε').
Families (tf = raw counts, log(1 + tf) or binary):

* ``nb tf α``: log((C + α)/(n + αV)), the reference (explore_counts without its centring).
* ``bigram tf α``: explore_counts' hashed-pair NB, the reference for the n-gram families.
* ``dir tf bg m``: Dirichlet prior, log((C + m q)/(n + m)).
* ``dira α m``: Dirichlet + additive, log((C + α + m q)/(n + αV + m)).
* ``jm tf λ``: Jelinek-Mercer, log((1 - λ) C/n + λ q).
* ``abs tf δ``: absolute discounting, log(max(C - δ, 0)/n + δ u[d]/n · q) with
  u[d] = number of tokens with C[t, d] > 0.
* ``dff k α``: binary NB on the tokens with a total document frequency ≥ k (others ignored).
* ``bern α`` / ``bern m``: Bernoulli NB, p = (DF + α)/(N + 2α) or (DF + m q_df)/(N + m),
  S = Σ_{t∈x} log(p/(1 - p)) + Σ_t log(1 - p).
* ``len α ω``: binary NB + ω (|x| log λ_d - λ_d), a Poisson model of |x| (λ_d = mean |x| of
  domain d's fit prompts).
* ``dnorm tf p α``: NB where each fit prompt's f(tf) is divided by |x|^p (long prompts weigh
  no more than short ones); α is scaled by the mean prompt weight so it stays comparable.
* ``aprop ∝base α``: binary NB with α proportional to the domain's size (n or N).
* ``prior α β``: binary NB + β log(N[d]/mean N), a (tempered) class prior.
* ``mi k α``: binary NB on the k tokens with the highest mutual information between token
  presence and domain (others ignored).
* ``tri α w2 w3 αp``: binary NB α + w2 · exact-bigram NB + w3 · exact-trigram NB, both
  additively smoothed with αp over their fit n-gram vocabulary + one OOV slot.
* ``trilen α w2 w3 αp ω``: ``tri`` (w2 = 1) + the ``len`` Poisson term.
* ``clip α c``: binary NB whose token-centred table is clipped to [-c, c] (robust NB).
* ``wnb α gamma``: binary NB, each token's row weighted by (1 - H/log D)^gamma, H the
  entropy of its domain posterior (peaked tokens count more).
* ``cnb α wn``: complement NB, -log((C̄ + α)/(n̄ + αV)) with C̄ = counts of all other
  domains, optionally weight-normalised (Rennie et al., 2003).
* ``pair-add`` / ``pair-dir`` / ``pair-jm`` ``α w s``: binary NB α + w · binary exact-pair
  table ((prev, id) pairs, a BOS id before the first token, unseen pairs in one OOV slot),
  smoothed additively (αp), Dirichlet (m, pooled background) or Jelinek-Mercer (λ).
* ``bilm tf αu m``: per-domain conditional bigram LM interpolated with the domain's
  unigram: p_d(w|v) = (C2[(v, w), d] + m p_d(w)) / (C2[v·, d] + m) with
  p_d(w) = (C + αu)/(n + αu V); S = Σ_pairs f(tf) log p_d(w|v).

Settings are chosen on a held-out 20 % of each split's FIT data (first in grid order on
ties); test prompts are only scored. The last section picks, per family, the one setting
with the highest MEAN held-out accuracy over all the splits run (as a preset would be
chosen) and shows its test accuracy on every split.

Run:  python benchmarks/explore_smoothing.py [--embedder wordllama] [--settings domains ...]
      [--only FAMILY ...]
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Callable, Sequence

import numpy as np
import scipy.sparse as sp
from _holdout import explore_args, report_split, tokenized_splits
from explore_counts import PAIR_BUCKETS, _Counts, _features

from ir3de import load_embedder

SETTINGS = ["reasoning-paper", "reasoning-2fold", "reasoning-xdata", "domains"]
FAMILIES = ["nb", "bigram", "dir", "dira", "jm", "abs", "dff", "bern", "len", "dnorm",
            "aprop", "prior", "mi", "tri", "trilen", "clip", "wnb", "cnb",
            "pair-add", "pair-dir", "pair-jm", "bilm"]
EPS = 1e-2  # pseudo-count of the background distributions (keeps q > 0 for unseen tokens)
Groups = dict[str, list[np.ndarray]]
Rows = list[tuple[str, float, float]]


def _f(counts: np.ndarray, tf: str) -> np.ndarray:
    """f(tf) of raw occurrence counts."""
    counts = counts.astype(float)
    if tf == "log":
        return np.log1p(counts)
    if tf == "bin":
        return np.ones_like(counts)
    return counts


def _poisson(lam: np.ndarray, ell: np.ndarray) -> np.ndarray:
    """log Poisson(|x|; λ_d) per prompt and domain, without the log |x|! term (the same for
    every domain)."""
    return ell[:, None] * np.log(lam) - lam


# ----------------------------------------------------------------------------- unigrams
class Unigrams:
    """Per-domain token statistics of one fit set for one tf: C, DF, N, n (see the module
    docstring), and the smoothed log-likelihood tables built from them."""

    def __init__(self, groups: Groups, tf: str, V: int) -> None:
        mats = [_features(ids, tf, V, bigram=False) for ids in groups.values()]
        self.C = np.stack([np.asarray(M.sum(axis=0)).ravel() for M in mats], axis=1)
        self.DF = np.stack([np.asarray((M > 0).sum(axis=0)).ravel() for M in mats], axis=1)
        self.N = np.array([M.shape[0] for M in mats], float)
        self.n = self.C.sum(axis=0)
        self.V = V

    def background(self, bg: str = "pool") -> np.ndarray:
        """q(t): pooled counts, or the mean of the per-domain distributions (``bal``, so a
        big domain does not dominate); ε keeps every token's mass positive."""
        if bg == "pool":
            b = self.C.sum(axis=1) + EPS
        else:
            b = (self.C / self.n).mean(axis=1) + EPS / self.n.sum()
        return b / b.sum()

    def additive(self, a: float) -> np.ndarray:
        return np.log((self.C + a) / (self.n + a * self.V))

    def dirichlet(self, m: float, bg: str = "pool") -> np.ndarray:
        return np.log((self.C + m * self.background(bg)[:, None]) / (self.n + m))

    def dirichlet_additive(self, a: float, m: float) -> np.ndarray:
        return np.log((self.C + a + m * self.background()[:, None])
                      / (self.n + a * self.V + m))

    def jelinek_mercer(self, lam: float, bg: str = "pool") -> np.ndarray:
        return np.log((1 - lam) * self.C / self.n + lam * self.background(bg)[:, None])

    def absolute(self, delta: float) -> np.ndarray:
        # the mass δ taken from every seen token goes to the background
        u = (self.C > 0).sum(axis=0)
        return np.log(np.maximum(self.C - delta, 0) / self.n
                      + delta * u / self.n * self.background()[:, None])

    def df_filtered(self, k: int, a: float) -> np.ndarray:
        """Additive table over the tokens in ≥ k fit prompts; the others score 0."""
        keep = self.DF.sum(axis=1) >= k
        C = self.C * keep[:, None]
        n = C.sum(axis=0)
        L = np.log((C + a) / (n + a * keep.sum()))
        L[~keep] = 0.0
        return L

    def bernoulli(self, a: float | None = None,
                  m: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(log-odds table, per-domain bias) of Bernoulli NB: additive α, or a Dirichlet
        prior m towards the pooled document frequency."""
        if m is None:
            assert a is not None
            p = (self.DF + a) / (self.N + 2 * a)
        else:
            qd = (self.DF.sum(axis=1) + EPS) / (self.N.sum() + 2 * EPS)
            p = (self.DF + m * qd[:, None]) / (self.N + m)
        return np.log(p) - np.log1p(-p), np.log1p(-p).sum(axis=0)

    def mean_length(self) -> np.ndarray:
        """λ_d: the mean number of distinct tokens of a fit prompt (needs tf = bin)."""
        return self.DF.sum(axis=0) / self.N


# ----------------------------------------------------------------------------- n-grams
def _ngram_keys(x: np.ndarray, V: int, order: int) -> np.ndarray:
    """One int64 key per position: the n-gram ending there, base V + 1 digits, with the id
    V (BOS) padding the start so every token has a full context."""
    x = x.astype(np.int64)
    if x.size == 0:
        return x
    pad = np.concatenate([np.full(order - 1, V, np.int64), x])
    key = np.zeros(x.size, np.int64)
    for j in range(order):
        key = key * (V + 1) + pad[j:j + x.size]
    return key


class NGrams:
    """Exact n-gram counts of one fit set (no hashing, unlike explore_counts' bigrams): the
    n-gram vocabulary is the fit n-grams plus one OOV slot (the last index) that every
    unseen n-gram shares."""

    def __init__(self, groups: Groups, V: int, order: int) -> None:
        self.V = V
        self.order = order
        self.per_domain = [[np.unique(_ngram_keys(x, V, order), return_counts=True)
                            for x in ids] for ids in groups.values()]
        self.vocab = np.unique(np.concatenate(
            [k for dom in self.per_domain for k, _ in dom]))
        self.K = self.vocab.size + 1
        self._counts: dict[str, np.ndarray] = {}

    def index(self, keys: np.ndarray) -> np.ndarray:
        pos = np.minimum(np.searchsorted(self.vocab, keys), self.vocab.size - 1)
        return np.where(self.vocab[pos] == keys, pos, self.K - 1)

    def counts(self, tf: str) -> np.ndarray:
        """(K, D) per-domain sums of f(tf) (cached per tf)."""
        if tf not in self._counts:
            C = np.zeros((self.K, len(self.per_domain)))
            for j, dom in enumerate(self.per_domain):
                keys = np.concatenate([k for k, _ in dom])
                vals = np.concatenate([_f(c, tf) for _, c in dom])
                C[:, j] = np.bincount(self.index(keys), weights=vals, minlength=self.K)
            self._counts[tf] = C
        return self._counts[tf]

    def rows(self, ids: Sequence[np.ndarray], tf: str) -> tuple[np.ndarray, ...]:
        """Distinct n-grams of each prompt: (prompt row, n-gram index, context key, last id,
        f(tf)); the context is the previous id for bigrams."""
        P, idx, ctx, last, F = [], [], [], [], []
        for i, x in enumerate(ids):
            keys, cnt = np.unique(_ngram_keys(x, self.V, self.order), return_counts=True)
            P.append(np.full(keys.size, i))
            idx.append(self.index(keys))
            ctx.append(keys // (self.V + 1))
            last.append(keys % (self.V + 1))
            F.append(_f(cnt, tf))
        return tuple(np.concatenate(a) for a in (P, idx, ctx, last, F))

    def matrix(self, ids: Sequence[np.ndarray], tf: str) -> sp.csr_matrix:
        """Prompts x n-gram vocabulary matrix of f(tf)."""
        P, idx, _, _, F = self.rows(ids, tf)
        M = sp.csr_matrix((F, (P, idx)), shape=(len(ids), self.K))
        M.sum_duplicates()  # unseen n-grams merge into the OOV column
        return M


# ----------------------------------------------------------------------------- variants
def _variants(V: int, fit: Groups, ids: Sequence[np.ndarray],
              want: Callable[[str], bool]) -> dict[str, np.ndarray]:
    """Scores (prompts x domains) of every variant of the wanted families, fitted on
    ``fit``, for the prompts ``ids``; labels start with the family name, in grid order."""
    out: dict[str, np.ndarray] = {}
    uni = {tf: Unigrams(fit, tf, V) for tf in ("raw", "log", "bin")}
    M = {tf: _features(ids, tf, V, bigram=False) for tf in ("raw", "log", "bin")}
    ub, Mb = uni["bin"], M["bin"]
    ell = np.asarray(Mb.sum(axis=1)).ravel()  # distinct tokens per prompt

    if want("nb"):
        for tf in ("log", "bin"):
            for a in (0.01, 0.03, 0.1, 0.3, 1.0):
                out[f"nb {tf} a={a:g}"] = M[tf] @ uni[tf].additive(a)
    if want("bigram"):
        n = V + PAIR_BUCKETS
        counts = _Counts(fit, "bin", n, bigram=True)
        Mh = _features(ids, "bin", n, bigram=True)
        for a in (0.03, 0.1):
            out[f"bigram bin a={a:g}"] = Mh @ counts.table(a)
        del counts, Mh
    if want("dir"):
        for tf, bg, m in itertools.product(("bin", "log"), ("pool", "bal"),
                                           (10, 100, 1e3, 1e4, 1e5, 1e6)):
            out[f"dir {tf} {bg} m={m:g}"] = M[tf] @ uni[tf].dirichlet(m, bg)
    if want("dira"):
        for a, m in itertools.product((0.01, 0.03, 0.1), (100, 1e3, 1e4, 1e5)):
            out[f"dira bin a={a:g} m={m:g}"] = Mb @ ub.dirichlet_additive(a, m)
    if want("jm"):
        for tf, lam in itertools.product(("bin", "log"),
                                         (0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 0.99)):
            out[f"jm {tf} λ={lam:g}"] = M[tf] @ uni[tf].jelinek_mercer(lam)
    if want("abs"):
        # with tf = log a token seen once in a domain has C = log 2 ≈ 0.69: δ stays below it
        for tf, deltas in (("bin", (0.1, 0.3, 0.5, 0.7, 0.9)), ("log", (0.1, 0.3, 0.5, 0.65))):
            for d in deltas:
                out[f"abs {tf} δ={d:g}"] = M[tf] @ uni[tf].absolute(d)
    if want("dff"):
        for k, a in itertools.product((1, 2, 3, 5), (0.03, 0.1, 0.3)):
            out[f"dff bin k={k} a={a:g}"] = Mb @ ub.df_filtered(k, a)
    if want("bern"):
        for a in (0.01, 0.1, 1.0):
            L, b = ub.bernoulli(a=a)
            out[f"bern a={a:g}"] = Mb @ L + b
        for m in (1, 10, 100, 1000):
            L, b = ub.bernoulli(m=m)
            out[f"bern m={m:g}"] = Mb @ L + b
    if want("len"):
        pois = _poisson(ub.mean_length(), ell)
        for a, w in itertools.product((0.03, 0.1, 0.3), (0.1, 0.3, 1.0)):
            out[f"len bin a={a:g} ω={w:g}"] = Mb @ ub.additive(a) + w * pois
    if want("dnorm"):
        for tf, p in itertools.product(("bin", "log"), (0.5, 1.0)):
            Cs, weights = [], []
            for ids_d in fit.values():
                Md = _features(ids_d, tf, V, bigram=False)
                ld = np.asarray((Md > 0).sum(axis=1)).ravel().astype(float)
                w = 1.0 / np.maximum(ld, 1) ** p
                Cs.append(np.asarray((sp.diags(w) @ Md).sum(axis=0)).ravel())
                weights.append(w)
            C = np.stack(Cs, axis=1)
            # the weights shrink every count, so α relative to the mean prompt weight
            scale = np.concatenate(weights).mean()
            for ar in (0.01, 0.03, 0.1, 0.3):
                a = ar * scale
                L = np.log((C + a) / (C.sum(axis=0) + a * V))
                out[f"dnorm {tf} p={p:g} a={ar:g}"] = M[tf] @ L
    if want("aprop"):
        for base, ar in itertools.product(("n", "N"), (0.01, 0.03, 0.1, 0.3)):
            size = ub.n if base == "n" else ub.N
            a = ar * size / size.mean()  # per-domain α, the grid value on average
            out[f"aprop bin ∝{base} a={ar:g}"] = Mb @ np.log((ub.C + a) / (ub.n + a * V))
    if want("prior"):
        for a, beta in itertools.product((0.03, 0.1), (-1.0, -0.5, -0.25, 0.25, 0.5, 1.0)):
            out[f"prior bin a={a:g} β={beta:g}"] = (Mb @ ub.additive(a)
                                                    + beta * np.log(ub.N / ub.N.mean()))
    if want("mi"):
        out.update(_mutual_information(ub, Mb, V))
    if want("tri") or want("trilen"):
        out.update(_trigrams(V, fit, ids, ub, Mb, ell, want))
    if want("clip"):
        for a, c in itertools.product((0.03, 0.1, 0.3), (0.5, 1.0, 2.0, 3.0, 5.0)):
            L = ub.additive(a)
            L = np.clip(L - L.mean(axis=1, keepdims=True), -c, c)
            out[f"clip bin a={a:g} c={c:g}"] = Mb @ L
    if want("wnb"):
        for a, g in itertools.product((0.03, 0.1, 0.3), (0.5, 1.0, 2.0)):
            L = ub.additive(a)
            P = np.exp(L - L.max(axis=1, keepdims=True))
            P /= P.sum(axis=1, keepdims=True)  # the token's domain posterior
            H = -(P * np.log(np.maximum(P, 1e-300))).sum(axis=1)
            w = (1 - H / np.log(P.shape[1])) ** g
            # gamma is written as a Greek letter in the label, like the other parameters
            out[f"wnb bin a={a:g} γ={g:g}"] = Mb @ (L * w[:, None])  # noqa: RUF001
    if want("cnb"):
        for a, wn in itertools.product((0.03, 0.1, 0.3, 1.0), (0, 1)):
            Cc = ub.C.sum(axis=1, keepdims=True) - ub.C  # complement counts
            L = -np.log((Cc + a) / (Cc.sum(axis=0) + a * V))
            if wn:
                L = L / np.abs(L).sum(axis=0)
            out[f"cnb bin a={a:g} wn={wn}"] = Mb @ L
    if any(want(f) for f in ("pair-add", "pair-dir", "pair-jm", "bilm")):
        out.update(_pairs(V, fit, ids, uni, Mb, want))
    return out


def _mutual_information(ub: Unigrams, Mb: sp.csr_matrix, V: int) -> dict[str, np.ndarray]:
    """``mi``: binary NB restricted to the k tokens of highest (document-level) mutual
    information between token presence and domain."""
    Ntot = ub.N.sum()
    pd = ub.N / Ntot
    pt = (ub.DF.sum(axis=1) + 1e-12) / Ntot
    with np.errstate(divide="ignore", invalid="ignore"):
        p1 = ub.DF / Ntot  # P(token present, domain)
        p0 = (ub.N - ub.DF) / Ntot  # P(token absent, domain)
        t1 = np.where(p1 > 0, p1 * np.log(p1 / (pt[:, None] * pd)), 0.0)
        t0 = np.where(p0 > 0, p0 * np.log(p0 / ((1 - pt)[:, None] * pd)), 0.0)
    order = np.argsort(-(t1 + t0).sum(axis=1), kind="stable")
    out = {}
    for k, a in itertools.product((2000, 5000, 10000, 20000), (0.03, 0.1)):
        keep = np.zeros(V, bool)
        keep[order[:k]] = True
        C = ub.C * keep[:, None]
        L = np.log((C + a) / (C.sum(axis=0) + a * k))
        L[~keep] = 0.0
        out[f"mi bin k={k} a={a:g}"] = Mb @ L
    return out


def _trigrams(V: int, fit: Groups, ids: Sequence[np.ndarray], ub: Unigrams,
              Mb: sp.csr_matrix, ell: np.ndarray,
              want: Callable[[str], bool]) -> dict[str, np.ndarray]:
    """``tri`` and ``trilen``: unigram + exact bigram + exact trigram binary NB scores."""
    su = {a: Mb @ ub.additive(a) for a in (0.03, 0.1)}
    S: dict[int, dict[float, np.ndarray]] = {}
    for order in (2, 3):
        ng = NGrams(fit, V, order)
        Mg = ng.matrix(ids, "bin")
        Cg = ng.counts("bin")
        S[order] = {ap: Mg @ np.log((Cg + ap) / (Cg.sum(axis=0) + ap * ng.K))
                    for ap in (0.01, 0.03, 0.1)}
        del ng, Mg, Cg  # the trigram vocabulary is large: one order in memory at a time
    out = {}
    if want("tri"):
        for a, w2, w3, ap in itertools.product((0.03, 0.1), (0.5, 1.0), (0.25, 0.5, 1.0),
                                               (0.01, 0.03, 0.1)):
            out[f"tri a={a:g} w2={w2:g} w3={w3:g} αp={ap:g}"] = (su[a] + w2 * S[2][ap]
                                                                + w3 * S[3][ap])
    if want("trilen"):
        pois = _poisson(ub.mean_length(), ell)
        for a, w3, ap, om in itertools.product((0.03, 0.1), (0.25, 0.5), (0.03, 0.1),
                                               (0.1, 0.3)):
            out[f"trilen a={a:g} w2=1 w3={w3:g} αp={ap:g} ω={om:g}"] = (
                su[a] + S[2][ap] + w3 * S[3][ap] + om * pois)
    return out


def _pairs(V: int, fit: Groups, ids: Sequence[np.ndarray], uni: dict[str, Unigrams],
           Mb: sp.csr_matrix, want: Callable[[str], bool]) -> dict[str, np.ndarray]:
    """``pair-add`` / ``pair-dir`` / ``pair-jm`` (unigram NB + weighted pair table) and
    ``bilm`` (per-domain conditional bigram LM)."""
    out = {}
    pairs = NGrams(fit, V, 2)
    su = {a: Mb @ uni["bin"].additive(a) for a in (0.03, 0.1, 0.3)}
    Mp = pairs.matrix(ids, "bin")
    Cp = pairs.counts("bin")
    n_p = Cp.sum(axis=0)
    qp = Cp.sum(axis=1) + EPS  # pooled pair background
    qp /= qp.sum()
    tables = {}
    if want("pair-add"):
        for ap in (0.01, 0.03, 0.1, 0.3):
            tables[f"pair-add αp={ap:g}"] = np.log((Cp + ap) / (n_p + ap * pairs.K))
    if want("pair-dir"):
        for m in (1e2, 1e3, 1e4, 1e5):
            tables[f"pair-dir m={m:g}"] = np.log((Cp + m * qp[:, None]) / (n_p + m))
    if want("pair-jm"):
        for lam in (0.1, 0.3, 0.5, 0.7, 0.9):
            tables[f"pair-jm λ={lam:g}"] = np.log((1 - lam) * Cp / n_p + lam * qp[:, None])
    for key, T in tables.items():
        s_pairs = Mp @ T
        family, setting = key.split(" ")
        for a, w in itertools.product((0.03, 0.1, 0.3), (0.25, 0.5, 1.0)):
            out[f"{family} a={a:g} w={w:g} {setting}"] = su[a] + w * s_pairs
    del tables
    if want("bilm"):
        for tf in ("raw", "bin"):
            C2 = pairs.counts(tf)
            # C2[v·, d]: pair counts summed over the second id (the OOV row has no context)
            Cv = np.zeros((V + 1, C2.shape[1]))
            np.add.at(Cv, pairs.vocab // (V + 1), C2[:-1])
            P, idx, prev, last, F = pairs.rows(ids, tf)
            # sums each prompt's per-pair log-probabilities, weighted by f(tf)
            R = sp.csr_matrix((F, (P, np.arange(P.size))), shape=(len(ids), P.size))
            c2, cv = C2[idx], Cv[prev]
            for au in (0.1, 1.0):
                pw = ((uni[tf].C + au) / (uni[tf].n + au * V))[last]
                for m in (1, 10, 100, 1000, 1e4):
                    logp = np.log(c2 + m * pw) - np.log(cv + m)
                    out[f"bilm {tf} au={au:g} m={m:g}"] = R @ logp
            del c2, cv, pw
    return out


# ----------------------------------------------------------------------------- main
def _args() -> argparse.Namespace:
    """explore_args' command line plus ``--only FAMILY ...`` (default: every family)."""
    return explore_args(__doc__, SETTINGS, extra=lambda ap: ap.add_argument(
        "--only", nargs="+", choices=FAMILIES, metavar="FAMILY",
        help=f"measure these families only (default: all of {', '.join(FAMILIES)})"))


def _one_configuration(per_split: dict[str, Rows]) -> None:
    """Per family, the label with the highest mean held-out accuracy over every split (first
    in grid order on ties) and its test accuracy on each split."""
    names = list(per_split)
    labels = [label for label, _, _ in next(iter(per_split.values()))]
    held = {name: {label: h for label, h, _ in rows} for name, rows in per_split.items()}
    test = {name: {label: t for label, _, t in rows} for name, rows in per_split.items()}
    best: dict[str, tuple[str, float, int]] = {}
    for label in labels:
        family = label.split()[0]
        # rounded so that equal means reached through different sums count as ties
        mean = round(float(np.mean([held[name][label] for name in names])), 12)
        if family not in best or mean > best[family][1]:
            best[family] = (label, mean, 1)
        elif mean == best[family][1]:
            best[family] = (*best[family][:2], best[family][2] + 1)
    print(f"## one configuration for every split: highest mean held-out accuracy over "
          f"{len(names)} split(s), first in grid order on ties")
    for i, name in enumerate(names, 1):
        print(f"  [{i}] {name}")
    print("  held: mean held-out accuracy → test accuracy on each split [i] and its mean; "
          "ties: variants with the same mean held-out")
    width = max(len(label) for label, _, _ in best.values())
    print(f"  {'family':9s} {'configuration':{width}s} {'held':>6s}   "
          + " ".join(f"{f'[{i}]':>6s}" for i in range(1, len(names) + 1))
          + f" {'mean':>6s} {'ties':>5s}")
    for family, (label, mean, ties) in best.items():
        tests = [test[name][label] for name in names]
        print(f"  {family:9s} {label:{width}s} {100 * mean:6.1f} → "
              + " ".join(f"{100 * t:6.1f}" for t in tests)
              + f" {100 * np.mean(tests):6.1f} {ties:5d}")


def main() -> int:
    args = _args()
    want = (lambda family: family in args.only) if args.only else (lambda family: True)
    emb = load_embedder(args.embedder)
    V = emb.vocab_size
    print(f"embedder {emb.name}; balanced accuracy (%): held-out fit → test\n", flush=True)
    per_split: dict[str, Rows] = {}
    for name, data in tokenized_splits(emb, args.settings, args.data):
        per_split[name] = report_split(name, _variants(V, data.inner, data.held, want),
                                       _variants(V, data.fit, data.test, want), data)
    if per_split:
        _one_configuration(per_split)
    return 0


if __name__ == "__main__":
    sys.exit(main())

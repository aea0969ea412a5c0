"""A prompt-level TF-IDF ridge over hashed token ids: additive statistics, closed-form
solve, per-vocabulary scoring tables.

The ``nb`` model scores a prompt from per-token and per-pair tables; this component adds a
linear model of the whole prompt, the closed-form cousin of TF-IDF + logistic regression:

* features: the prompt's *distinct* token ids, each signed-hashed into one of ``B``
  buckets (Knuth's multiplicative hash; :func:`hashed`), summed per bucket into an integer
  vector ``s``, L2-normalised (``g = s / ‖s‖``), then each bucket scaled by its inverse
  document frequency ``idf_b = log((N + 1) / (df_b + 1)) + 1`` (``N`` fit prompts,
  ``df_b`` those touching bucket ``b``), plus a bias 1: ``f = [idf ∘ g, 1]``;
* a balanced ridge (every domain weighs the same: sample weight ``1 / n_d``) with
  ``λ = 1e-2``: ``W = (Σ_d G_d / n_d  ∘ idf idfᵀ + λI)⁻¹ [idf ∘ Σ_{x∈d} g̃ / n_d]``.

Why the IDF is applied *after* the normalisation: then the statistics are sums over
prompts that do not depend on the other experts. Per domain they are ``G_d = Σ g̃ g̃ᵀ``
(``g̃ = [g, 1]``), the bucket document frequencies ``df_d`` and the prompt count; the
IDF is formed at solve time from the summed frequencies, so adding or removing an expert
re-solves to exactly what a full refit gives.

``G_d`` is kept as exact integers so that shards merge and subtract to the bit: a prompt
contributes ``s sᵀ · round(2³² / ‖s‖²)`` and ``s · round(2³² / ‖s‖)`` (its bias column),
in units of 2⁻³², a product of integers. That is ``g̃ g̃ᵀ`` to a relative 2⁻³²·‖s‖² (one
part in 10⁷ for a prompt of 1,000 distinct tokens), a perturbation of that prompt's weight,
not of the matrix's shape: the sum stays a weighted Gram matrix. Stored sparse: the upper
triangle's nonzero entries, keyed ``i · (B + 1) + j`` (``i ≤ j``, ``B`` the bias).

Chosen on held-out fit data and fresh checks (``benchmarks/explore_tfidf.py --form exact``,
EVALUATION.md, *Issue 6*): 4096 buckets, λ = 1e-2, blended into the ``geo`` decision with
weight 4 (the ``tfidf`` setting).

Example:
    >>> import numpy as np
    >>> counts = tfidf_counts([np.array([5, 9, 5]), np.array([7])], buckets=64)
    >>> int(counts.df.sum()), gram_entry(counts, 64, 64) == 2 * UNIT   # 2 prompts
    (3, True)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from .errors import IR3DEError, StatsFormatError

__all__ = ["MAX_BUCKETS", "TFIDF_BUCKETS", "TFIDF_GAMMA", "TFIDF_LAMBDA", "UNIT",
           "TfidfCounts", "TfidfScores", "check_buckets", "check_same_buckets", "gram_entry",
           "hashed", "solve_tfidf", "sum_counts", "tfidf_counts"]

TFIDF_BUCKETS = 4096
MAX_BUCKETS = 2**20
TFIDF_LAMBDA = 1e-2
TFIDF_GAMMA = 4.0
# Gram entries are integers in units of 2**-32: a prompt adds at most 2**32 to any entry
# (|s_i s_j| ≤ ‖s‖², Cauchy-Schwarz), so int64 holds the sums of 2**31 prompts.
UNIT = 2**32
MAX_PROMPTS = 2**31 - 1
_HASH = 2654435761  # Knuth's multiplicative constant (2**32 / golden ratio, odd)
# Upper-triangle entries generated per counting step: bounds memory (16 B each, twice).
_PAIR_STEP = 1 << 22


class TfidfCounts(NamedTuple):
    """One domain's TF-IDF statistics over ``B`` buckets: ``df`` (B,), per bucket the
    number of prompts touching it; ``keys`` (sorted, distinct int64), the upper-triangle
    entries ``i * (B + 1) + j`` (``i ≤ j ≤ B``, index ``B`` the bias) of ``G = Σ g̃ g̃ᵀ``
    that are nonzero, and ``values`` (int64) those entries in units of 2⁻³²."""

    df: np.ndarray
    keys: np.ndarray
    values: np.ndarray

    @property
    def buckets(self) -> int:
        """``B``, the number of hash buckets."""
        return int(self.df.size)


def check_buckets(buckets: object, name: str = "buckets") -> int:
    """``buckets`` if it is a bucket count (an int in [1, 2**20]), else an
    :class:`~ir3de.errors.IR3DEError` naming it ``name``."""
    if not isinstance(buckets, int) or isinstance(buckets, bool) \
            or not 1 <= buckets <= MAX_BUCKETS:
        raise IR3DEError(f"{name} must be an integer in [1, 2**20], got {buckets!r}")
    return buckets


def check_same_buckets(parts: Sequence[TfidfCounts | None], whose: str) -> None:
    """Refuse statistics over different bucket counts (None parts aside), which neither sum
    nor solve together: a :class:`~ir3de.errors.StatsFormatError` naming them ``whose``."""
    buckets = sorted({p.buckets for p in parts if p is not None})
    if len(buckets) > 1:
        raise StatsFormatError(f"{whose} TF-IDF statistics are over different bucket counts "
                               f"({', '.join(map(str, buckets))}); count them again with one "
                               "--tfidf-buckets")


def hashed(ids: np.ndarray, buckets: int) -> tuple[np.ndarray, np.ndarray]:
    """Each token id's bucket (int64) and sign (±1, int64): the 32-bit product
    ``id · 2654435761 mod 2³²``, its remainder by ``buckets`` and its top bit."""
    h = (np.asarray(ids, dtype=np.int64) * _HASH) % (1 << 32)
    return h % buckets, 1 - 2 * ((h >> 31) & 1)


def _bucket_sums(distinct: np.ndarray, owner: np.ndarray,
                 buckets: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For distinct token ids ``distinct`` of prompts ``owner`` (sorted by owner): each
    prompt's nonzero bucket entries of ``s`` as ``(owner, bucket, value)``, sorted by owner
    then bucket, and every (owner, bucket) touched (cancelled ones too: they count in the
    document frequencies)."""
    bucket, sign = hashed(distinct, buckets)
    key = owner * buckets + bucket
    order = np.argsort(key, kind="stable")
    key = key[order]
    starts = np.flatnonzero(np.diff(key, prepend=-1))
    touched = key[starts]
    sums = np.add.reduceat(sign[order], starts) if starts.size else np.zeros(0, np.int64)
    nz = sums != 0
    kept = touched[nz]
    return kept // buckets, kept % buckets, sums[nz], touched


def tfidf_counts(ids: Sequence[np.ndarray], buckets: int = TFIDF_BUCKETS) -> TfidfCounts:
    """The statistics of prompts given as token ids (repeats allowed; an empty array
    counts as a prompt with no feature but its bias, so leave out what is not a prompt)."""
    check_buckets(buckets)
    P = len(ids)
    lengths = np.fromiter((x.size for x in ids), dtype=np.int64, count=P)
    empty = np.zeros(0, dtype=np.int64)
    df = np.zeros(buckets, dtype=np.int64)
    if P == 0:
        return TfidfCounts(df, empty, empty)
    flat = np.concatenate([np.asarray(x, dtype=np.int64) for x in ids])
    prompt = np.repeat(np.arange(P, dtype=np.int64), lengths)
    # distinct (prompt, id): a sort of prompt-major tags (ids < 2**31, prompts < 2**31)
    tagged = np.unique(prompt << 32 | flat)
    owner, bucket, value, touched = _bucket_sums(tagged & 0xFFFFFFFF, tagged >> 32, buckets)
    df += np.bincount(touched % buckets, minlength=buckets)
    m = np.bincount(owner, weights=value * value, minlength=P)  # ‖s‖², exact integers
    with np.errstate(divide="ignore"):
        w = np.rint(UNIT / m)  # (inf where m = 0: such a prompt has no entry to weigh)
        w_bias = np.rint(UNIT / np.sqrt(m))
    B1 = buckets + 1
    parts_k = [bucket * B1 + buckets, np.array([buckets * B1 + buckets])]
    parts_v = [value * w_bias[owner].astype(np.int64) if value.size else empty,
               np.array([P * UNIT], dtype=np.int64)]
    # Upper-triangle pairs (i ≤ j) within each prompt's entries (sorted by bucket), in
    # steps of at most _PAIR_STEP pairs.
    counts = np.bincount(owner, minlength=P)
    starts = np.cumsum(counts) - counts
    entry_end = np.repeat(starts + counts, counts)  # each entry's prompt end
    per_entry = entry_end - np.arange(owner.size)  # pairs (i, j ≥ i) starting at entry i
    cum = np.cumsum(per_entry)
    lo = 0
    while lo < owner.size:
        hi = int(np.searchsorted(cum, (cum[lo - 1] if lo else 0) + _PAIR_STEP, "right"))
        hi = max(hi, lo + 1)
        n = per_entry[lo:hi]
        left = np.repeat(np.arange(lo, hi), n)
        right = left + np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
        parts_k.append(bucket[left] * B1 + bucket[right])
        parts_v.append(value[left] * value[right] * w[owner[left]].astype(np.int64))
        lo = hi
    keys, values = _summed(np.concatenate(parts_k), np.concatenate(parts_v))
    return TfidfCounts(df, keys, values)


def _summed(keys: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Values summed over equal keys (exact integers), sorted by key, zeros dropped: what
    the pair tables' :func:`~ir3de.statistics.sum_pairs` does."""
    from .statistics import sum_pairs  # (statistics imports this module)

    return sum_pairs(keys, values)


def sum_counts(parts: Sequence[TfidfCounts], signs: Sequence[int] | None = None
               ) -> TfidfCounts:
    """The sum of statistics of one bucket count (``signs``: ±1 per part, default +1);
    integer sums, exact in any order."""
    signs = [1] * len(parts) if signs is None else list(signs)
    df = sum(sign * p.df for p, sign in zip(parts, signs, strict=True))
    keys, values = _summed(np.concatenate([p.keys for p in parts]),
                           np.concatenate([sign * p.values
                                           for p, sign in zip(parts, signs, strict=True)]))
    return TfidfCounts(np.asarray(df, dtype=np.int64), keys, values)


def gram_entry(counts: TfidfCounts, i: int, j: int) -> int:
    """Entry ``(i, j)`` of ``G`` in units of 2⁻³² (0 when not stored)."""
    i, j = min(i, j), max(i, j)
    key = i * (counts.buckets + 1) + j
    pos = int(np.searchsorted(counts.keys, key))
    return int(counts.values[pos]) if pos < counts.keys.size and counts.keys[pos] == key else 0


def solve_tfidf(parts: Sequence[TfidfCounts], n_prompts: Sequence[int], *,
                lam: float = TFIDF_LAMBDA,
                names: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The balanced ridge over the experts' statistics ``parts`` (one per expert, in column
    order; ``n_prompts`` their prompt counts): ``(W, idf)``, ``W`` (B + 1, D) the weights on
    ``f = [idf ∘ g, 1]`` and ``idf`` (B,) the buckets' inverse document frequencies.
    ``names``, the experts' names, orders the floating-point sums (sorted by name, as
    :func:`~ir3de.solver.design` sums): an expert removed and added back, or files given
    in another order, then give the same bits.

    Only the buckets some fit prompt touches enter the solve: an untouched bucket's row and
    column of ``G`` are zero, so its equation is ``λ w = 0`` on its own and its weights are
    exactly 0. A small fit set then solves a small system instead of a (B + 1)² one."""
    B = parts[0].buckets
    N = sum(n_prompts)
    df = np.sum([p.df for p in parts], axis=0)
    idf = np.log((N + 1) / (df + 1.0)) + 1
    active = np.append(np.flatnonzero(df), B)  # the bias last
    n = active.size
    where = np.full(B + 1, -1, dtype=np.int64)
    where[active] = np.arange(n)
    flat = np.zeros(n * n)
    rhs = np.zeros((n, len(parts)))
    sized = list(zip(parts, n_prompts, strict=True))
    order = range(len(parts)) if names is None else sorted(range(len(parts)),
                                                           key=list(names).__getitem__)
    for d in order:
        part, size = sized[d]
        i, j = where[part.keys // (B + 1)], where[part.keys % (B + 1)]
        # keys are distinct: each entry lands on its own cell (upper triangle, i ≤ j)
        flat[i * n + j] += part.values / UNIT / size
        bias = j == n - 1
        rhs[i[bias], d] = part.values[bias] / UNIT / size  # Σ g̃ over the domain
    A = flat.reshape(n, n)
    A += np.triu(A, 1).T
    scale = np.append(idf[active[:-1]], 1.0)
    A *= scale[:, None]
    A *= scale[None, :]
    A[np.diag_indices_from(A)] += lam
    W = np.zeros((B + 1, len(parts)))
    W[active] = np.linalg.solve(A, scale[:, None] * rhs)
    return W, idf


class TfidfScores(NamedTuple):
    """Per-vocabulary tables of a solved TF-IDF ridge, scaled by its weight w in a blend: a
    prompt scores ``(Σ_t rows[t]) / ‖s‖ + bias`` over its distinct tokens ``t`` (``0`` for
    the sum when ``‖s‖ = 0``), ``‖s‖²`` the sum of squares of the per-bucket sums of
    ``sign[t]`` over ``bucket[t]``; ``rows`` (V, D) is ``w · sign[t] · idf[bucket[t]] ·
    W[bucket[t]]``: one look-up per distinct token, as the per-token tables are."""

    rows: np.ndarray
    bias: np.ndarray
    bucket: np.ndarray
    sign: np.ndarray
    buckets: int

    @classmethod
    def build(cls, W: np.ndarray, idf: np.ndarray, vocab_size: int,
              weight: float = 1.0) -> TfidfScores:
        """The tables of :func:`solve_tfidf`'s ``(W, idf)`` for token ids ``0 .. V - 1``,
        scaled by ``weight``."""
        bucket, sign = hashed(np.arange(vocab_size), idf.size)
        rows = (weight * sign * idf[bucket])[:, None] * W[bucket]
        return cls(rows, weight * W[-1], bucket, sign.astype(np.float64), int(idf.size))

    def prompt_scores(self, sums: np.ndarray, distinct: np.ndarray,
                      owner: np.ndarray) -> np.ndarray:
        """(P, D) scores of prompts, without the bias (the selector adds it with the
        per-token scores), from ``sums``, each prompt's ``Σ_t rows[t]`` (P, D), and their
        distinct token ids ``distinct``, ``owner`` their prompt (ascending, none without a
        token)."""
        key = owner * self.buckets + self.bucket[distinct]
        order = np.argsort(key, kind="stable")
        key = key[order]
        first = np.flatnonzero(np.diff(key, prepend=-1))
        s = np.add.reduceat(self.sign[distinct][order], first)
        norm = np.sqrt(np.bincount(key[first] // self.buckets, weights=s * s,
                                   minlength=sums.shape[0]))
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(norm[:, None] > 0, sums / norm[:, None], 0.0)

    def prompt_score(self, sums: np.ndarray, distinct: np.ndarray) -> np.ndarray:
        """(D,) scores of one prompt from ``sums`` (its ``Σ_t rows[t]``) and its distinct
        token ids, without the bias: the same digits as :meth:`prompt_scores`."""
        s = np.bincount(self.bucket[distinct], weights=self.sign[distinct])
        norm = np.sqrt(np.dot(s, s))
        return sums / norm if norm else np.zeros_like(sums)

"""Per-domain sufficient statistics of the ridge regression, by counting token ids.

For a domain d with training tokens t (x̃_t = [E[t], 1]), the router needs only

    A_d = Σ_t x̃_t x̃_tᵀ        b_d = Σ_t x̃_t

Because E is a lookup table, both are functions of the token-id histogram c_d:
``A_d = Ẽᵀ diag(c_d) Ẽ`` and ``b_d = Ẽᵀ c_d`` (Ẽ = table with a column of ones).
Fitting is one counting pass over the corpus, instead of an (h+1)² update per token, and
the histogram is what is kept: ``A_d`` ((h+1)² numbers, 537 MB at h = 8192) is formed
from it by :meth:`DomainStats.gram` when a ridge router needs it, and only statistics
without a histogram (:func:`streaming_stats`, older files) carry it. The same pass also
counts, per token id, the prompts it occurs in (document frequencies), and, per adjacent
token pair (previous id, id) and per skip pair (the id two places back, id), with a
start-of-prompt id ``V`` before the first token, the prompts it occurs in: the ``nb``
router's statistics. Statistics add and subtract,
so shards of one domain computed on different machines are merged with :func:`merge` (or
``+`` and ``sum``, which refuse a shard object summed in twice but, unlike ``merge``, not
a copy of one).

Example:
    >>> from ir3de import load_embedder, compute_stats
    >>> emb = load_embedder()
    >>> s = compute_stats(emb, ["What is 2+2?", "Solve x^2 = 4."], domain="math")
    >>> s.n_prompts, s.gram(emb).shape == (emb.dim + 1, emb.dim + 1)
    (2, True)
"""

from __future__ import annotations

import hashlib
import math
import os
import reprlib
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from tqdm.auto import tqdm

from .embedding import DEFAULT_MAX_TOKENS, Embedder, EmbedderLike, as_embedder, is_recipe
from .errors import (
    EmptyInputError,
    ExpertError,
    FingerprintMismatchError,
    IR3DEError,
    StatsFormatError,
    is_blank,
    refuse_lone_text,
    require_path,
    told_apart,
)
from .store import STATS_DEPTH, check_finite, read_safetensors, write_safetensors
from .tfidf import (
    MAX_BUCKETS,
    MAX_PROMPTS,
    UNIT,
    TfidfCounts,
    check_buckets,
    check_same_buckets,
    sum_counts,
    tfidf_counts,
)

__all__ = [
    "STATS_FORMAT",
    "DomainStats",
    "PairCounts",
    "TokenCounts",
    "check_same_embedder",
    "check_same_max_tokens",
    "compute_stats",
    "merge",
    "pair_keys",
    "skip_keys",
    "split_pairs",
    "stats_from_counts",
    "streaming_stats",
    "sum_pairs",
    "token_counts",
]

STATS_FORMAT = "ir3de-stats"
# Version 2 files hold token counts and no A (formed from them); version 1 files hold A
# (and, when ir3de counted them, the counts too). Statistics are saved in version 1 only
# when they carry A, so the files an older ir3de could read stay readable by it.
_STATS_VERSIONS = (1, 2)
_BATCH = 1024
_ROW_BLOCK = 8192
_PAIR_FOLD = 1 << 22  # pending pair keys folded into the running table beyond this many
# Relative rounding allowed on A's diagonal when subtracting statistics summed in another
# order: orders of magnitude above the rounding of float64 sums.
_SUBTRACT_RTOL = 1e-6
# Asymmetry allowed in A relative to its largest diagonal entry, which bounds every entry
# (Cauchy-Schwarz): float64 rounding of sums over even billions of tokens stays below it.
_SYMMETRY_RTOL = 1e-6
# Unicode categories refused in domain names: controls (newline, tab, escape), the line and
# paragraph separators, invisible format characters (a zero-width space or a right-to-left
# override makes one name look like another in every listing) and lone surrogates (what
# Python makes of a command-line argument that is not UTF-8; no JSON, header or file can
# carry them).
_REFUSED_CATEGORIES = {"Cc": "a control character", "Zl": "a line separator",
                       "Zp": "a paragraph separator", "Cf": "an invisible format character",
                       "Cs": "a lone surrogate (not UTF-8)"}
# The zero-width non-joiner and joiner are format characters that some scripts spell words
# with (Persian, the Indic scripts) and emoji sequences are made of; after an ASCII
# character they change nothing visible, so they are taken only after a non-ASCII one.
_JOINERS = frozenset("\u200c\u200d")
# What files written before these were refused may hold (domain_name_problem's legacy).
_LEGACY_CATEGORIES = frozenset({_REFUSED_CATEGORIES["Cf"]})
# Metadata counts above this are damage, not data: 2**53 is where float64 stops holding
# every integer, and arithmetic on larger Python ints overflows numpy's int64.
_META_INT_MAX = 2**53


class PairCounts(NamedTuple):
    """Document frequencies of token pairs: ``keys`` (sorted, distinct int64) encode an
    adjacent pair as ``prev * (V + 1) + id`` and a skip pair (the id two places back, id) as
    ``(V + 1)**2 + prev * (V + 1) + id``, ``prev = V`` standing for the start of a prompt
    (before its first token, and two places back from its first two); ``counts`` (int64, >
    0) are the numbers of prompts holding each pair. Skip pairs are counted on request
    (``compute_stats(skip_pairs=True)``); other tables hold adjacent pairs only: see
    :func:`split_pairs`."""

    keys: np.ndarray
    counts: np.ndarray


def pair_keys(ids: np.ndarray, vocab_size: int, gap: int = 1) -> np.ndarray:
    """The pair key of every position of one prompt's token ids, without the skip pairs'
    offset (see :class:`PairCounts`): ``gap`` 1 for adjacent pairs, 2 for skip pairs. What
    :func:`_flat_pair_keys` gives for one prompt, in fewer numpy calls (the gateway routes
    one prompt at a time)."""
    keys = ids.astype(np.int64)
    if keys.size:
        keys[gap:] += keys[:-gap] * (vocab_size + 1)  # (a new array: no overlap)
        keys[:gap] += vocab_size * (vocab_size + 1)
    return keys


def skip_keys(ids: np.ndarray, vocab_size: int) -> np.ndarray:
    """:func:`pair_keys` of the skip pairs (the id two places back, id) of one prompt."""
    return pair_keys(ids, vocab_size, 2)


def _flat_pair_keys(flat: np.ndarray, starts: np.ndarray, vocab_size: int,
                    gap: int = 1) -> np.ndarray:
    """The pair key (``gap`` 1) or skip-pair key without its offset (``gap`` 2) of every
    position of prompts concatenated in ``flat``, the non-empty ones starting at
    ``starts``: the start id V stands before each prompt's first token (and, for skip
    pairs, two places back from its second)."""
    flat = flat.astype(np.int64, copy=False)
    prev = np.empty_like(flat)
    prev[gap:] = flat[:-gap]
    for j in range(gap):
        # (a one-token prompt's second place is the next prompt's first: V there too)
        at = starts + j
        prev[at[at < flat.size]] = vocab_size
    return prev * (vocab_size + 1) + flat


def split_pairs(pairs: PairCounts, vocab_size: int) -> tuple[PairCounts, PairCounts | None]:
    """A pair table's adjacent pairs and its skip pairs, the latter keyed without their
    offset (as :func:`skip_keys` gives them); None for the skip pairs of a table counted
    without them (one that holds pairs, none of them a skip pair: every prompt holds both
    kinds).

    >>> adjacent, skips = split_pairs(PairCounts(np.array([5, 17, 20]), np.ones(3, int)), 3)
    >>> adjacent.keys, skips.keys
    (array([5]), array([1, 4]))
    """
    offset = (vocab_size + 1) ** 2
    cut = int(np.searchsorted(pairs.keys, offset))
    adjacent = PairCounts(pairs.keys[:cut], pairs.counts[:cut])
    if cut == pairs.keys.size and cut:
        return adjacent, None
    return adjacent, PairCounts(pairs.keys[cut:] - offset, pairs.counts[cut:])


def sum_pairs(keys: np.ndarray, counts: np.ndarray) -> PairCounts:
    """Pair frequencies summed over equal ``keys`` (in any order, repeats allowed), e.g. the
    tables of several shards concatenated; pairs whose sum is zero are dropped (a pair
    subtracted away is gone)."""
    keys = np.asarray(keys)
    order = np.argsort(keys)  # integer sums: the order among equal keys does not matter
    keys, counts = keys[order], np.asarray(counts)[order]
    starts = np.flatnonzero(_run_starts(keys))
    # Integer sums over runs of equal keys: exact in any order (np.add.at is ~10x slower).
    total = (np.add.reduceat(counts, starts) if keys.size
             else np.zeros(0, dtype=counts.dtype))
    unique = keys[starts]
    keep = total != 0
    return PairCounts(unique[keep], total[keep])


@dataclass(frozen=True, eq=False)
class DomainStats:
    """Sufficient statistics of one domain: token counts, ``b`` (h+1,) and maybe ``A``.

    ``A`` (h+1, h+1) is ``None`` when the token-id histogram ``counts`` is given: it is a
    function of it, ``Ẽᵀ diag(counts) Ẽ``, formed by :meth:`gram` when a ridge router
    needs it (only ``dense`` and ``paper`` do), and at h = 8192 it would be 537 MB per
    domain. Statistics without counts (:func:`streaming_stats`, files of an older ir3de)
    carry ``A`` itself; files that an older ir3de wrote with both keep theirs too (their
    signature covers it), checked against the counts when ``A`` is formed.

    They do not depend on λ or on any other router setting. ``source`` names
    where they came from (a file path), for error messages only.

    Statistics of one domain add (``s1 + s2``, ``sum(shards)``: the statistics of both
    corpora) and subtract (``total - s2``: ``total`` without ``s2``'s corpus, which must
    have been part of it); see :meth:`__add__` and :meth:`__sub__`.
    """

    domain: str
    A: np.ndarray | None
    b: np.ndarray
    n_tokens: int
    n_prompts: int
    fingerprint: str
    embedder: dict[str, Any]
    max_tokens: int = DEFAULT_MAX_TOKENS
    source: str = field(default="<memory>", compare=False)
    # Ed25519 signature metadata (see ir3de.signing); any derived statistics drop it.
    signature: dict[str, str] | None = field(default=None, compare=False)
    # The token-id histogram (int64, one entry per vocabulary id): what every model reads
    # (the ridges form A and b from it). None only where A is stored (version 1 files
    # made before ir3de counted tokens, streaming_stats).
    counts: np.ndarray | None = field(default=None, compare=False)
    # Per token id, the number of prompts it occurs in (int64): the statistics of the
    # count-based (``nb``) router. None in files made before ir3de counted them.
    doc_counts: np.ndarray | None = field(default=None, compare=False)
    # Document frequencies of adjacent token pairs and skip pairs (the ``nb`` router's pair
    # features). None in files made before ir3de counted them.
    pairs: PairCounts | None = field(default=None, compare=False)
    # The prompt-level TF-IDF ridge's statistics over hashed token ids (ir3de.tfidf):
    # counted only on request (compute_stats(tfidf_buckets=...); the tfidf preset reads them).
    tfidf: TfidfCounts | None = field(default=None, compare=False)
    # Why statistics derived from signed ones (renamed, combined, stripped of their pairs)
    # carry no signature: verify says so instead of "not signed". Set by the derivations
    # only (never saved; any other replace() resets it).
    signature_dropped: str | None = field(default=None, init=False, compare=False,
                                          repr=False)
    if TYPE_CHECKING:
        # The shard objects these statistics were summed from (+, sum), each stood for by
        # a token object of its own (unique, unlike id(), even across pickles): a shard
        # summed in twice is refused (see __add__). A new object (made, loaded,
        # replace()d) is one shard. Not a field: it is no part of the statistics' data
        # (declared as one outside __init__ only because type checkers take every
        # annotation of a dataclass for a field).
        _parts: frozenset[object] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_parts", frozenset({object()}))  # frozen: set once here
        # legacy: statistics read from an older file; compute_stats checks a new name fully
        validate_domain_name(self.domain, self.source, legacy=True)
        # (as the loader refuses them: save wrote files load refused, and a None
        # fingerprint failed every comparison with a TypeError)
        if not isinstance(self.fingerprint, str) or not self.fingerprint:
            raise StatsFormatError(f"{self.source}: fingerprint must be a non-empty string, "
                                   f"got {self.fingerprint!r}")
        if not is_recipe(self.embedder):
            raise StatsFormatError(f"{self.source}: embedder must be an embedder recipe (a "
                                   f"dict with a string 'kind', Embedder.spec), got "
                                   f"{self.embedder!r}")
        self._check_array_types()
        if self.b.ndim != 1 or self.b.shape[0] < 2:
            raise StatsFormatError(f"{self.source}: b has shape {self.b.shape}; expected "
                                   "(h+1,)")
        check_finite("b", self.b, self.source)
        if self.A is None:
            if self.counts is None:
                raise StatsFormatError(f"{self.source}: statistics without A need the token "
                                       "counts it is formed from")
        else:
            self._check_gram(self.A)
        # Integers as plain ints (JSON metadata takes no numpy scalar); a bool or a float
        # would save a file that cannot be loaded back.
        for name in ("n_tokens", "n_prompts", "max_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise StatsFormatError(f"{self.source}: {name} must be an integer, got "
                                       f"{value!r}")
            object.__setattr__(self, name, int(value))  # frozen: the one normalising write
        if not 0 < self.max_tokens <= _META_INT_MAX:  # (as the loader's meta_int)
            raise StatsFormatError(f"{self.source}: max_tokens must be a positive integer of "
                                   f"at most 2**53, got {self.max_tokens}")
        if self.n_tokens < 0 or self.n_prompts < 0:
            raise StatsFormatError(f"{self.source}: negative counts "
                                   f"({self.n_tokens} tokens, {self.n_prompts} prompts)")
        # Each prompt counts at most max_tokens tokens: a file whose cap is smaller than its
        # counts allow (tampered, or edited) would route with that cap (build takes it).
        if self.n_tokens > self.n_prompts * self.max_tokens:
            raise StatsFormatError(f"{self.source}: {self.n_tokens} tokens cannot come from "
                                   f"{self.n_prompts} prompts of at most {self.max_tokens} "
                                   "tokens each (max_tokens)")
        # The loader refuses more (meta_int): refused here too, a sum of two files that load
        # could otherwise be saved as one that does not.
        if max(self.n_tokens, self.n_prompts) > _META_INT_MAX:
            raise StatsFormatError(f"{self.source}: more than 2**53 tokens or prompts "
                                   f"({self.n_tokens} tokens, {self.n_prompts} prompts), "
                                   "beyond what float64 sums count exactly")
        # The bias entries are sums of 1.0 per token, exact in float64 below 2^53: they must
        # equal the token count to the bit. A cheap check against corruption and tampering
        # (the counts set the balanced weights).
        if (self.A is not None and self.A[-1, -1] != self.n_tokens) \
                or self.b[-1] != self.n_tokens:
            raise StatsFormatError(f"{self.source}: A/b disagree with n_tokens={self.n_tokens}")
        # Each count at most n_tokens, so the sum cannot wrap around int64 unseen (2**62
        # added to four counts wraps back to the right total).
        if self.counts is not None and self.counts.ndim != 1:
            raise StatsFormatError(f"{self.source}: token counts have shape "
                                   f"{self.counts.shape}; expected one count per token id")
        if self.counts is not None and (np.any(self.counts < 0)
                                        or np.any(self.counts > self.n_tokens)
                                        or self.counts.sum(dtype=np.float64) > 2 * self.n_tokens
                                        or int(self.counts.sum()) != self.n_tokens):
            raise StatsFormatError(f"{self.source}: token counts disagree with "
                                   f"n_tokens={self.n_tokens}")
        if self.doc_counts is not None:
            self._check_doc_counts(self.doc_counts)
        if self.pairs is not None:
            self._check_pairs(self.pairs)
        if self.tfidf is not None:
            self._check_tfidf(self.tfidf)
        self._freeze_arrays()

    def _check_gram(self, A: np.ndarray) -> None:
        h1 = self.b.shape[0]
        if A.ndim != 2 or A.shape != (h1, h1):
            raise StatsFormatError(f"{self.source}: A has shape {A.shape} and b "
                                   f"{self.b.shape}; expected (h+1, h+1) and (h+1,)")
        check_finite("A", A, self.source)
        # A sum of x̃x̃ᵀ is symmetric (to rounding, whoever formed it): a cheap check that
        # catches damage to A in a file, which would otherwise load and move W.
        scale = float(np.abs(np.diagonal(A)).max(initial=0.0))
        if np.abs(A - A.T).max(initial=0.0) > _SYMMETRY_RTOL * scale:
            raise StatsFormatError(f"{self.source}: A is not symmetric, so it is no sum of "
                                   f"x̃x̃ᵀ (a damaged or hand-made file?)")
        # More of what every sum of x̃x̃ᵀ and x̃ is: a diagonal of sums of squares, and a
        # bias column (x̃'s last entry is 1) that is b itself. A symmetric edit of A (a
        # negated diagonal entry, A scaled) passed the check above and moved W.
        # (Beyond rounding: a difference of sums, ``(a + b) - a``, may keep a few ulps of
        # the larger sum below zero.)
        tolerance = _SYMMETRY_RTOL * scale
        if np.any(np.diagonal(A) < -tolerance) or np.abs(A[:, -1] - self.b).max(
                initial=0.0) > tolerance:
            raise StatsFormatError(f"{self.source}: A and b are no sums of x̃x̃ᵀ and x̃ (A "
                                   "has a negative diagonal entry, or its bias column is not "
                                   "b): a damaged or hand-made file?")

    def gram(self, embedder: EmbedderLike) -> np.ndarray:
        """``A = Σ x̃x̃ᵀ`` over the domain's tokens, (h+1, h+1), read-only: formed from the
        token counts as ``Ẽᵀ diag(counts) Ẽ`` with ``embedder`` (the one these statistics
        were made with), or the stored one of statistics without counts (see
        :meth:`moments`). Formed once per statistics object, O(nnz·h²), and then kept
        with it.

        Example:
            >>> from ir3de import load_embedder, compute_stats
            >>> emb = load_embedder()
            >>> s = compute_stats(emb, ["What is 2+2?"], domain="math")
            >>> A = s.gram(emb)
            >>> A.shape == (emb.dim + 1, emb.dim + 1), int(A[-1, -1]) == s.n_tokens
            (True, True)
        """
        return self.moments(embedder)[0]

    def moments(self, embedder: EmbedderLike | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(A, b)`` as a ridge router reads them: for statistics with token counts, both
        formed from the exact counts (so statistics merged from shards give a central
        count's to the bit; the stored ``b`` is a float sum), which needs the ``embedder``
        they were made with; the stored ones for statistics without counts. A stored ``b``
        (and a stored ``A``, in files of version 1) must agree with the counts: a file
        edited to disagree is refused here, where the counts are first read against the
        table."""
        if self.counts is None:
            assert self.A is not None  # __post_init__: no A without counts
            return self.A, self.b
        if embedder is None:
            raise IR3DEError(f"{self.source} ({self.domain}) keeps token counts: forming A "
                             "and b from them needs the embedder they were made with")
        embedder = as_embedder(embedder)
        formed = self.__dict__.get("_formed")
        if formed is not None and formed[0] == embedder.fingerprint:
            return formed[1], formed[2]
        if embedder.fingerprint != self.fingerprint:
            theirs, ours = told_apart(self.fingerprint, embedder.fingerprint)
            raise FingerprintMismatchError(
                f"{self.source} ({self.domain}) was made with embedding {theirs}, not "
                f"{embedder.name} ({ours})")
        if self.counts.shape != (embedder.vocab_size,):
            raise StatsFormatError(f"{self.source} ({self.domain}): token counts cover "
                                   f"{self.counts.size} token ids, the embedder's "
                                   f"vocabulary {embedder.vocab_size}")
        A, b = _moments(embedder, self.counts)
        for name, stored, made in (("b", self.b, b), ("A", self.A, A)):
            scale = float(np.abs(made).max(initial=0.0))
            if stored is not None and np.abs(stored - made).max(initial=0.0) \
                    > _SYMMETRY_RTOL * scale:
                raise StatsFormatError(f"{self.source} ({self.domain}): {name} disagrees with "
                                       f"the token counts it is a sum over (a damaged or "
                                       "hand-made file?)")
        A.flags.writeable = b.flags.writeable = False
        # Kept with the object (frozen: its one cache, not a field): a router re-solves
        # on every add and remove, and forming A costs O(nnz·h²).
        object.__setattr__(self, "_formed", (embedder.fingerprint, A, b))
        return A, b

    def __getstate__(self) -> dict[str, Any]:
        # A pickle (a router sent to worker processes) leaves out an A formed from the
        # counts: (h+1)² floats, formed again where it is needed.
        return {k: v for k, v in self.__dict__.items() if k != "_formed"}

    @property
    def format_version(self) -> int:
        """The statistics file version these statistics are saved in: 1 with ``A``, else 2."""
        return 1 if self.A is not None else 2

    def __repr__(self) -> str:
        # The generated repr printed every array (kilobytes): a summary says what they are.
        pairs = "None" if self.pairs is None else str(self.pairs.keys.size)
        tfidf = "" if self.tfidf is None else f", tfidf_buckets={self.tfidf.buckets}"
        signed = "" if self.signature is None else ", signed"
        return (f"DomainStats(domain={self.domain!r}, n_prompts={self.n_prompts}, "
                f"n_tokens={self.n_tokens}, h={self.b.shape[0] - 1}, pairs={pairs}{tfidf}, "
                f"fingerprint={self.fingerprint[:12]!r}, source={self.source!r}{signed})")

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Unpickled arrays (joblib's workers, a copy.deepcopy) come back writable: frozen
        # again, as __post_init__ froze them.
        self.__dict__.update(state)
        self._freeze_arrays()

    def _freeze_arrays(self) -> None:
        # Read-only views: routers keep statistics by reference, and an array changed in
        # place afterwards would break both the checks above and the promise that removing
        # an expert gives back the router a refit gives. Views, not copies: pair tables can
        # be large, and the caller's own arrays stay as they were.
        def frozen(a: np.ndarray) -> np.ndarray:
            if not a.flags.writeable:  # derived statistics share their source's arrays
                return a
            view = a.view()
            view.flags.writeable = False
            return view

        for name in ("A", "b", "counts", "doc_counts"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, frozen(value))  # frozen: set once, here
        if self.pairs is not None:
            object.__setattr__(self, "pairs", PairCounts(*map(frozen, self.pairs)))
        if self.tfidf is not None:
            object.__setattr__(self, "tfidf", TfidfCounts(*map(frozen, self.tfidf)))

    def _check_array_types(self) -> None:
        # Lists or object arrays would fail deep inside numpy (no .ndim, isfinite on
        # objects): refuse them here, naming the field.
        arrays = {"b": self.b, "A": self.A, "counts": self.counts,
                  "doc_counts": self.doc_counts}
        if self.pairs is not None:
            if not isinstance(self.pairs, tuple) or len(self.pairs) != 2:
                raise StatsFormatError(f"{self.source}: pairs must be a PairCounts(keys, "
                                       f"counts), got {type(self.pairs).__name__}")
            arrays["pair_keys"], arrays["pair_counts"] = self.pairs
        if self.tfidf is not None:
            if not isinstance(self.tfidf, tuple) or len(self.tfidf) != 3:
                raise StatsFormatError(f"{self.source}: tfidf must be a TfidfCounts(df, keys, "
                                       f"values), got {type(self.tfidf).__name__}")
            arrays["tfidf_df"], arrays["tfidf_keys"], arrays["tfidf_values"] = self.tfidf
        for name, value in arrays.items():
            # Counts are integers: saved as int64, floats would be truncated unseen.
            kinds, what = ("iuf", "numbers") if name in ("A", "b") else ("iu", "integers")
            if (value is not None or name == "b") and not (
                    isinstance(value, np.ndarray) and value.dtype.kind in kinds):
                got = f"array of {value.dtype}" if isinstance(value, np.ndarray) \
                    else type(value).__name__
                raise StatsFormatError(f"{self.source}: {name} must be a numpy array of "
                                       f"{what}, got {got}")

    def _check_doc_counts(self, df: np.ndarray) -> None:
        # A token occurs in a prompt at least once and in at most every prompt: document
        # frequencies bounded by the token counts and the prompt count, zero exactly where
        # the counts are, catch files whose arrays do not belong together.
        c = self.counts
        if c is not None and df.shape != c.shape:
            raise StatsFormatError(f"{self.source}: doc_counts has shape {df.shape} but "
                                   f"counts {c.shape}: one entry per token id each")
        if c is None or np.any(df < 0) or np.any(df > c) \
                or np.any(df > self.n_prompts) or np.any((df > 0) != (c > 0)):
            raise StatsFormatError(f"{self.source}: document frequencies disagree with the "
                                   f"token counts and n_prompts={self.n_prompts}")

    def _check_pairs(self, pairs: PairCounts) -> None:
        # Every occurrence of a token closes exactly one adjacent pair and one skip pair, so
        # the pairs of each kind that end in t exist exactly where t's document frequency is
        # positive and their frequencies sum to at least it; a pair's frequency is bounded
        # by both of its tokens'. (A table counted without skip pairs holds none.)
        keys, counts = pairs
        df = self.doc_counts
        if df is None:
            raise StatsFormatError(f"{self.source}: token-pair frequencies without the "
                                   "document frequencies (doc_counts) they are checked "
                                   "against and read with")
        fail = keys.ndim != 1 or keys.shape != counts.shape \
            or keys.dtype != np.int64 or counts.dtype != np.int64
        if not fail:
            base = df.size + 1
            fail = bool(np.any(keys < 0) or np.any(keys >= 2 * base * base)
                        or np.any(np.diff(keys) <= 0) or np.any(counts <= 0))
            for kind in split_pairs(pairs, df.size) if not fail else ():
                if fail or kind is None:
                    continue
                prev, last = np.divmod(kind.keys, base)
                fail = bool(np.any(last >= df.size) or np.any(kind.counts > df[last])
                            or np.any(kind.counts > _prev_bound(prev, df, self.n_prompts)))
                if not fail:
                    ending = np.bincount(last, weights=kind.counts, minlength=df.size)
                    fail = bool(np.any(ending < df) or np.any((ending > 0) != (df > 0)))
        if fail and keys.ndim == 1 and keys.size and keys.dtype == np.int64 \
                and keys.min() >= 0 and np.all(np.diff(keys) > 0):
            # Every prompt's first pairs start at the start id V, the largest first id, so
            # the largest key tells the vocabulary the keys encode: a token table of another
            # length is the problem to name then (keys out of order or repeated are damage
            # of their own, whatever their largest).
            largest = int(keys.max())
            vocabularies = _key_vocabularies(largest)
            if df.size not in vocabularies:
                raise StatsFormatError(f"{self.source}: the largest token-pair key, "
                                       f"{largest}, is one of a vocabulary of "
                                       f"{vocabularies[0]} ids, but doc_counts has "
                                       f"{df.size} entries, one per token id")
        if fail:
            raise StatsFormatError(f"{self.source}: token-pair frequencies disagree with the "
                                   "document frequencies (keys must be sorted, distinct and "
                                   "inside the vocabulary, counts positive)")

    def _check_tfidf(self, tfidf: TfidfCounts) -> None:
        # What every sum of g̃g̃ᵀ over n prompts is: bucket frequencies within [0, n], keys
        # of the upper triangle, sorted and distinct, a positive diagonal (sums of squares)
        # and a bias entry of exactly n units; and int64 sums of at most 2**31 prompts.
        df, keys, values = tfidf
        B = df.size
        fail = not (df.ndim == keys.ndim == values.ndim == 1 and 1 <= B <= MAX_BUCKETS
                    and keys.shape == values.shape
                    and all(a.dtype == np.int64 for a in tfidf))
        if not fail:
            row, col = np.divmod(keys, B + 1)
            diagonal = row == col
            bias = np.searchsorted(keys, B * (B + 1) + B)
            fail = bool(np.any(df < 0) or np.any(df > self.n_prompts)
                        or np.any(keys < 0) or np.any(row > B) or np.any(row > col)
                        or np.any(np.diff(keys) <= 0) or np.any(values == 0)
                        or np.any(values[diagonal] < 0)
                        or (self.n_prompts > 0 and (bias >= keys.size
                                                    or values[bias] != self.n_prompts * UNIT)))
        if fail:
            raise StatsFormatError(f"{self.source}: TF-IDF statistics are no sums over "
                                   f"{self.n_prompts} prompts (bucket frequencies within "
                                   "[0, n_prompts], sorted distinct upper-triangle keys, a "
                                   "positive diagonal, a bias entry of n_prompts units)")
        if self.n_prompts > MAX_PROMPTS:
            raise StatsFormatError(f"{self.source}: TF-IDF statistics of {self.n_prompts} "
                                   f"prompts; their int64 sums hold at most {MAX_PROMPTS}")

    @property
    def dim(self) -> int:
        """Embedding width h."""
        return int(self.b.shape[0] - 1)

    @property
    def skip_pairs(self) -> PairCounts | None:
        """The skip-pair part of the pair table (the id two places back, id: counted with
        ``compute_stats(skip_pairs=True)`` or ``ir3de stats --skip-pairs``, read by the
        ``skips`` preset), keyed as :func:`split_pairs` gives it; None without a pair table
        or when the table holds adjacent pairs only. An empty table lacks none: its empty
        skip part is returned.

        >>> from ir3de import compute_stats, load_embedder
        >>> emb = load_embedder()
        >>> compute_stats(emb, ["a b c"], domain="d").skip_pairs is None
        True
        >>> compute_stats(emb, ["a b c"], domain="d", skip_pairs=True).skip_pairs is None
        False
        """
        if self.pairs is None:
            return None
        assert self.doc_counts is not None  # (the pair table is checked against them)
        return split_pairs(self.pairs, self.doc_counts.size)[1]

    @cached_property
    def _content(self) -> bytes:
        """A digest of what these statistics counted, whatever their name, file, signature
        or pair table: the token and prompt counts, the cap and the token-id histogram
        (exact integers, equal for one corpus counted twice, merged from its shards, or
        counted with and without pairs), or ``A`` and ``b`` for statistics without a
        histogram. Computed once per object (a router keeps its experts' statistics).
        The pair table has its own digest, :attr:`_pair_content`."""
        arrays = [(self.counts, "<i8")] if self.counts is not None \
            else [(np.asarray(self.A), "<f8"), (self.b, "<f8")]
        return _digest((self.n_tokens, self.n_prompts, self.max_tokens, self.fingerprint,
                        self.counts is None), arrays)

    @cached_property
    def _pair_content(self) -> bytes | None:
        """A digest of the token-pair table (None without one): corpora with the same
        tokens in another order have the same :attr:`_content` but not the same pairs."""
        if self.pairs is None:
            return None
        return _digest((), [(self.pairs.keys, "<i8"), (self.pairs.counts, "<i8")])

    def _combine(self, other: DomainStats, sign: int) -> DomainStats:
        if not isinstance(other, DomainStats):
            return NotImplemented
        check_same_embedder([self, other])
        if other.domain != self.domain:
            raise ExpertError(f"cannot combine statistics of domain {self.domain!r} "
                              f"({self.source}) with {other.domain!r} ({other.source})")
        check_same_max_tokens([self, other])
        _check_counts_or_gram([self, other])
        _check_same_pairs([self, other])
        _check_same_tfidf([self, other])
        self._check_same_lengths(other)
        n_tokens = self.n_tokens + sign * other.n_tokens
        n_prompts = self.n_prompts + sign * other.n_prompts
        counts = doc_counts = pairs = tfidf = None
        if self.tfidf is not None and other.tfidf is not None:
            tfidf = sum_counts([self.tfidf, other.tfidf], [1, sign])
        if self.counts is not None and other.counts is not None:
            counts = self.counts + sign * other.counts
            if self.doc_counts is not None and other.doc_counts is not None:
                doc_counts = self.doc_counts + sign * other.doc_counts
                if self.pairs is not None and other.pairs is not None:
                    pairs = sum_pairs(np.concatenate([self.pairs.keys, other.pairs.keys]),
                                       np.concatenate([self.pairs.counts,
                                                       sign * other.pairs.counts]))
        A = None if counts is not None else self._summed_gram(other, sign)
        if sign < 0:
            self._check_subtracted(other, A, [n_tokens, n_prompts, counts, doc_counts,
                                              None if pairs is None else pairs.counts,
                                              None if tfidf is None else tfidf.df])
        try:
            combined = replace(self, A=A, b=self.b + sign * other.b, n_tokens=n_tokens,
                               n_prompts=n_prompts, source="<combined>", signature=None,
                               counts=counts, doc_counts=doc_counts, pairs=pairs, tfidf=tfidf)
        except StatsFormatError as exc:
            if sign > 0:  # past 2**53 tokens, the one way parts that load sum to invalid
                raise StatsFormatError(f"adding {other.source} to {self.source}: "
                                       f"{exc}") from None
            # The difference of valid statistics and a part of them is the valid rest: counts
            # that disagree are as sure a sign of a stranger as negative ones.
            raise StatsFormatError(f"subtracting {other.source} from {self.source} leaves "
                                   f"counts that disagree ({exc}): it was never part of "
                                   "them") from None
        if any(s.signature or s.signature_dropped for s in (self, other)):
            combined._note_dropped("it was combined (+, -, sum or merge) from signed "
                                   "statistics")
        if sign > 0:
            object.__setattr__(combined, "_parts", self._parts | other._parts)
        elif other._parts <= self._parts:
            # What was summed in comes off again; a difference from anything else (a shard
            # of a central count) is a shard of its own, as it got in __post_init__.
            object.__setattr__(combined, "_parts", self._parts - other._parts)
        return combined

    def _summed_gram(self, other: DomainStats, sign: int) -> np.ndarray:
        """``A`` of the combination of statistics of which at least one has no counts, so
        the result has none either: the sum of both ``A`` (both carry one, see
        :func:`_check_counts_or_gram`)."""
        assert self.A is not None and other.A is not None
        return self.A + sign * other.A

    def _unsigned(self, why: str, **changes: Any) -> DomainStats:
        """``replace(self, **changes)`` without the signature, noting ``why`` it was dropped
        when these statistics had one (or came from ones that had). Renamed or stripped of
        their pairs, they are still summed from the same shards."""
        derived = replace(self, signature=None, **changes)
        object.__setattr__(derived, "_parts", self._parts)  # frozen: set once, when derived
        if self.signature or self.signature_dropped:
            derived._note_dropped(why)
        return derived

    def _note_dropped(self, why: str) -> None:
        object.__setattr__(self, "signature_dropped", why)  # frozen: set once, when derived

    def _check_same_lengths(self, other: DomainStats) -> None:
        """Refuse arrays of different shapes (hand-made or damaged statistics under one
        fingerprint): numpy would fail to broadcast them, naming neither file."""
        shapes = [(name, getattr(self, name), getattr(other, name))
                  for name in ("counts", "doc_counts", "A", "b")]
        differ = [f"{name} {_shape(x)} vs {_shape(y)}" for name, x, y in shapes
                  if x is not None and y is not None and x.shape != y.shape]
        if differ:
            raise StatsFormatError(f"cannot combine {self.source} ({self.domain}) with "
                                   f"{other.source}: their arrays differ in length "
                                   f"({'; '.join(differ)}); statistics of one embedder "
                                   "have one vocabulary and one width")

    def _check_subtracted(self, other: DomainStats, A: np.ndarray | None,
                          counts: list[int | np.ndarray | None]) -> None:
        """Refuse a difference that could not come from removing a part: a negative count
        (exact integers), or, what is left to tell when there are no counts, a negative
        diagonal of ``A`` (sums of squares) beyond the rounding of the sums. b's bias entry
        is the token count, checked with it."""
        if any(c is not None and np.any(c < 0) for c in counts):
            what = "negative counts"
        elif A is not None and self.A is not None and other.A is not None and np.any(
                np.diagonal(A) < -_SUBTRACT_RTOL * (np.abs(np.diagonal(self.A))
                                                    + np.abs(np.diagonal(other.A)))):
            what = "a negative diagonal in A"
        else:
            return
        raise StatsFormatError(f"subtracting {other.source} from {self.source} leaves {what}: "
                               "it was never part of them")

    def __add__(self, other: DomainStats) -> DomainStats:
        """The statistics of both corpora (same domain, embedder and token cap; both with
        or both without pair counts). Counts are summed exactly; ``b`` (and ``A`` when
        there are no counts) in floating point. Token, document and pair counts are kept
        only where both sides have them.
        The result carries no signature and no file (``source`` is ``"<combined>"``).

        A sum remembers the shard objects it was summed from, so a shard object summed in
        twice is refused, as :func:`merge` refuses a shard given twice: ``stats + stats``,
        ``sum([a, b, a])``, ``(a + b) + (a + c)``. What was subtracted (the same object) may
        be added again: ``a + b - b + b``. Unlike :func:`merge`, ``+`` and ``sum`` cannot
        tell a *copy* from other data (one file loaded twice, the same corpus counted
        twice: equal counts in another object); :func:`merge` refuses those too and is the
        checked way to sum shards."""
        if other is self:
            raise IR3DEError(f"{self.source} ({self.domain}) is added to itself; it would be "
                             "counted twice")
        if isinstance(other, DomainStats) and self._parts & other._parts:
            raise IR3DEError(f"{other.source} ({other.domain}) and {self.source} both hold "
                             "one shard's statistics (summed into them with + or sum); it "
                             "would be counted twice (merge refuses the same)")
        return self._combine(other, +1)

    def __radd__(self, other: object) -> DomainStats:
        """``0 + stats`` is ``stats``: what ``sum(shards)`` starts with."""
        if isinstance(other, int) and not isinstance(other, bool) and other == 0:
            return self
        return NotImplemented

    def __sub__(self, other: DomainStats) -> DomainStats:
        """These statistics without ``other``'s corpus, which must have been part of them.

        What proves it was not is refused: with token-id counts on both sides, any count
        (tokens, prompts, token ids, document or pair frequencies) going negative or out of
        agreement with the others; without them, the token or prompt count or a diagonal
        entry of ``A`` (a sum of squares) going negative beyond rounding. A stranger that
        fits inside these statistics cannot be told from a part and is accepted: with
        counts, one whose counts all fit within these; without, also one whose every
        coordinate's sum of squares stays below these statistics' own (the difference is
        then the statistics of no corpus; its ``A`` need not be positive semi-definite).
        """
        return self._combine(other, -1)

    def renamed(self, domain: str) -> DomainStats:
        """The same statistics under another domain name."""
        return self._unsigned(f"it was renamed from {self.domain!r} to {domain!r}",
                              domain=domain)

    def metadata(self) -> dict[str, Any]:
        """The JSON metadata saved with the arrays (without the signature)."""
        return {
            "format": STATS_FORMAT, "version": self.format_version, "domain": self.domain,
            "n_tokens": self.n_tokens, "n_prompts": self.n_prompts, "dim": self.dim,
            "max_tokens": self.max_tokens, "fingerprint": self.fingerprint,
            "embedder": self.embedder,
        }

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = True) -> None:
        """Write a safetensors file with JSON metadata, atomically; with
        ``overwrite=False`` an existing file (also one created meanwhile by another
        process) is left as it is: :class:`~ir3de.errors.OutputExistsError`."""
        require_path(path, "DomainStats.save")
        meta = self.metadata()
        if self.signature:
            meta["signature"] = self.signature
        tensors = {"b": self.b} if self.A is None else {"A": self.A, "b": self.b}
        if self.counts is not None:
            tensors["counts"] = np.asarray(self.counts, dtype=np.int64)
        if self.doc_counts is not None:
            tensors["doc_counts"] = np.asarray(self.doc_counts, dtype=np.int64)
        if self.pairs is not None:
            tensors["pair_keys"], tensors["pair_counts"] = self.pairs
        if self.tfidf is not None:
            tensors.update(zip(_TFIDF_TENSORS, self.tfidf, strict=True))
        write_safetensors(path, tensors, meta, overwrite=overwrite, depth=STATS_DEPTH)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> DomainStats:
        """Read and validate a statistics file (shapes, finiteness, counts, format)."""
        require_path(path, "DomainStats.load")
        tensors, meta = read_safetensors(path, depth=STATS_DEPTH)
        where = str(path)
        if meta.get("format") != STATS_FORMAT:
            raise StatsFormatError(f"{where}: not an ir3de statistics file "
                                   f"(format {meta.get('format')!r})")
        version = meta_version(meta, _STATS_VERSIONS, where, "statistics")
        # Version 1 holds A; version 2 holds the counts A is formed from, and no A.
        missing = ({"A", "b"} if version == 1 else {"b", "counts"}) - tensors.keys()
        if missing:
            raise StatsFormatError(f"{where}: missing tensor(s) {sorted(missing)}")
        if version == 2 and "A" in tensors:
            raise StatsFormatError(f"{where}: a version 2 statistics file holds no A (it is "
                                   "formed from the token counts)")
        try:
            fields = {k: meta[k] for k in ("domain", "n_tokens", "n_prompts", "fingerprint",
                                           "embedder", "max_tokens", "dim")}
        except KeyError as exc:
            raise StatsFormatError(f"{where}: metadata lacks {exc}") from None
        for key, minimum in (("n_tokens", 0), ("n_prompts", 0), ("max_tokens", 1), ("dim", 1)):
            fields[key] = meta_int(fields[key], minimum, where, key)
        if not isinstance(fields["fingerprint"], str) or not fields["fingerprint"]:
            raise StatsFormatError(f"{where}: metadata field 'fingerprint' must be a non-empty "
                                   f"string, got {fields['fingerprint']!r}")
        if not is_recipe(fields["embedder"]):
            # (as Router.load checks an expert's: one this let through, a router saved
            # with it could not be loaded again)
            raise StatsFormatError(f"{where}: metadata field 'embedder' must be an embedder "
                                   f"recipe (an object with a string 'kind'), got "
                                   f"{fields['embedder']!r}")
        A = tensors["A"].astype(np.float64) if version == 1 else None
        b = tensors["b"].astype(np.float64)
        if b.shape != (fields["dim"] + 1,):
            raise StatsFormatError(f"{where}: b has shape {b.shape} but dim is {fields['dim']}")
        # Checked here as Router.load checks an expert's: a list, say, loaded, and a router
        # saved with it could not be loaded again (``ir3de experts add`` broke it in place).
        check_signature(meta.get("signature"), where)
        return cls(domain=fields["domain"], A=A, b=b, n_tokens=int(fields["n_tokens"]),
                   n_prompts=int(fields["n_prompts"]), fingerprint=fields["fingerprint"],
                   embedder=fields["embedder"], max_tokens=int(fields["max_tokens"]),
                   source=where, signature=meta.get("signature"),
                   counts=int_tensor(tensors, "counts", where),
                   doc_counts=int_tensor(tensors, "doc_counts", where),
                   pairs=_pair_tensors(tensors, where), tfidf=_tfidf_tensors(tensors, where))


def _digest(head: tuple[object, ...], arrays: list[tuple[np.ndarray, str]]) -> bytes:
    """SHA-256 of ``head`` (its repr) and each array's shape and bytes as ``dtype``."""
    digest = hashlib.sha256(repr(head).encode())
    for array, dtype in arrays:
        array = np.ascontiguousarray(array, dtype=dtype)
        digest.update(repr(array.shape).encode())
        digest.update(array.data)
    return digest.digest()


def _shape(array: np.ndarray) -> str:
    """A 1-D array's length, else its shape, for error messages."""
    return f"{array.size} entries" if array.ndim == 1 else str(array.shape)


def _key_vocabularies(largest: int) -> list[int]:
    """The vocabulary sizes V for which ``largest`` is the largest key of a pair table: the
    skip pair (V, id < V), ``(V + 1)**2 + V (V + 1) + id``, where that fits, then the
    adjacent pair (V, id), ``V (V + 1) + id``, of a table without skip pairs."""
    skip = (math.isqrt(8 * largest + 1) - 3) // 4  # 2V² + 3V + 1 ≤ largest ≤ 2V² + 4V
    found = [skip] if skip > 0 and 2 * skip * skip + 3 * skip + 1 <= largest \
        <= 2 * skip * skip + 4 * skip else []
    return [*found, math.isqrt(largest)]


def _prev_bound(prev: np.ndarray, df: np.ndarray, n_prompts: int) -> np.ndarray:
    """A pair's bound from its first token: that token's document frequency, or the prompt
    count for the start-of-prompt id."""
    return np.where(prev < df.size, df[np.minimum(prev, df.size - 1)], n_prompts)


def int_tensor(tensors: dict[str, np.ndarray], name: str, where: str) -> np.ndarray | None:
    """A count tensor of a file as int64 (None if absent). Counts are saved as integers:
    floats would be truncated by the cast, so they are refused, whatever their values."""
    if name not in tensors:
        return None
    tensor = tensors[name]
    if tensor.dtype.kind not in "iu":
        raise StatsFormatError(f"{where}: tensor {name!r} holds {tensor.dtype} values; "
                               "counts must be stored as integers")
    return tensor.astype(np.int64)


def _pair_tensors(tensors: dict[str, np.ndarray], where: str) -> PairCounts | None:
    keys, counts = (int_tensor(tensors, name, where) for name in ("pair_keys", "pair_counts"))
    if keys is None and counts is None:
        return None
    if keys is None or counts is None:
        raise StatsFormatError(f"{where}: holds only one of the tensors pair_keys and "
                               "pair_counts")
    return PairCounts(keys, counts)


_TFIDF_TENSORS = ("tfidf_df", "tfidf_keys", "tfidf_values")


def _tfidf_tensors(tensors: dict[str, np.ndarray], where: str) -> TfidfCounts | None:
    arrays = [int_tensor(tensors, name, where) for name in _TFIDF_TENSORS]
    if all(a is None for a in arrays):
        return None
    if any(a is None for a in arrays):
        raise StatsFormatError(f"{where}: holds only some of the tensors "
                               f"{', '.join(_TFIDF_TENSORS)}")
    return TfidfCounts(*arrays)  # type: ignore[arg-type]


# Alphabets whose letters look alike (Latin a, Cyrillic U+0430, Greek alpha): one name may
# not mix them. Other mixes (Latin with Han, Hangul or Kana) are how names are written in
# those languages.
_CONFUSABLE_SCRIPTS = frozenset({"LATIN", "GREEK", "CYRILLIC"})


def domain_name_problem(name: object, *, legacy: bool = False) -> str | None:
    """Why ``name`` cannot name a domain or an expert, or None. A name is a non-empty string
    without surrounding whitespace (a client sending it as its ``model`` would have to match
    it exactly), control characters (a newline or tab would break every line- and
    tab-separated listing of experts, log lines and HTTP headers naming them, and routes:
    ``DELETE /admin/experts/a%0Ab`` finds nothing), invisible format characters (but for
    the zero-width joiners of Persian, Indic and emoji spellings) or lone surrogates,
    written in Unicode's composed form (NFC), so that two experts never look the same:
    ``"café"`` typed with a combining accent is another string; for the same reason
    without compatibility characters (NFKC: full-width letters, ligatures) and without
    mixing Latin, Greek and Cyrillic letters (``math`` with a Cyrillic ``a``, U+0430). A
    name wholly in one of those alphabets may still resemble one in another (Cyrillic
    U+0441 U+043E U+0440 and Latin ``cop``): only a full confusables table would tell.
    ``legacy`` skips the rules after the control characters, which earlier versions of
    ir3de did not apply: files and gateway state they wrote still load, so that such an
    expert can be removed or renamed (a new name is checked in full).

    >>> domain_name_problem("math") is None
    True
    >>> domain_name_problem("cafe\u0301")
    "is not in Unicode's composed form (NFC): write it as 'café'"
    >>> domain_name_problem("m\u0430th")
    'mixes Cyrillic and Latin letters (U+0430 is Cyrillic): such a name can pass for another'
    """
    if not isinstance(name, str):
        return f"must be a string, not {type(name).__name__}"
    if not name.strip() or name != name.strip():
        return "must be non-empty, without surrounding whitespace"
    for i, c in enumerate(name):
        what = _REFUSED_CATEGORIES.get(unicodedata.category(c))
        if legacy and what in _LEGACY_CATEGORIES:
            continue
        if c in _JOINERS and i > 0 and not name[i - 1].isascii():
            continue  # a joiner inside Persian, Indic or emoji text
        if what is not None:
            return f"holds {what} (U+{ord(c):04X})"
    if legacy:
        return None
    composed = unicodedata.normalize("NFC", name)
    if composed != name:
        return f"is not in Unicode's composed form (NFC): write it as {composed!r}"
    plain = unicodedata.normalize("NFKC", name)
    if plain != name:  # full-width letters (U+FF41...), ligatures: they pass for others
        return f"holds compatibility characters (full-width letters, ligatures...): write " \
               f"it as {plain!r}"
    scripts: dict[str, str] = {}  # each confusable alphabet of the name: its first letter
    for c in name:
        script = unicodedata.name(c, "").split(" ", 1)[0] if c.isalpha() else ""
        if script in _CONFUSABLE_SCRIPTS:
            scripts.setdefault(script, c)
    if len(scripts) > 1:  # "math" with a Cyrillic a (U+0430) passes for the Latin one
        alphabets = " and ".join(sorted(s.title() for s in scripts))
        odd = ", ".join(f"U+{ord(c):04X} is {s.title()}" for s, c in list(scripts.items())[1:])
        return f"mixes {alphabets} letters ({odd}): such a name can pass for another"
    return None


def validate_domain_name(name: object, where: str = "<memory>", *,
                         legacy: bool = False) -> None:
    """Raise :class:`ExpertError` naming ``where`` unless ``name`` can name a domain
    (:func:`domain_name_problem`; ``legacy`` for a name read from a file)."""
    problem = domain_name_problem(name, legacy=legacy)
    if problem is not None:
        raise ExpertError(f"{where}: invalid domain name {name!r}: it {problem}")


def check_signature(value: object, where: str, name: str = "signature") -> None:
    """Raise :class:`StatsFormatError` naming ``where`` and the metadata field ``name``
    unless ``value`` can be the signature metadata of statistics, or of a router's expert:
    absent (None) or an object, as :func:`ir3de.signing.sign` writes it. What the object
    holds (algorithm, key, signature) is checked by :func:`ir3de.signing.verify`, which
    says what is wrong with it; a file nobody verifies still loads and routes."""
    if value is not None and not isinstance(value, dict):
        raise StatsFormatError(f"{where}: metadata field {name!r} must be an object (with "
                               "alg, public_key and signature, as ir3de signs files), got "
                               f"{reprlib.repr(value)}")


def check_same_embedder(items: Iterable[DomainStats]) -> None:
    """Raise :class:`FingerprintMismatchError` naming the files that disagree."""
    items = list(items)
    if not items:
        return
    first = items[0]
    for other in items[1:]:
        if other.fingerprint != first.fingerprint:
            one, two = told_apart(first.fingerprint, other.fingerprint)
            raise FingerprintMismatchError(
                f"embedding fingerprints differ: {first.source} ({first.domain}) was made with "
                f"{one} but {other.source} ({other.domain}) with "
                f"{two}; statistics must come from the same embedder")


def meta_version(meta: dict[str, Any], versions: tuple[int, ...], where: str,
                 kind: str) -> int:
    """The format version of a statistics or router file (``kind``), one of ``versions``,
    else a :class:`StatsFormatError` saying which this ir3de reads. Only an integer: "2"
    or 2.0 is no version this code wrote."""
    version = meta.get("version")
    if type(version) is not int or version not in versions:
        raise StatsFormatError(f"{where}: {kind} format version {version!r} is not supported "
                               f"(this ir3de reads {' and '.join(map(str, versions))})")
    return version


def meta_int(value: Any, minimum: int, where: str, name: str) -> int:
    """A metadata integer ≥ ``minimum`` of a statistics or router file, else a
    :class:`StatsFormatError` naming the field: hand-edited or corrupt metadata should say
    which field is wrong, not ``int()``'s complaint. JSON may hold it as 3.0; a bool, a
    string, NaN or Infinity is refused."""
    integral = (isinstance(value, int) and not isinstance(value, bool)) or (
        isinstance(value, float) and value.is_integer())
    if not integral or not minimum <= value <= _META_INT_MAX:
        raise StatsFormatError(f"{where}: metadata field {name!r} must be an integer "
                               f"from {minimum} to 2**53, got {value!r}")
    return int(value)


def check_same_max_tokens(items: Iterable[DomainStats]) -> None:
    """Raise :class:`StatsFormatError` naming the files whose token caps differ.

    Statistics counted with different ``max_tokens`` saw different parts of long prompts:
    summed (merge) or set side by side (one router) they would weigh those parts unevenly.
    """
    items = list(items)
    for other in items[1:]:
        if other.max_tokens != items[0].max_tokens:
            first = items[0]
            raise StatsFormatError(
                f"token caps differ: {first.source} ({first.domain}) caps prompts at "
                f"{first.max_tokens} tokens but {other.source} ({other.domain}) at "
                f"{other.max_tokens}; count them again with the same cap "
                f"(ir3de stats --max-tokens, compute_stats(max_tokens=...))")


def _check_counts_or_gram(items: list[DomainStats]) -> None:
    """Statistics without token counts can be summed only with others that carry ``A`` (a
    sum keeps counts only where every part has them): refuse, naming one of each, before
    any other difference is reported (a missing pair table, the first to show, is the
    lesser one)."""
    counted = [s for s in items if s.A is None]
    uncounted = [s for s in items if s.counts is None]
    if counted and uncounted:
        x, y = counted[0], uncounted[0]
        raise StatsFormatError(
            f"cannot combine {x.source} ({x.domain}), which keeps token counts and no A, "
            f"with {y.source}, which keeps A and no token counts (made by streaming_stats or "
            f"an older ir3de): count {y.source}'s corpus again with compute_stats (ir3de "
            "stats)")


def _refuse_mixed(items: list[DomainStats], lacks: Callable[[DomainStats], bool],
                  lacking: str) -> None:
    """Shards with and without an optional table (``lacks`` tells those without) cannot be
    summed into statistics with it; summing them without would drop every shard's table
    unseen, so it is refused, naming the shards without it (``lacking``: what they lack and
    the ways out)."""
    without = [s.source for s in items if lacks(s)]
    if without and len(without) < len(items):
        raise StatsFormatError(f"{', '.join(without)}: {lacking}")


def _check_same_pairs(items: list[DomainStats]) -> None:
    _refuse_mixed(items, lambda s: s.pairs is None,
                  "no token-pair counts (made with ir3de stats --no-pairs, or by an ir3de "
                  "before pairs were counted), but the other shard(s) have them; count them "
                  "again without --no-pairs, or drop the pairs of every shard (ir3de merge "
                  "--no-pairs; merge(..., drop_pairs=True))")
    # A sum of tables with and without skip pairs would hold some prompts' skip pairs only.
    _refuse_mixed([s for s in items if s.pairs is not None], lambda s: s.skip_pairs is None,
                  "token-pair counts without skip pairs (counted without ir3de stats "
                  "--skip-pairs), but the other shard(s) have them; count them again with "
                  "--skip-pairs, or drop the pairs of every shard (ir3de merge --no-pairs; "
                  "merge(..., drop_pairs=True))")


def _check_same_tfidf(items: list[DomainStats]) -> None:
    _refuse_mixed(items, lambda s: s.tfidf is None,
                  "no TF-IDF statistics, but the other shard(s) have them; count them again "
                  "with the same --tfidf-buckets, or leave them out of the sum (merge "
                  "--no-tfidf, drop_tfidf=True)")
    check_same_buckets([s.tfidf for s in items], "the shards'")


def _max_tokens(max_tokens: object) -> int:
    """``max_tokens`` as a plain int, checked before any text is read: a bool is no cap and a
    numpy integer would not survive the JSON metadata of a saved file."""
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, (int, np.integer)) \
            or not 0 < max_tokens <= _META_INT_MAX:
        # (above 2**53 the statistics would save to a file their loader refuses)
        raise IR3DEError(f"max_tokens must be a positive integer of at most 2**53, got "
                         f"{max_tokens!r}")
    return int(max_tokens)


def _nonblank(texts: Iterable[str],
              positions: Sequence[int] | None) -> Iterator[tuple[int, str]]:
    """The texts that are not blank (whitespace-only records carry no domain signal), each
    with its position (its index in ``texts``, or ``positions[index]``: what errors name),
    checked as it streams by: the corpus may be a generator too large to list."""
    for i, text in enumerate(texts):
        if positions is not None and i >= len(positions):
            raise IR3DEError(f"positions covers the first {len(positions)} text(s) only; "
                             "it needs one entry per text")
        n = i if positions is None else positions[i]
        if not isinstance(text, str):
            raise IR3DEError(f"text #{n} is of type {type(text).__name__}, not a string")
        if not is_blank(text):
            yield n, text


def _batches(texts: Iterable[str], positions: Sequence[int] | None,
             size: int) -> Iterator[tuple[tuple[int, ...], tuple[str, ...]]]:
    """The non-blank texts in batches of ``size``, with their positions (see _nonblank):
    errors in a later batch name the text's place in the caller's sequence."""
    it = _nonblank(texts, positions)
    while batch := list(islice(it, size)):
        where, chunk = zip(*batch, strict=True)
        yield where, chunk


class TokenCounts(NamedTuple):
    """What one counting pass yields: the token-id histogram, per id the number of prompts
    it occurs in (both int64, length vocab), the prompt count, the document frequencies
    of adjacent token pairs and, when asked for, the TF-IDF statistics."""

    counts: np.ndarray
    doc_counts: np.ndarray
    n_prompts: int
    pairs: PairCounts
    tfidf: TfidfCounts | None = None


def _distinct_per_prompt(ids: list[np.ndarray], vocab_size: int, skip_pairs: bool = False
                         ) -> tuple[np.ndarray, np.ndarray]:
    """The token ids and the pair keys (adjacent, and skip pairs with ``skip_pairs``) of a
    batch of prompts, each prompt's distinct ones once (concatenated over the prompts: their
    bincount / pair count is a document frequency)."""
    lengths = np.array([x.size for x in ids], dtype=np.int64)
    if not lengths.any():
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    flat = np.concatenate(ids).astype(np.int64)
    starts = np.cumsum(lengths) - lengths
    prompt = np.repeat(np.arange(lengths.size, dtype=np.int64), lengths)
    # One sort per batch, the prompt's index above every id or key (a batch holds at most
    # _BATCH prompts, so the product stays far inside int64 for any real vocabulary), and a
    # run mask: both several times faster than np.unique per prompt.
    doc_ids = _distinct(prompt * vocab_size + flat) % vocab_size
    offset = np.int64(vocab_size + 1) ** 2
    starts = starts[lengths > 0]
    keys = _flat_pair_keys(flat, starts, vocab_size)
    if skip_pairs:
        keys = np.concatenate([keys, _flat_pair_keys(flat, starts, vocab_size, 2) + offset])
        prompt = np.concatenate([prompt, prompt])
    span = 2 * offset if skip_pairs else offset
    return doc_ids, _distinct(prompt * span + keys) % span


def _distinct(tagged: np.ndarray) -> np.ndarray:
    """The distinct values, sorted (one sort and a run mask)."""
    tagged = np.sort(tagged)
    return tagged[_run_starts(tagged)]


def _run_starts(ordered: np.ndarray) -> np.ndarray:
    """Mask of the first element of each run of equal values of a sorted array (several
    times faster than np.unique, which also sorts, on the short arrays of one prompt)."""
    first = np.ones(ordered.size, dtype=bool)
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    return first


def token_counts(embedder: EmbedderLike, texts: Iterable[str], *,
                 max_tokens: int = DEFAULT_MAX_TOKENS, progress: bool = False,
                 desc: str = "counting tokens",
                 positions: Sequence[int] | None = None,
                 tfidf_buckets: int | None = None, skip_pairs: bool = False) -> TokenCounts:
    """Histogram and document frequencies of token ids over ``texts``, and the prompt count.

    Each prompt contributes at most ``max_tokens`` tokens; special tokens never count;
    blank prompts (white space and invisible characters only) and prompts of special
    tokens only are skipped; ``texts`` is read once, as a stream.
    ``progress`` shows a bar with tokens/s. A bad text (not a string, an unpaired
    surrogate) is refused as ``text #N``, N its 0-based index in ``texts``, or
    ``positions[N]`` where ``texts`` are part of the caller's own sequence.
    ``tfidf_buckets``: also count the TF-IDF statistics over that many hash buckets
    (:mod:`ir3de.tfidf`; None, the default: not). ``skip_pairs``: also count the skip pairs
    into the pair table (the ``skips`` preset reads them; False, the default: not).
    """
    embedder, max_tokens = as_embedder(embedder), _max_tokens(max_tokens)
    tfidf_buckets = _tfidf_buckets(tfidf_buckets)
    refuse_lone_text(texts, "texts")
    tfidf = None if tfidf_buckets is None else tfidf_counts([], tfidf_buckets)
    counts = np.zeros(embedder.vocab_size, dtype=np.int64)
    doc_counts = np.zeros(embedder.vocab_size, dtype=np.int64)
    n_prompts = 0
    pairs = PairCounts(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    pending: list[np.ndarray] = []
    bar = tqdm(unit="tok", unit_scale=True, desc=desc, disable=not progress)
    with bar:
        for where, batch in _batches(texts, positions, _BATCH):
            ids = embedder.encode_batch(batch, max_tokens, positions=where)
            flat = np.concatenate(ids)
            counts += np.bincount(flat, minlength=embedder.vocab_size)
            doc_ids, pair_ids = _distinct_per_prompt(ids, embedder.vocab_size, skip_pairs)
            doc_counts += np.bincount(doc_ids, minlength=embedder.vocab_size)
            pending.append(pair_ids)
            # Folding the pending keys in only when they outgrow the table keeps the
            # number of sorts logarithmic in the corpus size and the memory bounded.
            if sum(k.size for k in pending) > max(pairs.keys.size, _PAIR_FOLD):
                pairs = _fold(pairs, pending)
            # A prompt of special tokens only ("<s>") holds nothing: not counted, as routing
            # refuses it (the prompt counts set the smoothing and the pair bounds).
            n_prompts += sum(1 for x in ids if x.size)
            if tfidf is not None:
                tfidf = sum_counts([tfidf, tfidf_counts([x for x in ids if x.size],
                                                        tfidf.buckets)])
            bar.update(int(flat.size))
    return TokenCounts(counts, doc_counts, n_prompts, _fold(pairs, pending), tfidf)


def _tfidf_buckets(buckets: object) -> int | None:
    """``buckets`` checked before any text is read: None or a bucket count."""
    return None if buckets is None else check_buckets(buckets, "tfidf_buckets")


def _fold(pairs: PairCounts, pending: list[np.ndarray]) -> PairCounts:
    """``pairs`` plus one count per pending key; empties ``pending``."""
    # Run-length counting of the sorted new keys first (a plain sort is ~4x faster than the
    # argsort sum_pairs needs), so only the distinct new keys meet the table.
    keys = np.sort(np.concatenate(pending)) if pending else np.zeros(0, dtype=np.int64)
    pending.clear()
    starts = np.flatnonzero(_run_starts(keys))
    return sum_pairs(np.concatenate([pairs.keys, keys[starts]]),
                     np.concatenate([pairs.counts, np.diff(starts, append=keys.size)]))


def stats_from_counts(embedder: EmbedderLike, counts: np.ndarray, *, domain: str,
                      n_prompts: int, max_tokens: int = DEFAULT_MAX_TOKENS,
                      doc_counts: np.ndarray | None = None,
                      pairs: PairCounts | None = None,
                      tfidf: TfidfCounts | None = None) -> DomainStats:
    """Statistics of a token-id histogram: ``b = Ẽᵀ c``, the counts themselves (``A =
    Ẽᵀ diag(c) Ẽ`` is formed from them when needed, :meth:`DomainStats.gram`) and the
    document frequencies of tokens and token pairs, when given, for the ``nb`` router, and
    the TF-IDF statistics (:mod:`ir3de.tfidf`)."""
    embedder, max_tokens = as_embedder(embedder), _max_tokens(max_tokens)
    counts = _as_counts(counts, "counts")
    if counts.shape != (embedder.vocab_size,):
        raise StatsFormatError(f"counts have shape {counts.shape}, expected "
                               f"({embedder.vocab_size},)")
    if np.any(counts < 0):
        raise StatsFormatError("token counts must be non-negative")
    b = np.zeros(embedder.dim + 1)
    nz = np.flatnonzero(counts)
    for ids, X in _table_blocks(embedder, nz):
        b += X.T @ counts[ids].astype(np.float64)
    return DomainStats(domain=domain, A=None, b=b, n_tokens=int(counts.sum()),
                       n_prompts=n_prompts, fingerprint=embedder.fingerprint,
                       embedder=embedder.spec, max_tokens=max_tokens,
                       counts=counts,
                       doc_counts=None if doc_counts is None else
                       _as_counts(doc_counts, "doc_counts"),
                       pairs=None if pairs is None else
                       PairCounts(*(_as_counts(a, name)
                                    for a, name in zip(pairs, ("pair keys", "pair counts"),
                                                       strict=True))),
                       tfidf=tfidf)


def _moments(embedder: Embedder, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(Ẽᵀ diag(c) Ẽ, Ẽᵀ c)`` of a token-id histogram: one pass over the ids with
    ``c > 0``, O(nnz·h²). ``A`` is symmetric to the bit and its bias entries are the exact
    token count (below 2**53)."""
    h1 = embedder.dim + 1
    A = np.zeros((h1, h1))
    b = np.zeros(h1)
    for ids, X in _table_blocks(embedder, np.flatnonzero(counts)):
        c = counts[ids].astype(np.float64)
        b += X.T @ c
        # Rows scaled by √c and then squared: √c·√c is not always c in floating point, so
        # the bias row and column are taken from b below, not from this product.
        Xs = X * np.sqrt(c)[:, None]
        A += Xs.T @ Xs
    # (√c X)ᵀ(√c X) is a Gram matrix: symmetric up to the last bit; make it exactly so.
    A = (A + A.T) / 2
    A[-1, :] = A[:, -1] = b
    return A, b


def _table_blocks(embedder: Embedder, ids: np.ndarray) -> Iterator[tuple[np.ndarray,
                                                                           np.ndarray]]:
    """``(ids, X̃)`` over ``ids`` in blocks: rows of the table with a bias 1 appended.
    Blocks bound memory for wide tables (h = 4096: 8192 rows ≈ 270 MB in float64)."""
    for start in range(0, ids.size, _ROW_BLOCK):
        block = ids[start:start + _ROW_BLOCK]
        X = np.empty((block.size, embedder.dim + 1))
        X[:, :-1] = embedder.rows(block)
        X[:, -1] = 1.0
        yield block, X


def _as_counts(values: np.ndarray, name: str) -> np.ndarray:
    """``values`` as int64; floats only where they are whole numbers (a float histogram,
    e.g. np.bincount with weights): the cast would truncate 2.5 to 2 unseen."""
    array = np.asarray(values)
    if array.dtype.kind == "f":
        fractional = ~(np.isfinite(array) & (array == np.round(array)))
        if np.any(fractional):
            i = np.unravel_index(np.argmax(fractional), array.shape)
            raise StatsFormatError(f"{name} must be whole numbers, got {array[i].item()} at "
                                   f"index {i[0] if array.ndim == 1 else i}")
    elif array.dtype.kind not in "iu":
        raise StatsFormatError(f"{name} must be integers, got an array of {array.dtype}")
    return array.astype(np.int64)


def compute_stats(embedder: EmbedderLike, texts: Iterable[str], *, domain: str,
                  max_tokens: int = DEFAULT_MAX_TOKENS, progress: bool = False,
                  positions: Sequence[int] | None = None,
                  tfidf_buckets: int | None = None, skip_pairs: bool = False) -> DomainStats:
    """Statistics of one domain's corpus: one counting pass, then one product.

    ``embedder`` is an :class:`Embedder` or, as for a Router, what
    :func:`~ir3de.embedding.load_embedder` takes (a name, folder or recipe); ``texts`` an
    iterable of strings, read once as a stream (a lone string is refused, not split into
    characters). A bad text is named ``text #N``: its 0-based index in ``texts``, or
    ``positions[N]`` when ``texts`` are the one domain's part of a longer sequence (as
    ``Router.fit`` counts each label's texts). ``tfidf_buckets``: also count the
    statistics of the prompt-level TF-IDF ridge over that many hash buckets
    (:mod:`ir3de.tfidf`; the ``tfidf`` preset reads them, over
    :data:`~ir3de.tfidf.TFIDF_BUCKETS`); None (the default) leaves them out.
    ``skip_pairs``: also count skip pairs (the ``skips`` preset reads them; False, the
    default, leaves them out: they double the pair table). Raises
    :class:`EmptyInputError` when the corpus holds no countable token.
    """
    validate_domain_name(domain)
    embedder, max_tokens = as_embedder(embedder), _max_tokens(max_tokens)
    counts, doc_counts, n_prompts, pairs, tfidf = token_counts(
        embedder, texts, max_tokens=max_tokens, progress=progress, desc=f"counting {domain}",
        positions=positions, tfidf_buckets=tfidf_buckets, skip_pairs=skip_pairs)
    if counts.sum() == 0:
        raise empty_corpus(domain)
    return stats_from_counts(embedder, counts, domain=domain, n_prompts=n_prompts,
                             max_tokens=max_tokens, doc_counts=doc_counts, pairs=pairs,
                             tfidf=tfidf)


def empty_corpus(domain: str) -> EmptyInputError:
    """The error of a corpus that holds no countable token (the local and Ray engines')."""
    # (it used to say "0 prompt(s) read" of a file of three "<s>" records: none is counted)
    return EmptyInputError(f"domain {domain!r}: the corpus holds no countable token (blank "
                           "prompts, and prompts of only special tokens and white space, "
                           "are skipped)")


def streaming_stats(embedder: EmbedderLike, texts: Iterable[str], *, domain: str,
                    max_tokens: int = DEFAULT_MAX_TOKENS) -> DomainStats:
    """The paper's reference accumulation ``A += X̃ᵀX̃`` over every prompt's token rows.

    Kept as the ground truth that :func:`compute_stats` is tested and benchmarked
    against; it costs O(tokens · h²) instead of O(distinct tokens · h²). Takes the same
    arguments; the result has no token, document or pair counts.
    """
    embedder, max_tokens = as_embedder(embedder), _max_tokens(max_tokens)
    refuse_lone_text(texts, "texts")
    h1 = embedder.dim + 1
    A = np.zeros((h1, h1))
    b = np.zeros(h1)
    n_tokens = n_prompts = 0
    # Blank prompts are skipped, exactly as token_counts does.
    for where, batch in _batches(texts, None, _BATCH):
        for ids in embedder.encode_batch(batch, max_tokens, positions=where):
            X = np.empty((ids.size, h1))
            X[:, :-1] = embedder.rows(ids)
            X[:, -1] = 1.0
            A += X.T @ X
            b += X.sum(axis=0)
            n_tokens += ids.size
            n_prompts += int(ids.size > 0)
    return DomainStats(domain=domain, A=A, b=b, n_tokens=n_tokens, n_prompts=n_prompts,
                       fingerprint=embedder.fingerprint, embedder=embedder.spec,
                       max_tokens=max_tokens)


def merge(stats: Iterable[DomainStats], *, drop_pairs: bool = False,
          drop_tfidf: bool = False) -> dict[str, DomainStats]:
    """Sum statistics shard-wise per domain: the statistics of one pass over all the data.

    Exact are the integers: token and prompt counts, token-id counts, document and pair
    frequencies; ``b`` (and ``A``, for statistics without token counts) is summed in
    floating point and equals one pass's to rounding (~1e-15 relative to the sum: after a
    subtraction, relative to the larger sum, not to what remains), not to the bit. Routers
    read only the counts of statistics that have them, whatever the preset (the ridge
    presets form ``A`` and ``B`` from the token-id counts), so they are the very routers of
    a central fit; only statistics without counts make the ``paper`` and ``dense`` routers
    agree with one to rounding.

    Returns ``{domain: stats}`` in order of first appearance. The integer counts are
    exact sums, the same whatever the order the shards are given in. Float sums are taken
    in a canonical order (by token and prompt count, then source) so that they do not
    depend on that order either, except between shards that tie on all three (in-memory
    statistics, all ``"<memory>"``, with equal token and prompt counts): those are summed
    in the order given, which can change their last bits. Shards of one domain with and
    without token-pair counts are refused (the sum could hold no pairs) unless
    ``drop_pairs``, which leaves the pairs out of every result; so are shards with and
    without TF-IDF statistics unless ``drop_tfidf``, which leaves those out of every
    result. A shard given twice
    (the same object, one file loaded twice, a shard object summed with ``+`` or ``sum``
    into two of the items, or identical statistics such as a copy of the file:
    :func:`find_identical`, which tells shards apart by their pair counts unless they are
    dropped) is refused: it would be counted twice.
    """
    if isinstance(stats, DomainStats):
        raise IR3DEError("merge takes an iterable of DomainStats, not a single DomainStats "
                         "(pass [stats])")
    if not hasattr(stats, "__iter__"):
        raise IR3DEError(f"merge takes an iterable of DomainStats, not {type(stats).__name__}")
    stats = list(stats)
    for i, s in enumerate(stats):
        if not isinstance(s, DomainStats):
            raise IR3DEError(f"merge: item {i} is {type(s).__name__}, not DomainStats")
    _refuse_repeats(stats)
    if drop_pairs:  # derived statistics: any signature no longer covers them
        stats = [s._unsigned("its token-pair counts were dropped (merge with "
                             "drop_pairs=True)", pairs=None) for s in stats]
    if drop_tfidf:
        stats = [s._unsigned("its TF-IDF statistics were dropped (merge with "
                             "drop_tfidf=True)", tfidf=None) for s in stats]
    # After the drop: shards told apart by their pairs only are the same without them.
    _refuse_identical_shards(stats)
    check_same_embedder(stats)
    groups: dict[str, list[DomainStats]] = {}
    for s in stats:
        groups.setdefault(s.domain, []).append(s)
    merged = {}
    for domain, parts in groups.items():
        _check_counts_or_gram(parts)
        _check_same_pairs(parts)  # up front, to name every shard without them at once
        _check_same_tfidf(parts)
        parts.sort(key=lambda s: (s.n_tokens, s.n_prompts, s.source))
        total = parts[0]
        for part in parts[1:]:
            total = total + part
        merged[domain] = total
    return merged


def find_identical(stats: Sequence[DomainStats], *,
                   pairs: bool = True) -> tuple[int, int] | None:
    """The positions ``(i, j)``, ``i < j``, of the first two of ``stats`` that hold
    identical statistics, whatever their names or files: equal token-id histograms and
    token and prompt counts (``A`` and ``b`` for statistics without a histogram) and, with
    ``pairs`` and where both have them, equal token-pair tables (the same tokens in
    another order are another corpus to a reader of the pairs; ``pairs=False`` for one that
    reads none); None if there are none. That is one corpus counted twice (a file and its
    copy, or a file given under two expert names): two corpora with exactly the same counts
    are all but impossible. Cheap: one or two hashes per statistics object, kept with it."""
    seen: dict[bytes, list[int]] = {}
    for j, s in enumerate(stats):
        same = seen.setdefault(s._content, [])
        for i in same:
            other = stats[i]
            if not pairs or None in (s.pairs, other.pairs) \
                    or s._pair_content == other._pair_content:
                return i, j
        same.append(j)
    return None


def _refuse_repeats(stats: list[DomainStats]) -> None:
    """Refuse a shard of a domain given twice, as the CLI refuses a file given twice: the
    same object, or the same file (``source`` is the path it was loaded from; in-memory and
    derived statistics, ``"<…>"``, are told apart by identity only), or a shard object
    summed into two of them (``a`` and ``a + b``: see :meth:`DomainStats.__add__`)."""
    seen: dict[tuple[str, object], int] = {}
    for i, s in enumerate(stats):
        keys: list[object] = list(s._parts)
        if s.source and not s.source.startswith("<"):
            path = Path(s.source)
            keys.append(path.resolve() if path.is_file() else s.source)
        for key in keys:
            first = seen.setdefault((s.domain, key), i)
            if first == i:
                continue
            if stats[first] is s or key not in s._parts:
                raise IR3DEError(f"merge: items #{first + 1} and #{i + 1} are the same "
                                 f"statistics ({s.source}) of domain {s.domain!r}: they "
                                 "would be counted twice")
            raise IR3DEError(f"merge: items #{first + 1} and #{i + 1} of domain "
                             f"{s.domain!r} both hold one shard's statistics (summed into "
                             "them with + or sum): it would be counted twice")


def _refuse_identical_shards(stats: list[DomainStats]) -> None:
    """Refuse two shards of a domain with identical statistics (:func:`find_identical`: a
    copy of a file, the same corpus counted twice)."""
    for domain in dict.fromkeys(s.domain for s in stats):
        indices = [i for i, s in enumerate(stats) if s.domain == domain]
        found = find_identical([stats[i] for i in indices])
        if found is not None:
            i, j = (indices[k] for k in found)
            raise IR3DEError(f"merge: items #{i + 1} and #{j + 1} ({stats[i].source} and "
                             f"{stats[j].source}) of domain {domain!r} hold identical "
                             "statistics (the same corpus twice?): it would be counted twice")


def load_stats_files(paths: Iterable[str | os.PathLike[str]]) -> list[DomainStats]:
    """Load several statistics files and check they share one embedder."""
    loaded = [DomainStats.load(Path(p)) for p in paths]
    check_same_embedder(loaded)
    return loaded

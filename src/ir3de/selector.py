"""Sample Route Selectors: turn per-token domain probabilities into one decision.

Per token t, ``p_t = softmax(x̃_t W)``. A token's probabilities, entropy and
vote depend only on its id, so :func:`vocab_scores` computes them once per
vocabulary entry and routing is table look-ups plus a small sort.

Selectors (``P`` prompts are processed together, vectorised):

* ``topk``: the k tokens of the prompt with the lowest entropy vote for their
  argmax domain; majority wins. Prompts shorter than k let every token vote.
* ``all``: every token (at most the prompt cap, 1024 by default) votes.
* ``avg``: argmax of the mean of the tokens' probability vectors.
* ``geo``: argmax of the geometric mean of the probability vectors of the prompt's
  *distinct* tokens (each counts once however often it repeats). On a Naive-Bayes table
  (the ``nb`` router, whose per-token probabilities are ``p(t | d)`` normalised over the
  domains) this is exactly the Naive-Bayes decision with a uniform prior over binary
  token features. An ``nb`` router adds the log-likelihoods of the prompt's distinct
  adjacent token pairs and skip pairs (each kind its own table), and may leave out tokens
  that no fit prompt holds (:func:`~ir3de.solver.nb_skips`).

Tie-breaking (deterministic):

1. a token's vote is its most probable domain; equal probabilities go to the
   expert listed first;
2. tokens of equal entropy are taken in prompt order (earlier first);
3. domains with equal votes are separated by the sum of their probabilities
   over the voting tokens, then by expert order (first listed wins);
4. ``avg`` and ``geo`` ties go to the expert listed first.

"Equal" is equal as computed, to the last bit: two experts whose scores are equal in
exact arithmetic (symmetric statistics) may differ by a rounding unit, which then
decides, the same way on every call and in single and batch routing alike.

Confidence is the winner's vote share (``topk``/``all``), its mean probability
(``avg``) or its normalised geometric mean probability (``geo``: the softmax of the
mean log-probabilities, so, like ``avg``, between 1/D and 1).

Coverage (``geo`` with a token-pair table only) is the share of the prompt's distinct
token pairs that occur in the fit data: how much of the prompt the experts' statistics have
seen. Unlike the confidence, it does not compare experts, so it drops for a prompt unlike
every expert's data (a domain no expert covers, or a shifted dataset); the gateway can send
such prompts to its fallback expert (``min_coverage``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from .embedding import Embedder
from .errors import EmptyInputError, IR3DEError
from .statistics import _distinct, _flat_pair_keys, _run_starts, pair_keys, skip_keys
from .tfidf import TfidfScores

__all__ = ["SELECTORS", "PairScores", "Selection", "SelectorName", "VocabScores", "select",
           "vocab_scores"]

_TAG_LIMIT = 2**63 - 1  # the largest (prompt, pair) tag a sort may form (int64)
_FIRST = np.zeros(1, dtype=np.int64)  # the one run of a single prompt's pairs
# Pair tables of up to this many entries (128 MB of float64) are also kept dense.
_DENSE_ENTRIES = 2**24

SelectorName = Literal["topk", "all", "avg", "geo"]
# The kinds of terms a decision sums (explanations: router.Evidence); pairs, skip pairs and
# the TF-IDF bias are geo's only
TermKind = Literal["token", "pair", "skip", "bias"]
# One term as the explanations compute it: (kind, first id, second id, position, lead)
_Term = tuple[TermKind, int | None, int | None, int, float]
SELECTORS: tuple[str, ...] = ("topk", "all", "avg", "geo")


@dataclass(frozen=True, eq=False)
class PairScores:
    """Per-pair routing table: ``keys`` (K,), the sorted pair keys
    (:class:`~ir3de.statistics.PairCounts`), and each pair's log-probabilities over the D
    domains (normalised per row), row K for every pair not among ``keys``. Stored sparse,
    as ``logp[p, d] = base[p] + offset[d] + delta[p, d]`` with ``delta`` nonzero only in
    ``nnz`` entries, a CSR matrix (``indptr`` (K + 2,), ``cols``, ``delta``): a Dirichlet
    table is that sum wherever a domain never showed the pair (see
    :func:`~ir3de.solver.solve_pairs`), so a router of D experts holds O(K + nnz) numbers,
    not K x D (1.6 GB for 102 experts and 2 M pairs). A table of at most _DENSE_ENTRIES
    entries is also kept dense, (K + 1, D), and read that way: a prompt's sum is one
    gather then (the sparse sum made the selector 1.6 times slower on a 200-token prompt),
    and it differs from the sparse one in the last digits only."""

    keys: np.ndarray
    base: np.ndarray
    offset: np.ndarray
    indptr: np.ndarray
    cols: np.ndarray
    delta: np.ndarray
    # keys + a -1 sentinel: searchsorted positions (≤ K) index it without a bounds check,
    # and the sentinel never equals a key (keys are ≥ 0).
    _padded: np.ndarray = field(init=False, repr=False)
    _dense: np.ndarray | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_padded", np.append(self.keys, np.int64(-1)))
        dense = None
        if self.base.size * self.offset.size <= _DENSE_ENTRIES:
            dense = self.base[:, None] + self.offset[None, :]
            rows = np.repeat(np.arange(self.base.size), np.diff(self.indptr))
            dense[rows, self.cols] += self.delta
        object.__setattr__(self, "_dense", dense)

    @classmethod
    def from_logits(cls, keys: np.ndarray, logits: np.ndarray) -> PairScores:
        """A dense table of per-pair scores (K + 1, D), normalised by a log-softmax per
        row (in place), every entry stored."""
        logits -= logits.max(axis=1, keepdims=True)
        logits -= np.log(np.exp(logits).sum(axis=1, keepdims=True))
        rows, D = logits.shape
        return cls(keys, np.zeros(rows), np.zeros(D), np.arange(0, rows * D + 1, D),
                   np.tile(np.arange(D), rows), logits.reshape(-1))

    def rows(self, keys: np.ndarray) -> np.ndarray:
        """The row of each pair key: its own, or the last one when unseen."""
        return self.lookup(keys)[0]

    def lookup(self, keys: np.ndarray) -> tuple[np.ndarray, int]:
        """:meth:`rows` and how many of ``keys`` are pairs of the fit data."""
        pos = np.searchsorted(self.keys, keys)
        seen = self._padded[pos] == keys
        n_seen = int(np.count_nonzero(seen))
        if n_seen < pos.size:
            pos[~seen] = self.keys.size
        return pos, n_seen

    def seen(self, rows: np.ndarray) -> np.ndarray:
        """Whether each row of :meth:`rows` is a pair of the fit data (not the unseen row)."""
        return rows < self.keys.size

    def logp(self, rows: np.ndarray) -> np.ndarray:
        """The log-probabilities of ``rows`` as a dense (len(rows), D) array."""
        return self.sums(rows, np.arange(rows.size))

    def sums(self, rows: np.ndarray, starts: np.ndarray) -> np.ndarray:
        """The sum of the log-probabilities of each run of ``rows`` (non-empty runs starting
        at ``starts``), (P, D). One prompt's sum has the same digits alone as in a batch:
        every part is summed per run in the order of its rows."""
        if self._dense is not None:
            return np.add.reduceat(self._dense[rows], starts, axis=0)
        P, D = starts.size, self.offset.size
        n = np.diff(np.append(starts, rows.size))
        lo = self.indptr[rows]
        lens = self.indptr[rows + 1] - lo
        # The CSR entries of every row in turn, and the run each belongs to.
        entries = np.repeat(lo - (np.cumsum(lens) - lens), lens) + np.arange(int(lens.sum()))
        run = np.repeat(np.repeat(np.arange(P), n), lens)
        # (float even with no entry at all: every pair unseen, bincount then gives int zeros)
        total = np.bincount(run * D + self.cols[entries], weights=self.delta[entries],
                            minlength=P * D).reshape(P, D).astype(np.float64, copy=False)
        total += np.add.reduceat(self.base[rows], starts)[:, None] + n[:, None] * self.offset
        return total


@dataclass(frozen=True, eq=False)
class VocabScores:
    """Per-vocabulary routing tables: ``probs`` (V, D), their logarithms ``logp``,
    ``entropy`` (V,), ``vote`` (V,) and ``rank`` (V,), the dense rank of each entropy (equal
    entropies share a rank), which lets a batch be ordered by one integer sort instead of a
    two-key lexsort. ``pairs``: the token-pair table the ``geo`` selector adds, if any;
    ``skips``: its skip-pair table, if any; ``unseen``: the token ids ``geo`` leaves out
    (their rows add nothing), if any; ``tfidf``: the prompt-level TF-IDF ridge it adds, if
    any."""

    probs: np.ndarray
    logp: np.ndarray
    entropy: np.ndarray
    vote: np.ndarray
    rank: np.ndarray
    pairs: PairScores | None = None
    tfidf: TfidfScores | None = None
    skips: PairScores | None = None
    unseen: np.ndarray | None = None
    # What geo gathers per distinct token: logp, zero for the unseen ids, with the TF-IDF
    # rows beside it when there are some (one gather of 2D columns is cheaper than two of
    # D) and the TF-IDF bias added to logp's (a mean over the distinct tokens then adds it
    # once: one operation less per prompt).
    _geo_rows: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        rows = self.logp
        if self.unseen is not None and self.unseen.size:
            # (a row of zeros shifts no domain against another: the token adds nothing to
            # the decision, only to the count that geo's mean divides by, as every token)
            rows = rows.copy()
            rows[self.unseen] = 0.0
        if self.tfidf is not None:
            rows = np.hstack([rows + self.tfidf.bias, self.tfidf.rows])
        object.__setattr__(self, "_geo_rows", rows)

    @classmethod
    def build(cls, probs: np.ndarray, entropy: np.ndarray,
              logp: np.ndarray | None = None) -> VocabScores:
        """Derive votes (argmax, first expert on ties) and entropy ranks (``logp`` defaults
        to ``log(probs)``)."""
        if logp is None:
            with np.errstate(divide="ignore"):
                logp = np.log(probs)
        rank = np.unique(entropy, return_inverse=True)[1].reshape(-1)
        return cls(probs=probs, logp=logp, entropy=entropy, vote=probs.argmax(axis=1),
                   rank=rank)

    @classmethod
    def from_logits(cls, logits: np.ndarray, pairs: PairScores | None = None,
                    tfidf: TfidfScores | None = None, skips: PairScores | None = None,
                    unseen: np.ndarray | None = None) -> VocabScores:
        """The tables of per-token scores ``logits`` (V, D), normalised by a softmax per
        token (in place: ``logits`` is consumed), with the pair tables ``pairs`` and
        ``skips``, the TF-IDF ridge ``tfidf`` and the ids ``unseen`` geo leaves out."""
        V = logits.shape[0]
        probs, entropy = np.empty_like(logits), np.empty(V)
        # Blocks keep the temporaries in cache (faster at large vocabularies, same result).
        for start in range(0, V, 512):
            z = logits[start:start + 512]
            z -= z.max(axis=1, keepdims=True)
            z -= np.log(np.exp(z).sum(axis=1, keepdims=True))
            p = probs[start:start + 512] = np.exp(z)
            entropy[start:start + 512] = -(p * z).sum(axis=1)
        return replace(cls.build(probs, entropy, logits), pairs=pairs, tfidf=tfidf,
                       skips=skips, unseen=unseen)


def vocab_scores(embedder: Embedder, W: np.ndarray,
                 offset: np.ndarray | None = None) -> VocabScores:
    """Softmax probabilities, entropy and argmax vote of every token id under ``W``
    (plus ``offset[t]``, the per-token scores of identity features, when given)."""
    logits = np.empty((embedder.vocab_size, W.shape[1]))
    for start, rows in embedder.blocks(512):
        logits[start:start + rows.shape[0]] = rows @ W[:-1] + W[-1]
    if offset is not None:
        logits += offset
    return VocabScores.from_logits(logits)


@dataclass(frozen=True, eq=False)
class Selection:
    """Batched selector output.

    ``choice`` (P,) expert indices; ``confidence`` (P,); ``scores`` (P, D) vote
    shares (``topk``, ``all``), mean probabilities (``avg``) or the softmax of the mean
    log-likelihood (``geo``); ``voters`` per prompt, the positions (in the prompt's
    token ids) of the tokens that voted, lowest entropy first (for ``avg``, every
    position in prompt order; for ``geo``, each distinct token's first position, in
    prompt order). ``coverage`` (P,): the share of each
    prompt's distinct token pairs seen in the fit data (``geo`` with a pair table; None
    otherwise).
    """

    choice: np.ndarray
    confidence: np.ndarray
    scores: np.ndarray
    voters: list[np.ndarray]
    coverage: np.ndarray | None = None


def select(ids: Sequence[np.ndarray], table: VocabScores, *, selector: str = "topk",
           k: int = 10) -> Selection:
    """Route a batch of tokenised prompts with one selector (see the module docs)."""
    if selector not in SELECTORS:
        raise IR3DEError(f"unknown selector {selector!r}; choose one of {', '.join(SELECTORS)}")
    if selector == "topk" and (not isinstance(k, (int, np.integer))
                               or not 0 < k <= np.iinfo(np.int64).max):
        raise IR3DEError(f"k must be a positive integer of at most 2**63 - 1, got {k!r}")
    P, D = len(ids), table.probs.shape[1]
    if P == 0:
        return Selection(np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros((0, D)), [])
    if P == 1 and ids[0].size:
        return _select_one(ids[0], table, selector, int(k))
    lengths = np.fromiter((x.size for x in ids), dtype=np.int64, count=P)
    if np.any(lengths == 0):
        empty = int(np.flatnonzero(lengths == 0)[0])
        raise EmptyInputError(f"prompt #{empty} has no token to route on (empty or only "
                              "special tokens)")
    flat = np.concatenate(ids)
    starts = np.cumsum(lengths) - lengths
    pid = np.repeat(np.arange(P), lengths)
    rows = np.arange(P)

    if selector == "avg":
        scores = np.add.reduceat(table.probs[flat], starts, axis=0) / lengths[:, None]
        choice = scores.argmax(axis=1)
        voters = [np.arange(n) for n in lengths]
        return Selection(choice, scores[rows, choice], scores, voters)

    if selector == "geo":
        # Distinct (prompt, token) pairs, ordered by first occurrence: prompt-major, so each
        # prompt's pairs are one contiguous run for reduceat.
        V = table.logp.shape[0]
        first = _first_positions(pid * V + flat)
        upid = pid[first]
        n_distinct = np.bincount(upid, minlength=P)
        ustarts = np.cumsum(n_distinct) - n_distinct
        both = np.add.reduceat(table._geo_rows[flat[first]], ustarts, axis=0)
        total = both[:, :D]
        coverage = None
        if table.pairs is not None:
            pair_total, coverage = _pair_sums(flat, starts, table.pairs, V)
            total += pair_total
        if table.skips is not None:
            total += _pair_sums(flat, starts, table.skips, V, gap=2)[0]
        mean = total / n_distinct[:, None]
        if table.tfidf is not None:
            mean += table.tfidf.prompt_scores(both[:, D:], flat[first], upid)
        scores = _softmax(mean)
        choice = scores.argmax(axis=1)
        voters = np.split(first - starts[upid], np.cumsum(n_distinct)[:-1])
        return Selection(choice, scores[rows, choice], scores, voters, coverage)

    if selector == "all":
        k = int(lengths.max())
    # Primary key prompt, secondary entropy rank; the sort is stable, so equal entropies
    # stay in prompt order.
    order = np.argsort(pid * (int(table.rank.max()) + 1) + table.rank[flat], kind="stable")
    rank = np.arange(flat.size) - starts[pid]
    keep = order[rank < k]
    n_voters = np.minimum(lengths, k)
    tokens = flat[keep]
    counts = np.bincount(pid[keep] * D + table.vote[tokens], minlength=P * D).reshape(P, D)
    vstarts = np.cumsum(n_voters) - n_voters
    prob_sums = np.add.reduceat(table.probs[tokens], vstarts, axis=0)
    best = counts.max(axis=1)
    choice = _vote_winner(counts, best[:, None], prob_sums)
    positions = keep - starts[pid[keep]]
    voters = np.split(positions, np.cumsum(n_voters)[:-1])
    return Selection(choice, best / n_voters, counts / n_voters[:, None], voters)


def _select_one(x: np.ndarray, table: VocabScores, selector: str, k: int) -> Selection:
    """:func:`select` for a single prompt with fewer numpy calls: single-request latency is
    what a gateway pays on every request. Same results as the batched path (tested)."""
    if selector == "avg":
        scores = _total(table.probs[x]) / x.size
        choice = int(scores.argmax())
        return Selection(np.array([choice]), scores[[choice]], scores[None, :],
                         [np.arange(x.size)])
    if selector == "geo":
        first = _first_positions(x)
        u = x[first]
        both = _total(table._geo_rows[u])
        D = table.logp.shape[1]
        total = both[:D]
        coverage = None
        if table.pairs is not None:
            rows, n_seen = table.pairs.lookup(_distinct(pair_keys(x, table.logp.shape[0])))
            total += table.pairs.sums(rows, _FIRST)[0]
            coverage = np.array([n_seen / rows.size])
        if table.skips is not None:
            rows = table.skips.rows(_distinct(skip_keys(x, table.logp.shape[0])))
            total += table.skips.sums(rows, _FIRST)[0]
        mean = total / first.size
        if table.tfidf is not None:
            mean += table.tfidf.prompt_score(both[D:], u)
        # (1-D: the batched _softmax's keepdims reductions cost a microsecond more here)
        scores = np.exp(mean - mean.max())
        scores /= scores.sum()
        choice = int(scores.argmax())
        return Selection(np.array([choice]), scores[[choice]], scores[None, :], [first],
                         coverage)
    order = np.argsort(table.entropy[x], kind="stable")
    if selector == "topk":
        order = order[:k]
    tokens = x[order]
    counts = np.bincount(table.vote[tokens], minlength=table.probs.shape[1])
    best = counts.max()
    choice = int(_vote_winner(counts, best, _total(table.probs[tokens])))
    return Selection(np.array([choice]), np.array([best / order.size]),
                     counts[None, :] / order.size, [order])


def _geo_terms(x: np.ndarray, first: np.ndarray, table: VocabScores, winner: int, other: int
               ) -> list[_Term]:
    """The terms a ``geo`` decision on one prompt's token ids ``x`` (``first``: the position of
    each distinct id's first occurrence, the decision's voters) sums, each as how much it
    moved ``winner``'s mean log-likelihood above ``other``'s: ``(kind, first, second,
    position, lead)``, kind ``"token"`` (``second`` its id), ``"pair"`` or ``"skip"``
    (``first`` the earlier id, None for the start of the prompt; ``position`` the later
    token's, its first occurrence), or ``"bias"`` (the TF-IDF ridge's, position -1). The leads
    add up to ``mean[winner] - mean[other]``, the log of the ratio of the two experts'
    scores: what decided, in the selector's own units (a token's own argmax, the ``tokens``
    of an explanation, says nothing of the pairs, which often decide)."""
    V = table.logp.shape[0]
    u = x[first]
    lp = table.logp[u][:, [winner, other]]
    if table.unseen is not None and table.unseen.size:
        lp[np.isin(u, table.unseen)] = 0.0  # as _geo_rows: an unseen id adds nothing
    lead = (lp[:, 0] - lp[:, 1]) / first.size
    if table.tfidf is not None:
        # The ridge's prompt score is each distinct token's row over one norm of the prompt:
        # a sum over the tokens too.
        ridge = table.tfidf.prompt_score(table.tfidf.rows[u][:, [winner, other]], u)
        lead = lead + ridge[:, 0] - ridge[:, 1]
    terms: list[_Term] = [
        ("token", None, int(t), int(p), float(v))
        for t, p, v in zip(u, first, lead, strict=True)]
    kinds: tuple[tuple[TermKind, PairScores | None, int], ...] = (
        ("pair", table.pairs, 1), ("skip", table.skips, 2))
    for kind, pairs, gap in kinds:
        if pairs is None:
            continue
        keys = pair_keys(x, V, gap)
        at = _first_positions(keys)
        lp = pairs.logp(pairs.rows(keys[at]))
        lead = (lp[:, winner] - lp[:, other]) / first.size
        prev, cur = np.divmod(keys[at], V + 1)
        terms += [(kind, None if a == V else int(a), int(b), int(p), float(v))
                  for a, b, p, v in zip(prev, cur, at, lead, strict=True)]
    if table.tfidf is not None:
        terms.append(("bias", None, None, -1,
                      float(table.tfidf.bias[winner] - table.tfidf.bias[other])))
    # (stable: equal leads keep tokens, pairs, skip pairs in prompt order)
    terms.sort(key=lambda term: -abs(term[4]))
    return terms


def _runner_up(x: np.ndarray, voters: np.ndarray, table: VocabScores, selector: str,
               scores: np.ndarray, winner: int) -> int:
    """The expert a decision by ``selector`` on token ids ``x`` ranks second after
    ``winner``, as it ranks the winner: the highest score, equal vote shares (``topk``,
    ``all``) told apart by the voters' summed probabilities, as routing breaks a tied vote,
    and otherwise the first listed among equals."""
    others = scores.copy()
    others[winner] = -np.inf
    if selector in ("topk", "all"):
        return int(_vote_winner(others, others.max(), _total(table.probs[x[voters]])))
    return int(others.argmax())


def _vote_terms(x: np.ndarray, voters: np.ndarray, table: VocabScores, selector: str,
                winner: int, other: int
                ) -> list[_Term]:
    """:func:`_geo_terms` for the ``avg``, ``topk`` and ``all`` selectors: one ``"token"`` term
    per distinct token among the decision's ``voters`` (positions in ``x``), at its first
    position among them. Its lead is its share of ``scores[winner] - scores[other]``, the
    selector's own units: for ``avg`` the winner's probability less ``other``'s, for a vote
    its votes for the winner less its votes for ``other``, each over the number of voters
    (all its occurrences summed). The leads add up to that difference, which is 0 when a vote
    ties and the voters' summed probabilities broke the tie."""
    tokens = x[voters]
    if selector == "avg":
        share = table.probs[tokens, winner] - table.probs[tokens, other]
    else:
        votes = table.vote[tokens]
        share = (votes == winner).astype(np.float64) - (votes == other)
    distinct, inverse = np.unique(tokens, return_inverse=True)
    lead = np.bincount(inverse, weights=share, minlength=distinct.size) / voters.size
    at = np.full(distinct.size, x.size)
    np.minimum.at(at, inverse, voters)
    terms: list[_Term] = [
        ("token", None, int(t), int(p), float(v))
        for t, p, v in zip(distinct, at, lead, strict=True)]
    # equal leads in prompt order
    terms.sort(key=lambda term: (-abs(term[4]), term[3]))
    return terms


def _first_positions(values: np.ndarray) -> np.ndarray:
    """The position of each distinct value's first occurrence, in ascending order (what
    ``np.sort(np.unique(values, return_index=True)[1])`` gives, with fewer numpy calls)."""
    order = np.argsort(values, kind="stable")
    positions = order[_run_starts(values[order])]
    positions.sort()
    return positions


def _vote_winner(votes: np.ndarray, best: np.ndarray | float, prob_sums: np.ndarray
                 ) -> np.ndarray:
    """The expert with the most ``votes`` (last axis; ``best``: their maximum, broadcast
    against them), equal votes told apart by the voters' summed probabilities
    ``prob_sums`` (rule 3 of the module docs), then by the first listed."""
    return np.where(votes == best, prob_sums, -np.inf).argmax(axis=-1)


def _total(rows: np.ndarray) -> np.ndarray:
    """The sum of ``rows`` (n ≥ 1, D) as :func:`select` sums one prompt's segment: with
    ``np.add.reduceat``, whose order of additions differs from ``sum(axis=0)``'s, so a
    prompt routed alone gets the very digits it gets in a batch."""
    return np.add.reduceat(rows, _FIRST, axis=0)[0]


def _pair_sums(flat: np.ndarray, starts: np.ndarray, pairs: PairScores,
               V: int, gap: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Per prompt (its tokens ``flat[starts[i]:starts[i + 1]]``): the sum of the pair
    log-probabilities of its distinct pairs (P, D), and the share of them seen in the fit
    data (P,); ``gap`` 2 for skip pairs."""
    P = starts.size
    lengths = np.diff(np.append(starts, flat.size))
    keys = _flat_pair_keys(flat, starts, V, gap)
    # Distinct (prompt, pair): one sort of prompt * span + key (a two-key lexsort is ~25x
    # slower), over as many prompts at a time as int64 can tag (all of them for any real
    # vocabulary and batch).
    span = (V + 1) ** 2
    step = max(1, _TAG_LIMIT // span - 1)
    out, seen = [], []
    for lo in range(0, P, step):
        hi = min(P, lo + step)
        a, b = starts[lo], starts[hi - 1] + lengths[hi - 1]
        pid = np.repeat(np.arange(hi - lo, dtype=np.int64), lengths[lo:hi])
        tagged = _distinct(pid * span + keys[a:b])
        owner = tagged // span
        n_pairs = np.bincount(owner, minlength=hi - lo)  # ≥ 1: no empty prompt
        rows = pairs.rows(tagged % span)
        out.append(pairs.sums(rows, np.cumsum(n_pairs) - n_pairs))
        seen.append(np.bincount(owner, weights=pairs.seen(rows),
                                minlength=hi - lo) / n_pairs)
    return np.concatenate(out), np.concatenate(seen)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)

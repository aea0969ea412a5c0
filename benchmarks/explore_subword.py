"""Issue 6 exploration: a back-off table through the characters of the token strings.

The default's token table gives a token id that no fit prompt holds a Laplace row, which
depends on the domain only through its size (the "lean" towards small experts,
EVALUATION.md), and knows nothing of ids that are spelt alike (``▁calculate`` and
``▁calculated`` are unrelated). ``explore_fold.py`` merged ids with equal lower-cased
strings and found no held-out gain; this script asks whether a softer link, shared
character n-grams, helps. It costs nothing at routing time and needs no new statistic:

* G (V, F): row t holds the character n-grams of token t's string (lower-cased, the
  word-start marker ``▁`` read as a space, ``<`` and ``>`` around it), each weighing
  1 / (number of n-grams of t), so a row sums to 1; byte-fallback and special tokens
  (``<...>``, ``[...]``) have an empty row. G is a fixed function of the vocabulary.
* Per domain, the n-gram counts C_f = Gᵀ DF (F, D), DF the default's token document
  frequencies: a function of the summed statistics, so add/remove and federation stay
  exact. L_f = log((C_f + β) / (Σ_f C_f + βF)), a Naive-Bayes table over n-grams.
* R = G L_f (V, D): each token's back-off row, computed once per vocabulary entry when the
  router is solved, so a prompt still reads one row per distinct token.

Families (today's scoring otherwise: binary-NB token table, α = 0.03, plus the pooled
Dirichlet pair table, m = 1e5, every unseen key counted; n ∈ {3, 4}, β ∈ {0.1, 1}):

* ``pair raw``: today's default;
* ``sub n β w``: today's score plus w · Σ over the prompt's distinct tokens of R[t],
  w ∈ {0.25, 0.5, 1} (every token gains evidence from its spelling);
* ``bo n β w``: the token table's rows of ids that no fit prompt holds replaced by w · R[t]
  (a true back-off: only unseen tokens read their spelling), w ∈ {0.25, 0.5, 1}.

Decision rule: ``fresh_unseen.py``'s selection rule (held-out pick per family, strictly
above today's default on held-out, 99.563, then higher on the mean of the three fresh
checks), fixed with this file committed before its first run. (99.563 is the default's
figure on the held-out parts before they were cleaned of test prompts; on the clean ones,
which this script reads, it is 99.556, the run's own ``pair raw`` row.)

Outcome (15 s; fresh checks 8 s each): the ``sub`` pick ``sub n=3 b=0.1 w=0.25`` scores
99.563 held-out against the default's 99.556 (one more ``reasoning-paper`` prompt), then
98.65 against 98.59 on the mean of the three fresh checks (F1 +0.03, F2 +0.26, F3 -0.12):
the rule says adopt. The ``bo`` pick ``bo n=3 b=1 w=1`` (99.559: above the run's default,
below 99.563) loses the fresh checks, 98.55. With ``--embedder minilm`` (a check, not a
choice): the same configuration is +0.08 held-out and -0.08 on the fresh checks. Built as
the router setting ``spelling`` (preset ``spelling``), which reproduces these test figures
to the digit (EVALUATION.md, *A spelling back-off*).

``--small``, added after the runs above and the setting built from them (which leaves the
back-off off for fit sets small enough for ``few``, where it was not measured), committed
before its own first run: with ``few``'s values (α 0.01, pair mass 3e4) on
``explore_scale.py``'s small sizes (``f0.03``, ``n10``, ``n30``, ``n100``, three draws, every
split), ``off`` against the back-off ``on w`` (n = 3, β = 0.1), w ∈ {0.25, 0.5, 1}. No
figure of the back-off at a small size had been seen. Rule: the candidate with the highest
mean held-out over those sizes (a tie goes to ``off``, then to grid order) replaces ``off``
only if it beats it there and then on the mean of the fresh checks with every fit set cut
to each small size; test figures are printed and not read. If it does, ``auto`` takes that
weight for small fit sets too.
Outcome (26 s): ``off`` stays (held-out 97.71; ``on w=0.25`` 97.70, w = 0.5 97.54, w = 1
97.09); for the record, test ranks ``off`` first too (96.09 against 95.77 and lower).

``--markers``, added after the back-off became the default, committed before its own first
run: the map reads a token's string as it is but for SentencePiece's ``▁``. A WordPiece
vocabulary (MiniLM's) marks the other end: a word-initial token has no marker and a
continuation starts with ``##``, so ``##ing`` holds the trigrams ``<##``, ``##i`` and
``#in``, shared by every continuation, and ``play`` lacks the word-start space that
``▁play`` gives. ``wp n=3 b=0.1 w=0.25`` reads WordPiece strings as SentencePiece ones
(``##x`` as ``x``, any other non-special token ``x`` as ``▁x``) at the default's n, β and w
(nothing re-tuned), against ``sub n=3 b=0.1 w=0.25``, the map as built. Rule, for
``--embedder minilm`` (the one WordPiece vocabulary at hand): ``wp`` replaces the map for
WordPiece vocabularies if its mean held-out is strictly above ``sub``'s, and then its mean
over the three fresh checks is above ``sub``'s too (``--fresh`` for each, both printed
against ``pair raw``); test figures are printed and not read. WordLlama's map is not
affected either way (its vocabulary is SentencePiece's; its literal ``##`` tokens are
Markdown).
Outcome (13 s): the map stays as built. ``wp`` scores 99.30 held-out against ``sub``'s 99.31
(``pair raw`` 99.23), not above it, so the fresh checks were not run; for the record, test
is 99.82 / 99.80 / 99.88 / 98.21 / 97.48 against 99.86 / 99.85 / 99.88 / 98.07 / 97.41. The
two maps hold nearly the same information (10,754 trigrams each): ``<##`` marks every
continuation where ``wp``'s space marks every word start.

Run:  python benchmarks/explore_subword.py [--embedder wordllama] [--settings ...]
      python benchmarks/explore_subword.py --fresh "sub n=3 b=0.1 w=0.25"   (step 3)
      python benchmarks/explore_subword.py --small
      python benchmarks/explore_subword.py --embedder minilm --markers [--fresh LABEL]
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Sequence

import fresh_unseen
import numpy as np
import scipy.sparse as sp
from _holdout import explore_args, script_parser
from explore_counts import _features
from explore_longer import _Grams, score_all
from explore_smoothing import SETTINGS, Unigrams, _ngram_keys

from ir3de import load_embedder
from ir3de.solver import FEW_ALPHA, FEW_PAIRS, Spelling

DEFAULT = "pair raw"
NS = (3, 4)
BETAS = (0.1, 1.0)
WEIGHTS = (0.25, 0.5, 1.0)
Groups = dict[str, list[np.ndarray]]


@functools.cache
def _spelling(embedder: str, n: int, wordpiece: bool = False) -> sp.csr_matrix:
    """G (V, F): each token's n-grams, a row summing to 1 (empty for special tokens), as
    the library builds it (``ir3de.solver.Spelling``); ``wordpiece``: the strings read as
    ``--markers``'s ``wp`` reads them."""
    emb = load_embedder(embedder)
    tokens = emb.tokens(range(emb.vocab_size))
    if wordpiece:
        tokens = [t[2:] if t.startswith("##") else t if t[:1] + t[-1:] in ("<>", "[]")
                  else "▁" + t for t in tokens]
    g = Spelling.of(tokens, n)
    return sp.csr_matrix((g.weights, (g.rows, g.cols)), shape=(g.vocab_size, g.n_grams))


def _base(V: int, fit: Groups, ids: Sequence[np.ndarray], alpha: float, mass: float
          ) -> tuple[str, Unigrams, sp.csr_matrix, np.ndarray, np.ndarray]:
    """What every family builds on: the embedder's name (``--embedder``), the fit's token
    counts, the prompts' binary token features, the token table at ``alpha`` and the
    prompts' summed pair log-likelihoods at Dirichlet mass ``mass``."""
    embedder = script_parser(__doc__).parse_known_args()[0].embedder
    unigrams = Unigrams(fit, "bin", V)
    pairs = _Grams(fit, lambda x: _ngram_keys(x, V, 2)).scores(ids, [mass])["each", mass]
    return (embedder, unigrams, _features(ids, "bin", V, bigram=False),
            unigrams.additive(alpha), pairs)


def _variants(V: int, fit: Groups, ids: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    embedder, unigrams, Mb, table, pairs = _base(V, fit, ids, 0.03, 1e5)
    uni = Mb @ table
    out = {DEFAULT: uni + pairs}
    unseen = unigrams.C.sum(axis=1) == 0  # (binary tf: C is the document frequency)
    for n in NS:
        for beta in BETAS:
            R = _back_off(embedder, unigrams, n, beta)
            back = Mb @ R
            for w in WEIGHTS:
                out[f"sub n={n} b={beta:g} w={w:g}"] = uni + pairs + w * back
                bo = table.copy()
                bo[unseen] = w * R[unseen]
                out[f"bo n={n} b={beta:g} w={w:g}"] = Mb @ bo + pairs
    return out


def _back_off(embedder: str, unigrams: Unigrams, n: int, beta: float,
              wordpiece: bool = False) -> np.ndarray:
    """R (V, D): each token's back-off row through its spelling."""
    return back_off_through(_spelling(embedder, n, wordpiece), unigrams, beta)


def back_off_through(G: sp.csr_matrix, unigrams: Unigrams, beta: float) -> np.ndarray:
    """R (V, D): each token's back-off row through the map ``G`` (V, F) from token ids to
    features: a Naive-Bayes table over the features from their summed document
    frequencies ``Gᵀ DF``, smoothed with ``beta``, read back through ``G``."""
    C = np.asarray(G.T @ unigrams.C)  # (F, D)
    return np.asarray(G @ np.log((C + beta) / (C.sum(axis=0) + beta * C.shape[0])))


def default_tables(V: int, fit: Groups) -> tuple[Unigrams, np.ndarray, _Grams, np.ndarray]:
    """Today's default as tables, for scripts that score it another way: the fit's token
    counts, the token rows (:func:`default_rows`), the fit's pairs and their Dirichlet table
    (:func:`default_pair_table`)."""
    unigrams = Unigrams(fit, "bin", V)
    grams = _Grams(fit, lambda x: _ngram_keys(x, V, 2))
    return unigrams, default_rows(unigrams), grams, default_pair_table(grams)


def default_rows(unigrams: Unigrams) -> np.ndarray:
    """The default's token rows from token counts ``unigrams``: α = 0.03 plus 0.25 times the
    back-off (n = 3, β = 0.1), for the ``--embedder`` of the command line."""
    embedder = script_parser(__doc__).parse_known_args()[0].embedder
    return unigrams.additive(0.03) + 0.25 * _back_off(embedder, unigrams, 3, 0.1)


def default_pair_table(grams: _Grams) -> np.ndarray:
    """The default's pair table from pair counts ``grams``: Dirichlet mass 1e5."""
    return grams.table(1e5)


def _small_variants(V: int, fit: Groups, ids: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """``--small``: few's values, without the back-off and with it at each weight."""
    embedder, unigrams, Mb, table, pairs = _base(V, fit, ids, FEW_ALPHA, FEW_PAIRS)
    off = Mb @ table + pairs
    back = Mb @ _back_off(embedder, unigrams, 3, 0.1)
    return {"off": off, **{f"on w={w:g}": off + w * back for w in WEIGHTS}}


def _marker_variants(V: int, fit: Groups, ids: Sequence[np.ndarray]
                     ) -> dict[str, np.ndarray]:
    """``--markers``: the default's back-off with the map as built and with WordPiece's
    markers read as SentencePiece's."""
    embedder, unigrams, Mb, table, pairs = _base(V, fit, ids, 0.03, 1e5)
    plain = Mb @ table + pairs
    return {DEFAULT: plain, **{
        f"{family} n=3 b=0.1 w=0.25": plain + 0.25 * (Mb @ _back_off(
            embedder, unigrams, 3, 0.1, wordpiece=family == "wp"))
        for family in ("sub", "wp")}}


def main() -> int:
    start = time.perf_counter()
    args = explore_args(__doc__, SETTINGS, fresh=True, flags=[
        ("--small", "the back-off with few's values on small fit sets"),
        ("--markers", "WordPiece's markers read as SentencePiece's (MiniLM)")])
    emb = load_embedder(args.embedder)
    if args.small:
        from explore_scale import SMALL, _challenge

        labels = ["off", *(f"on w={w:g}" for w in WEIGHTS)]
        return _challenge(emb, args, start, _small_variants, labels, SMALL, SMALL, "off",
                          read_test=False)
    variants = _marker_variants if args.markers else _variants
    if args.fresh is not None:
        return fresh_unseen.judge(emb, args.data, variants, DEFAULT, args.fresh)
    score_all(emb, args.settings, args.data, variants, start)
    return 0


if __name__ == "__main__":
    sys.exit(main())

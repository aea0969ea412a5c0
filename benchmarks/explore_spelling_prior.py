"""Issue 6 exploration: the spelling back-off as a prior of the token table, not a term.

The default adds w = 0.25 times each token's spelling row R (the mean log-probability of its
character trigrams under the domain's trigram table, ``explore_subword.py``) to every row
of the token table, frequent tokens and rare ones alike. The textbook back-off (Dirichlet
smoothing towards a lower-order model, as Kneser-Ney and hierarchical Dirichlet models
do) lets the spelling speak where the token's own counts are few and fall silent where
they are many:

    L[t, d] = log((df[t, d] + α + m s_d(t)) / (n_d + α V + m)),   s_d(t) ∝ exp(R[t, d]),

s_d normalised over the tokens that have trigrams (special and byte tokens get none, and
only α), m the prior's mass. A function of the summed statistics (add/remove stays exact),
folded into the token table, so routing costs nothing more. The pair table is today's.

Family ``prior m α``: m ∈ {1e2, 1e3, 1e4, 1e5}, α ∈ {0.03, 0.01} (α keeps the tokens without
trigrams finite), in place of the additive back-off; ``default`` is today's default.

Decision rule: ``fresh_unseen.py``'s selection rule (the ``prior`` pick by the mean held-out
accuracy over the five splits, first in grid order on ties, strictly above ``default``'s
there, then higher on the mean of the three fresh checks, ``--fresh LABEL``); test figures
are printed and not read. Committed before its first run.

Outcome (17 s): no setting is above the default on held-out fit data (the best, m = 100
with α = 0.03, 99.55 against 99.56; larger masses down to 99.47), so the rule keeps the
additive back-off without the fresh step. The test figures it printed (not read by the
rule) move the other way on ``reasoning-xdata`` for the middle masses (up to 99.44 at
m = 1e4) and lose a few ``reasoning-2fold`` prompts (99.88-99.91).
With ``--embedder minilm`` (a check, 2026-11-26, not a choice; EVALUATION.md, *The rule
applied per tokenizer*): the pick ``prior m=100000 a=0.03`` passes the held-out step (99.33
against 99.31) and the fresh checks, 98.86 against 97.94 (F1 -0.03, F2 +0.82, F3 +1.97).
Built as the ``spelling-prior`` preset (not the default; EVALUATION.md, *The spelling prior,
built*): its eval figures equal this pick's test row to the digit.

``--small``, added after the prior was built as the ``spelling-prior`` preset, whose
``auto`` leaves it off for the fit sets small enough for ``few`` (copied from the added
term's ``auto``, not measured for the prior), committed before its own first run: with
``few``'s values (α 0.01, pair mass 3e4) on ``explore_scale.py``'s small sizes (``f0.03``,
``n10``, ``n30``, ``n100``, three draws, every split), ``off`` against the prior
``prior m=M`` in place of the added term, M ∈ {1e2, 1e3, 1e4} (1e5 is many times a small
fit set's counts). Rule (``explore_subword.py --small``'s): the candidate with the highest
mean held-out over those sizes (a tie goes to ``off``, then to grid order) replaces ``off``
only if it beats it there and then on the mean of the fresh checks with every fit set cut
to each small size; test figures are printed and not read. If it does, the preset's
``auto`` takes that mass for small fit sets; otherwise it stays off for them.

Outcome of ``--small`` (85 s): ``prior m=100`` is the pick, held-out 97.79 against ``off``'s
97.71, then the fresh checks +0.33 over the four sizes (ahead at each): ``off`` becomes
``prior m=100``, the preset's ``auto`` for small fit sets (``FEW_SPELLING_PRIOR``). With
``--embedder minilm`` the same: 97.50 against 97.41, fresh +0.25.

``--small-mixed``, added after ``--small``'s outcome, committed before its own first run:
the same comparison and rule on the routers where ``auto``'s small-fit-set switch fires
because of one small expert beside whole ones, the case ``--small`` left out (``explore_scale``'s
sizes ``one10``, ``one30``, ``half10``, ``half30``: one or half of the experts cut to 10 or 30
prompts, the smallest then 50 or fewer). A check of the preset's small-fit-set mass: if
``off`` stays there, README and EVALUATION.md say so beside it (the mass rests on the
uniform sizes); it changes no setting either way.

Outcome of ``--small-mixed`` (132 s): ``off`` stays. With WordLlama's tokenizer
``prior m=100`` is the held-out pick by a hair (97.98 against 97.97) and loses the fresh
checks (-0.06: one10 -0.08, one30 -0.13, half10 +0.05, half30 -0.09); with MiniLM's ``off``
is the held-out pick itself (97.99 against 97.96). So the preset's small-fit-set mass helps
where every expert is small and not where one small expert sits beside whole ones, which
``auto`` treats alike; no setting changes (the rule above), README and EVALUATION.md say so.

``--default-small``, added after ``--small-mixed``'s outcome, committed before its own first
run: whether the *default* should take ``--small``'s mass where every expert is small. Today
the default's ``spelling="auto"`` is off wherever ``auto``'s small-fit-set switch fires
(mean prompt count <= 100 or smallest <= 50). Candidate ``mean-switch``: the prior with mass
100 in place of the added term where the mean fires (every expert small on average), off
where only the smallest fires (``--small-mixed``: off stays there), today's added term where
neither fires. Both sides are scored as the library would solve each fit (``few``'s values
where the switch fires, the default's otherwise) on the eight sizes of ``--small`` and
``--small-mixed`` together, three draws each. Rule: ``mean-switch`` replaces today only if its
mean held-out over the eight sizes is strictly higher and then its mean gain on the fresh
checks with every fit set cut to each size is above 0; test figures are printed and not
read. WordLlama's run (the default embedder) decides; MiniLM's is reported as a check.
Known before the run: on the uniform sizes where the mean fires this is ``--small``'s own
comparison (held-out +0.08, fresh +0.33); the run adds which fits the mean reaches
(``f0.03``'s) and the mixed sizes, where the candidate should equal today. If it passes, the
default's ``spelling="auto"`` takes the prior with ``FEW_SPELLING_PRIOR`` where the mean
fires, and the ``spelling-prior`` preset keeps its own switch (``--small-mixed``).

Outcome of ``--default-small`` (204 s per tokenizer): ``today becomes mean-switch``. With
WordLlama's tokenizer held-out 97.89 against 97.84, then the fresh checks +0.17 (f0.03
+0.24, n10 +0.23, n30 +0.57, n100 +0.29, the mixed sizes 0.00); the mean fired in 159 of
the 312 fits where the switch did. With MiniLM's the same: 97.74 against 97.70, fresh
+0.12. So the default's ``spelling="auto"`` takes the prior with mass 100 where the mean
fires (``solver.nb_spelling``; EVALUATION.md, *The default's spelling back-off on small fit
sets*).

``--default-tiny``, added after ``--default-small``'s outcome was built, committed before
its own first run: the new default failed ``Router.predict``'s docstring example (two
experts of one fit prompt each: ``import os`` went to math), so the sizes below
``--small``'s (whose smallest uniform fit sets hold 3 prompts, ``f0.03``'s floor, and 10) are
checked: ``n1``, ``n2``, ``n3``, ``n5``, three draws, every split, together with
``--default-small``'s eight sizes. Base:
``mean-switch`` (the default now). Candidates: ``floor F`` (the prior only where the mean
is also at least F prompts per expert, off below), F in {3, 5, 10}, and ``today`` (the
default before, off at every small size). Rule (``--small``'s): the candidate with the
highest mean held-out over the twelve sizes (a tie goes to the base, then to grid order)
replaces the base only if it beats it there and then on the mean gain of the fresh checks
over the twelve sizes; test figures printed, not read. WordLlama decides, MiniLM is a
check. If a candidate passes, ``solver.nb_spelling`` takes its floor.

Outcome of ``--default-tiny`` (266 s; MiniLM 107 s): ``mean-switch becomes floor 10``. With
WordLlama's tokenizer held-out 94.39 against 94.28 over the twelve sizes (n1 78.22 against
77.61, n5 93.04 against 92.92; the eight sizes alike), then the fresh checks +0.06 (n1 +0.32,
n2 +0.17, n3 +0.43, n5 -0.23). MiniLM's check disagrees: no floor is its held-out pick
(94.03 against 93.96 for floor 10), so the rule stops there for it. The committed rule lets
WordLlama decide: ``solver.FEW_SPELLING_FLOOR = 10``.

``--small-edge``, added after ``--default-tiny``'s outcome, committed before its own first
run: ``--small`` chose the small-fit-set mass 100 from {1e2, 1e3, 1e4}, the grid's lower
edge, and the default now takes it. One step further out: ``prior m=M`` for M in {10, 30,
100} (100 the base, ``FEW_SPELLING_PRIOR``), applied where the default takes the prior (the
small-fit-set switch fires and the mean is 10 to 100 prompts per expert; elsewhere every
label routes as the default does), on ``--small``'s four uniform sizes, three draws, every
split. Rule (``--small``'s): the mass with the highest mean held-out over the four sizes (a
tie goes to the base, then to grid order) replaces 100 only if it beats it there and then on
the mean gain of the fresh checks over the four sizes; test figures printed, not read.
WordLlama decides, MiniLM is a check. If a mass passes, ``FEW_SPELLING_PRIOR`` takes it (the
``spelling-prior`` preset's small-fit-set mass with it).

Outcome of ``--small-edge`` (27 s; MiniLM 24 s): ``prior m=100 stays``, the held-out pick
with both tokenizers, and the mean falls with the mass (WordLlama 97.79 against 97.74 for
30 and 97.72 for 10; MiniLM 97.50, 97.47, 97.43). With 1e3 below it too (``--small``), 100
is now inside its grid.

``--few-alpha``, added after ``--small-edge``'s outcome, committed before its own first run:
the small-fit-set α (``FEW_ALPHA`` = 0.01) was chosen with the spelling back-off off
(``explore_scale.py --alpha-small``), and the default now takes the prior at most of those
sizes. So α is compared again with today's default as it is: ``a=A`` for A in {0.003,
0.01, 0.03} (0.01 the base) wherever the small-fit-set switch fires, each with the default's
spelling there (the prior of mass 100 where the mean is 10 to 100 prompts per expert, off
elsewhere) and ``FEW_PAIRS``; the full-size default elsewhere. Sizes: ``--default-small``'s
eight, three draws, every split. Rule (``--small``'s): the α with the highest mean held-out
over the eight sizes (a tie goes to the base, then to grid order) replaces 0.01 only if it
beats it there and then on the mean gain of the fresh checks over the eight sizes; test
figures printed, not read. WordLlama decides, MiniLM is a check. If an α passes,
``FEW_ALPHA`` takes it (the ``few`` preset's α with it).

Outcome of ``--few-alpha`` (85 s; MiniLM 195 s): ``a=0.01 stays`` with WordLlama's
tokenizer, the held-out pick (97.89, the figure ``--default-small`` gave the default;
0.003: 97.82, 0.03: 97.21). MiniLM's check disagrees: 0.003 is its held-out pick by 0.01
(97.75 against 97.74) and gains +0.16 on the fresh checks (f0.03 -0.31 to n10 +0.60). The
committed rule lets WordLlama decide: ``FEW_ALPHA`` stays 0.01.

``--few-pairs``, added after ``--few-alpha``'s outcome, committed before its own first run:
the same check for the small-fit-set pair mass (``FEW_PAIRS`` = 3e4, chosen with α in
``explore_scale.py --alpha-small`` with the spelling back-off off): ``m=M`` for M in {1e4,
3e4, 1e5} (3e4 the base) wherever the small-fit-set switch fires, with ``FEW_ALPHA`` and the
default's spelling there; the same eight sizes and rule. If a mass passes, ``FEW_PAIRS``
takes it (the ``few`` preset's pair mass with it).

Outcome of ``--few-pairs`` (86 s; MiniLM 201 s): ``m=30000 stays`` with both tokenizers.
WordLlama: the held-out pick (97.89; 1e4 97.64, 1e5 97.39). MiniLM: 1e4 is its held-out pick
(97.87 against 97.74) and then loses the fresh checks by 1.25.

Run:  python benchmarks/explore_spelling_prior.py [--embedder wordllama] [--fresh LABEL]
      python benchmarks/explore_spelling_prior.py --small [--embedder wordllama]
      python benchmarks/explore_spelling_prior.py --small-mixed [--embedder wordllama]
      python benchmarks/explore_spelling_prior.py --default-small [--embedder wordllama]
      python benchmarks/explore_spelling_prior.py --default-tiny [--embedder wordllama]
      python benchmarks/explore_spelling_prior.py --small-edge [--embedder wordllama]
      python benchmarks/explore_spelling_prior.py --few-alpha [--embedder wordllama]
      python benchmarks/explore_spelling_prior.py --few-pairs [--embedder wordllama]
"""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Sequence

import fresh_unseen
import numpy as np
import scipy.sparse as sp
from _holdout import explore_args, script_parser
from explore_counts import _features
from explore_longer import _Grams
from explore_smoothing import SETTINGS, Unigrams, _ngram_keys
from explore_subword import _back_off, _base, _spelling, default_tables

from ir3de import load_embedder
from ir3de.solver import FEW_ALPHA, FEW_PAIRS, FEW_PROMPTS, nb_smoothing, nb_spelling

DEFAULT = "default"
MASSES = (1e2, 1e3, 1e4, 1e5)
ALPHAS = (0.03, 0.01)
SMALL_MASSES = (1e2, 1e3, 1e4)
# --small-mixed: explore_scale's mixed sizes where the smallest expert holds 50 or fewer
MIXED_SMALL = ("one10", "one30", "half10", "half30")
Groups = dict[str, list[np.ndarray]]


def _shares(embedder: str, unigrams: Unigrams) -> np.ndarray:
    """Each domain's spelling distribution s_d over the tokens (V, D): exp of the back-off
    rows, normalised over the tokens that have trigrams (the others get none)."""
    R = _back_off(embedder, unigrams, 3, 0.1)
    spelt = np.diff(_spelling(embedder, 3).indptr) > 0  # tokens that have trigrams
    s = np.where(spelt[:, None], np.exp(R - R[spelt].max(axis=0)), 0.0)
    return s / s.sum(axis=0)


def _prior_table(unigrams: Unigrams, s: np.ndarray, V: int, m: float | np.ndarray,
                 a: float) -> np.ndarray:
    """The token table with the prior of mass ``m`` (a number, or one per domain column)."""
    df, n = unigrams.C, unigrams.C.sum(axis=0)
    return np.log((df + a + m * s) / (n + a * V + m))


def default_and_prior(V: int, fit: Groups, ids: Sequence[np.ndarray]
                      ) -> tuple[dict[str, np.ndarray], Unigrams, np.ndarray,
                                 sp.csr_matrix, np.ndarray]:
    """Today's default's scores of ``ids`` (``{DEFAULT: ...}``), and what a prior variant
    builds on: the fit's token counts, the spelling distributions, the prompts' binary
    token features and their summed pair log-likelihoods (also read by
    ``explore_relative_prior.py``)."""
    embedder = script_parser(__doc__).parse_known_args()[0].embedder
    unigrams, L, grams, T = default_tables(V, fit)
    Mb = _features(ids, "bin", V, bigram=False)
    pairs = grams.matrix(ids) @ T
    return {DEFAULT: Mb @ L + pairs}, unigrams, _shares(embedder, unigrams), Mb, pairs


def _variants(V: int, fit: Groups, ids: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    out, unigrams, s, Mb, pairs = default_and_prior(V, fit, ids)
    for m, a in itertools.product(MASSES, ALPHAS):
        out[f"prior m={m:g} a={a:g}"] = Mb @ _prior_table(unigrams, s, V, m, a) + pairs
    return out


def _small_variants(V: int, fit: Groups, ids: Sequence[np.ndarray],
                    masses: Sequence[float] = SMALL_MASSES) -> dict[str, np.ndarray]:
    """``--small``: few's values, without the spelling and with the prior at each mass."""
    embedder, unigrams, Mb, table, pairs = _base(V, fit, ids, FEW_ALPHA, FEW_PAIRS)
    s = _shares(embedder, unigrams)
    return {"off": Mb @ table + pairs,
            **{f"prior m={m:g}": Mb @ _prior_table(unigrams, s, V, m, FEW_ALPHA) + pairs
               for m in masses}}


def _library_switches(fit: Groups) -> tuple[bool, bool]:
    """Whether the library's small-fit-set switch fires for ``fit``, and whether its
    default's spelling back-off then takes the prior (``ir3de.solver``'s own functions)."""
    counts = [len(prompts) for prompts in fit.values()]
    return (nb_smoothing("auto", "auto", counts)[0] == FEW_ALPHA,
            nb_spelling("auto", None, counts)[1] is not None)


# --default-small: fits where auto's small-fit-set switch fired, and where the mean did
_FIRED = {"switch": 0, "mean": 0}
# --default-tiny: the sizes below --small's, and the floors of the mean for the prior
TINY = ("n1", "n2", "n3", "n5")
FLOORS = (3, 5, 10)


def _default_small_variants(V: int, fit: Groups, ids: Sequence[np.ndarray]
                            ) -> dict[str, np.ndarray]:
    """``--default-small``: today's default and ``mean-switch`` as the library would solve
    ``fit`` (the switch is ``ir3de.solver``'s, with its constants)."""
    counts = [len(prompts) for prompts in fit.values()]
    mean_fires = sum(counts) <= FEW_PROMPTS * len(counts)  # (the candidate's own rule)
    if not _library_switches(fit)[0]:
        scores = default_and_prior(V, fit, ids)[0][DEFAULT]
        return {"today": scores, "mean-switch": scores}
    _FIRED["switch"] += 1
    _FIRED["mean"] += mean_fires
    small = _small_variants(V, fit, ids, masses=(100,) if mean_fires else ())
    return {"today": small["off"], "mean-switch": small["prior m=100" if mean_fires else "off"]}


# --small-edge: the masses one step past --small's grid edge (100, the base, among them)
EDGE_MASSES = (10, 30, 100)


def _small_edge_variants(V: int, fit: Groups, ids: Sequence[np.ndarray]
                         ) -> dict[str, np.ndarray]:
    """``--small-edge``: the default with the prior at each mass where it takes the prior,
    as the library would solve ``fit`` elsewhere."""
    if _library_switches(fit)[1]:
        return _small_variants(V, fit, ids, masses=EDGE_MASSES)
    # outside that range the default routes as it did before the prior: off where the
    # few switch fires (below the floor, or the smallest alone), the full-size default else
    scores = _default_small_variants(V, fit, ids)["today"]
    return {f"prior m={m:g}": scores for m in EDGE_MASSES}


# --few-alpha: the small-fit-set α again, with the default's spelling at those sizes
FEW_ALPHAS = (0.003, 0.01, 0.03)


# --few-pairs: the small-fit-set pair mass again, the same way
FEW_MASSES = (1e4, 3e4, 1e5)


def _few_variants(V: int, fit: Groups, ids: Sequence[np.ndarray], alphas: Sequence[float],
                  masses: Sequence[float]) -> dict[tuple[float, float], np.ndarray]:
    """``--few-alpha`` / ``--few-pairs``: the default at each small-fit-set (α, pair mass),
    as the library would solve ``fit`` with them (the full-size default where the switch
    does not fire)."""
    grid = list(itertools.product(alphas, masses))
    few, prior = _library_switches(fit)
    if not few:
        scores = default_and_prior(V, fit, ids)[0][DEFAULT]
        return dict.fromkeys(grid, scores)
    embedder = script_parser(__doc__).parse_known_args()[0].embedder
    unigrams, Mb = Unigrams(fit, "bin", V), _features(ids, "bin", V, bigram=False)
    pairs = _Grams(fit, lambda x: _ngram_keys(x, V, 2)).scores(ids, masses)
    s = _shares(embedder, unigrams) if prior else None
    return {(a, m): Mb @ (_prior_table(unigrams, s, V, 100, a) if s is not None
                          else unigrams.additive(a)) + pairs["each", m] for a, m in grid}


def _few_alpha_variants(V: int, fit: Groups, ids: Sequence[np.ndarray]
                        ) -> dict[str, np.ndarray]:
    """``--few-alpha``: the default at each small-fit-set α."""
    out = _few_variants(V, fit, ids, FEW_ALPHAS, [FEW_PAIRS])
    return {f"a={a:g}": scores for (a, _), scores in out.items()}


def _few_pairs_variants(V: int, fit: Groups, ids: Sequence[np.ndarray]
                        ) -> dict[str, np.ndarray]:
    """``--few-pairs``: the default at each small-fit-set pair mass."""
    out = _few_variants(V, fit, ids, [FEW_ALPHA], FEW_MASSES)
    return {f"m={m:g}": scores for (_, m), scores in out.items()}


def _default_tiny_variants(V: int, fit: Groups, ids: Sequence[np.ndarray]
                           ) -> dict[str, np.ndarray]:
    """``--default-tiny``: ``--default-small``'s two, and ``mean-switch`` with each floor."""
    out = _default_small_variants(V, fit, ids)
    mean = sum(len(prompts) for prompts in fit.values()) / len(fit)
    for floor in FLOORS:
        out[f"floor {floor}"] = out["mean-switch" if mean >= floor else "today"]
    return out


# The modes beside the selection rule's run (which takes --fresh LABEL instead).
MODES = [
    ("--small", "the prior on small fit sets"),
    ("--small-mixed", "the prior where one or half of the experts are small"),
    ("--default-small", "the default with the prior where the mean prompt count is small"),
    ("--default-tiny", "the same down to one prompt per expert, with floors"),
    ("--small-edge", "the small-fit-set mass one step past its grid's edge"),
    ("--few-alpha", "the small-fit-set α with the default's spelling there"),
    ("--few-pairs", "the small-fit-set pair mass with the default's spelling there")]


def main() -> int:
    argv = set(sys.argv[1:])
    if argv & {"-h", "--help"}:  # every option in one help (the rule's --fresh included)
        explore_args(__doc__, SETTINGS, fresh=True, flags=MODES)
    if not {option for option, _ in MODES} & argv:
        return fresh_unseen.rule_main(__doc__, _variants, DEFAULT)
    from explore_scale import SMALL, _challenge

    start = time.perf_counter()
    args = explore_args(__doc__, SETTINGS, flags=MODES)
    emb = load_embedder(args.embedder)
    if args.few_alpha or args.few_pairs:
        sizes = (*SMALL, *MIXED_SMALL)
        if args.few_alpha:
            labels, base = [f"a={a:g}" for a in FEW_ALPHAS], f"a={FEW_ALPHA:g}"
        else:
            labels, base = [f"m={m:g}" for m in FEW_MASSES], f"m={FEW_PAIRS:g}"
        return _challenge(emb, args, start, _few_alpha_variants if args.few_alpha
                          else _few_pairs_variants, labels, sizes, sizes, base,
                          read_test=False)
    if args.small_edge:
        labels = [f"prior m={m:g}" for m in EDGE_MASSES]
        return _challenge(emb, args, start, _small_edge_variants, labels, SMALL, SMALL,
                          "prior m=100", read_test=False)
    if args.default_tiny:
        sizes = (*TINY, *SMALL, *MIXED_SMALL)
        labels = ["mean-switch", *(f"floor {floor}" for floor in FLOORS), "today"]
        return _challenge(emb, args, start, _default_tiny_variants, labels, sizes, sizes,
                          "mean-switch", read_test=False)
    if args.default_small:
        sizes = (*SMALL, *MIXED_SMALL)
        code = _challenge(emb, args, start, _default_small_variants, ["today", "mean-switch"],
                          sizes, sizes, "today", read_test=False)
        print(f"fits where the small-fit-set switch fired: {_FIRED['switch']}, of them where "
              f"the mean did (mean-switch takes the prior): {_FIRED['mean']}")
        return code
    sizes = MIXED_SMALL if args.small_mixed else SMALL
    labels = ["off", *(f"prior m={m:g}" for m in SMALL_MASSES)]
    return _challenge(emb, args, start, _small_variants, labels, sizes, sizes, "off",
                      read_test=False)


if __name__ == "__main__":
    sys.exit(main())

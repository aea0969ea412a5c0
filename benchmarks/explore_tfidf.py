"""Issue 6 exploration: the default blended with a prompt-level TF-IDF ridge.

TF-IDF + LR wins ``domains``; the count tables top out at 97.8-97.9 there and the
prompt-level ridge measured before (``explore_document.py``: mean one-hot ids, no IDF, no
length normalisation) at 97.8, and its blends with the then default (the identity ridge,
96.5 on ``reasoning-xdata``) traded ``reasoning-xdata`` for ``domains``. This family
measures the closed-form cousin of TF-IDF + LR, a balanced ridge on TF-IDF features, alone
and blended with today's default (99.05 on ``reasoning-xdata``).

Features of a prompt: its distinct tokens, each weighted by IDF = log((N + 1)/(df + 1)) + 1
(N fit prompts, df the prompts holding the token, over all domains), signed-hashed into
``--buckets`` buckets, L2-normalised, ⊕ a bias 1. As a router the statistics would be
Σ_x g gᵀ and Σ_x g yᵀ per domain over the *unweighted* normalised presence vectors g, the
IDF a diagonal scaling applied at solve time from the summed document frequencies: sums,
so add/remove stays exact (this prototype puts the IDF inside the normalisation, as TF-IDF
does, and hashes; both are prototype shortcuts). Every domain weighs the same (sample
weight 1/n_d), λ the ridge. Score: ``ridge λ`` the ridge alone; ``blend λ g`` the default's
mean log-likelihood + g times the ridge scores.

Rule, as everywhere in issue 6: fitted on the inner 80 % of each split's fit data and
scored on the held-out 20 %; ONE configuration for all splits per family (``ridge``,
``blend``) by the highest mean held-out balanced accuracy, through ``explore_longer``'s
``score_all`` (the default scored on the same token ids); test prompts are only scored.

``--form exact`` is the form a router could ship: the signed presence vector is
L2-normalised first and each bucket then scaled by ITS IDF (from the buckets' document
frequencies, integers summed over domains), so the statistics are per-domain sums
(Σ g gᵀ, Σ g yᵀ, bucket document frequencies, prompt counts) and add/remove stays exact.

Step 3 of ``fresh_unseen.py``'s rule: ``--fresh LABEL`` judges that configuration against
the default on the two fresh checks (``fresh_unseen.judge``; the default scored through
``explore_longer``, per distinct token as the ``geo`` selector divides); it would replace
the default only if its balanced accuracy averaged over the checks is higher. The first
run (prototype form, 8192 buckets, IDF) picked ``blend λ=0.001 g=4`` (99.655 held-out
against the default's 99.563), and that step was committed before its first run. Fixed
before the first run of ``--form exact``: the candidate a router would ship is the exact
form at 4096 buckets (a (4097 x 4097) Gram matrix per domain); its pick by mean held-out
accuracy goes to ``--fresh`` if it is above the default's 99.563.

``--words`` gives the ridge only word-like tokens, as TF-IDF + LR's analyser does (scikit-
learn keeps words of two or more word characters): a token id enters the ridge's features
only if its vocabulary piece holds two word characters in a row, so whitespace, newline,
indentation, punctuation, byte and single-character pieces are left to the default's
tables. Why: ``explore_document`` traced the prompt-level ridge's loss on the MBPP →
HumanEval shift to layout tokens (newline and indentation get strong instruction-following
weights from how MBPP and Alpaca prompts are laid out). A fixed, a-priori filter of static
token features, so the statistics stay per-domain sums. Fixed before its first run: both
forms at their committed bucket counts (prototype 8192, exact 4096), the same grid and rule;
the exact form's pick goes to ``--fresh`` if it is above the default's 99.563, and it
replaces the default only by winning there (and it would then still be judged on every
setting's bar). It picked ``blend λ=0.001 g=4`` (99.63), which lost the fresh checks
(97.87 against the default's 98.65): EVALUATION.md, *Issue 6*.

``--by-source`` changes step 1's held-out part (a different selection rule, fixed and
committed before its first run): instead of a random 20 % of each domain's fit prompts,
WHOLE sub-sources are held out, where the records name them (arXiv primary category,
TheAlgorithms folder, president, LegalBench task, book, multilingual ARC's language;
``_holdout.source_holdout``; a set without such a field is held out at random as before).
Why: what counts is routing prompts from datasets the router was not fitted on, and a
random 20 % of the fit prompts cannot show that; a sub-source the fit never saw is the
closest shift the fit data itself holds. Caveat, stated before the run: this rule comes
after the grids' test figures were read (the rows with g = 1 clear every bar), so its picks'
test figures are no evidence for it; the fresh checks, which no choice has read, are.
Fixed: the rule is applied to all four runs of this script (prototype 8192 and exact 4096,
each with and without ``--words``) and to ``explore_longer.py``'s grid, the default's own
family, every pick reported; the candidate for step 3 is the pick of an additive form
(exact 4096, or ``explore_longer``) with the highest mean over the source-held-out parts,
if that is above the default's mean on the same parts; it replaces the default only by
winning the fresh checks. Outcome: every TF-IDF run picked g = 8, ``explore_longer`` picked
``skip uni=none oov=once w=0.5 m=100000`` (98.29 against the default's 95.08), the
candidate, which lost the fresh checks (98.16 against 98.65): EVALUATION.md, *Issue 6*.

Run:  python benchmarks/explore_tfidf.py [--buckets 8192] [--no-idf] [--form exact]
                                         [--words] [--by-source] [--settings ...]
                                         [--fresh LABEL]
"""

from __future__ import annotations

import functools
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import scipy.linalg
import scipy.sparse as sp
from _holdout import script_parser
from explore_longer import score_all
from fresh_unseen import judge

from ir3de import load_embedder

SETTINGS = ("reasoning-paper", "reasoning-2fold", "reasoning-xdata", "domains")
LAMBDAS = (1e-4, 1e-3, 1e-2)
GAMMAS = (0.5, 1.0, 2.0, 4.0, 8.0)


def _hashed(u: np.ndarray, buckets: int) -> tuple[np.ndarray, np.ndarray]:
    """Each token id's bucket and sign."""
    h = (u.astype(np.int64) * 2654435761) % (2**32)
    return h % buckets, np.where((h >> 31) & 1, -1.0, 1.0)


def _features(prompts: Sequence[np.ndarray], buckets: int, weight: np.ndarray | None = None,
              after: np.ndarray | None = None) -> sp.csr_matrix:
    """Rows: the prompt's distinct tokens, signed-hashed, then a bias 1; one of ``weight``
    and ``after`` is given. ``prototype``: each token weighted by ``weight`` (its IDF), then
    L2-normalised.
    ``exact``: the signed presence vector L2-normalised, then each bucket scaled by
    ``after`` (the bucket's IDF), so the Gram matrix of the unscaled rows is a sum."""
    rows, cols, vals = [], [], []
    for i, x in enumerate(prompts):
        u = np.unique(x)
        if not u.size:  # (a prompt without tokens: a zero row, the bias alone)
            continue
        col, sign = _hashed(u, buckets)
        if weight is not None:  # prototype: normalised per token, collisions summed after
            value = weight[u] * sign
            rows.append(np.full(u.size, i))
            cols.append(col)
            vals.append(value / np.linalg.norm(value))
            continue
        row = sp.csr_matrix((sign, (np.zeros(u.size, int), col)), shape=(1, buckets))
        row.sum_duplicates()  # (exact: the norm of the vector the Gram matrix sums)
        row.eliminate_zeros()
        if not row.nnz:  # (every token cancelled by a colliding one of opposite sign)
            continue
        rows.append(np.full(row.nnz, i))
        cols.append(row.indices)
        vals.append(row.data / np.linalg.norm(row.data))
    n = len(prompts)
    F = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                      shape=(n, buckets))
    if after is not None:
        F = F @ sp.diags(after)
    return sp.hstack([F, np.ones((n, 1))]).tocsr()


@functools.cache
def _word_like(embedder: str | None) -> np.ndarray:
    """Per token id: does its vocabulary piece hold two word characters in a row (special
    ``<...>`` and byte ``<0x..>`` pieces never do)."""
    emb = load_embedder(embedder)
    return np.array([t[:1] + t[-1:] not in ("<>", "[]") and bool(re.search(r"\w\w", t))
                     for t in emb.tokens(range(emb.vocab_size))])


def _ridge(fit: Mapping[str, Sequence[np.ndarray]], V: int, buckets: int,
           idf: bool = True, form: str = "prototype", keep: np.ndarray | None = None
           ) -> tuple[Callable[[Sequence[np.ndarray]], sp.csr_matrix], dict[float, np.ndarray]]:
    """The feature map and one weight matrix per λ, fitted on ``fit`` (domains in order);
    ``keep``: the token ids the ridge sees (all without it)."""
    if keep is not None:
        fit = {d: [x[keep[x]] for x in items] for d, items in fit.items()}
    prompts = [x for items in fit.values() for x in items]
    N = len(prompts)
    if form == "exact":  # bucket document frequencies: per-domain sums of integers
        df = np.zeros(buckets)
        for x in prompts:
            df[np.unique(_hashed(np.unique(x), buckets)[0])] += 1
        after = np.log((N + 1) / (df + 1)) + 1 if idf else np.ones(buckets)
        weight = None
    else:
        df = np.zeros(V)
        for x in prompts:
            df[np.unique(x)] += 1
        weight = np.log((N + 1) / (df + 1)) + 1 if idf else np.ones(V)
        after = None

    def features(items: Sequence[np.ndarray]) -> sp.csr_matrix:
        if keep is not None:
            items = [x[keep[x]] for x in items]
        return _features(items, buckets, weight, after)

    F = _features(prompts, buckets, weight, after)  # (the fit prompts: filtered above)
    sizes = [len(items) for items in fit.values()]
    y = np.repeat(np.arange(len(sizes)), sizes)
    w = 1.0 / np.asarray(sizes, float)[y]
    Y = np.eye(len(sizes))[y]
    A = (F.T @ sp.diags(w) @ F).toarray()
    B = F.T @ (w[:, None] * Y)
    out = {}
    for lam in LAMBDAS:
        out[lam] = scipy.linalg.solve(A + lam * np.eye(A.shape[0]), B, assume_a="pos")
    return features, out


def _blends(base: np.ndarray, features, weights: dict[float, np.ndarray],
            prompts: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """Every ``ridge λ`` and ``blend λ g`` score of ``prompts`` (``base``: the default's)."""
    F = features(prompts)
    out = {}
    for lam, W in weights.items():
        ridge = F @ W
        out[f"ridge λ={lam:g}"] = ridge
        for g in GAMMAS:
            out[f"blend λ={lam:g} g={g:g}"] = base + g * ridge
    return out


def _variants_of(args) -> Callable:
    """The scorer of ``explore_longer.score_all`` and ``fresh_unseen.judge``: today's
    default (``explore_longer``'s scoring, divided per distinct token as the ``geo``
    selector divides) and every configuration."""
    from explore_longer import _variants

    def variants(V: int, fit: Mapping[str, Sequence[np.ndarray]],
                 ids: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        total = _variants(V, fit, ids)["pair uni=each oov=each m=100000"]
        base = total / np.array([max(1, np.unique(x).size) for x in ids])[:, None]
        keep = _word_like(args.embedder) if args.words else None
        features, weights = _ridge(fit, V, args.buckets, not args.no_idf, args.form, keep)
        return {"default": base, **_blends(base, features, weights, ids)}
    return variants


def main() -> int:
    ap = script_parser(__doc__)
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS))
    ap.add_argument("--buckets", type=int, default=8192)
    ap.add_argument("--no-idf", action="store_true",
                    help="every token weighs 1 (no IDF: hashed statistics stay exact sums)")
    ap.add_argument("--form", choices=("prototype", "exact"), default="prototype",
                    help="exact: IDF per bucket, applied after the normalisation")
    ap.add_argument("--words", action="store_true",
                    help="the ridge sees word-like tokens only (two word characters in a row)")
    ap.add_argument("--by-source", action="store_true",
                    help="hold out whole sub-sources of the fit data (_holdout.source_holdout)")
    ap.add_argument("--fresh", metavar="LABEL",
                    help="step 3 of the rule: judge this configuration on the fresh checks")
    args = ap.parse_args()
    emb = load_embedder(args.embedder)
    if args.fresh:
        return judge(emb, args.data, _variants_of(args), "default", args.fresh)
    score_all(emb, args.settings, args.data, _variants_of(args), time.perf_counter(),
              args.by_source)
    return 0


if __name__ == "__main__":
    sys.exit(main())

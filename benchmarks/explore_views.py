"""Issue 6 exploration: a second view of the same prompt, the lowercased text.

The default's tables count token ids as the tokenizer gives them, so ``Theorem`` and
``theorem`` (or ``▁The`` and ``▁the``) are separate features with separate, sparser counts.
This family adds a second set of static token features: the ids (and adjacent id pairs) of
the prompt's text after a normalisation (``lower``: ``str.lower``; ``fold``: NFKC +
casefold), counted and solved exactly like the default's (binary NB, α = 0.03, pairs
Dirichlet-smoothed with m = 1e5), so statistics stay per-domain sums and add/remove stays
exact. A prompt's score is the default's mean log-likelihood + w times the normalised view's
(``w`` = 0 is the default; ``only`` scores the normalised view alone). Routing would
tokenise each prompt twice.

``--second EMBEDDER`` adds a third view: the same default router on another tokenizer
(e.g. ``minilm``: all-MiniLM-L6-v2's uncased WordPiece, an extra), the original text.

Rule, as everywhere in issue 6: fitted on the inner 80 % of each split's fit data and
scored on the held-out 20 %; ONE configuration for all splits by the highest mean held-out
balanced accuracy; test prompts are only scored.

Run:  python benchmarks/explore_views.py [--embedder wordllama] [--second minilm]
      [--settings ...]
"""

from __future__ import annotations

import sys
import unicodedata
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from _holdout import balanced, flatten, holdout, print_mean_choice, script_parser

from ir3de import Router, RouterConfig, compute_stats, load_embedder
from ir3de.eval import load_setting

SETTINGS = ("reasoning-paper", "reasoning-2fold", "reasoning-xdata", "domains")
NORMALISE: dict[str, Callable[[str], str]] = {
    "lower": str.lower,
    "fold": lambda s: unicodedata.normalize("NFKC", s).casefold(),
}
WEIGHTS = (0.25, 0.5, 1.0, 2.0)


def _log_scores(emb, fit: Mapping[str, Sequence[str]], texts: Sequence[str],
                view: Callable[[str], str] | None = None) -> np.ndarray:
    """Each text's log scores under today's ``default`` router fitted on ``fit`` (domains in
    ``fit`` order): its mean log-likelihoods up to a per-prompt constant; with ``view``,
    fit and texts both pass through it first."""
    def seen(items: Sequence[str]) -> list[str]:
        return [view(t) for t in items] if view else list(items)

    router = Router(emb, RouterConfig.preset("default")).fit_stats(
        [compute_stats(emb, seen(items), domain=d) for d, items in fit.items()])
    # (predict_proba's columns follow classes_, the names sorted, not the fit order)
    order = [list(router.classes_).index(d) for d in fit]
    with np.errstate(divide="ignore"):
        return np.log(router.predict_proba(seen(texts)))[:, order]


def _held_and_test(settings: Sequence[str], data_dir: str, labels: Sequence[str],
                   scores_of: Callable[[Mapping[str, list[str]], list[str]],
                                       Mapping[str, np.ndarray]]) -> None:
    """Score ``labels`` on every split of ``settings``: ``scores_of(fit texts per domain,
    prompts)`` gives each label's (prompts, domains) scores, fitted on the inner 80 % for
    the held-out 20 % and on the whole fit data for the test prompts; prints held-out → test
    balanced accuracy per split, then ``print_mean_choice``."""
    names: list[str] = []
    rows: dict[str, list[tuple[float, float]]] = {label: [] for label in labels}
    for setting in settings:
        for split in load_setting(setting, data_dir).splits:
            names.append(f"{setting} / {split.name}")
            domains = list(split.fit)
            inner, held = holdout(split.fit)
            held_texts, held_labels = flatten(held)
            accuracy = {}
            for part, fit, texts, gold in (
                    ("held", inner, held_texts, held_labels),
                    ("test", split.fit, split.test_texts, split.test_labels)):
                y = np.array([domains.index(d) for d in gold])
                accuracy[part] = {label: 100 * balanced(value, y)
                                  for label, value in scores_of(fit, list(texts)).items()}
            print(f"## {names[-1]}")
            for label in labels:
                rows[label].append((accuracy["held"][label], accuracy["test"][label]))
                print(f"  {label:24s} {rows[label][-1][0]:6.2f} → {rows[label][-1][1]:6.2f}",
                      flush=True)
    print_mean_choice("variant", names, rows)


def main() -> int:
    ap = script_parser(__doc__)
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS))
    ap.add_argument("--second", help="another embedder whose tokenizer is a third view")
    args = ap.parse_args()
    emb = load_embedder(args.embedder)
    second = load_embedder(args.second) if args.second else None
    views = [*NORMALISE, *([args.second] if second else [])]
    labels = ["default"] + [f"{n} only" for n in views] + \
        [f"{n} w={w:g}" for n in views for w in WEIGHTS]
    others: dict[str, tuple] = {n: (emb, f) for n, f in NORMALISE.items()}
    if second is not None:
        others[args.second] = (second, None)

    def scores_of(fit: Mapping[str, list[str]], texts: list[str]) -> dict[str, np.ndarray]:
        base = _log_scores(emb, fit, texts)
        out = {"default": base}
        for n, (e, f) in others.items():
            other = _log_scores(e, fit, texts, f)
            out[f"{n} only"] = other
            for w in WEIGHTS:
                out[f"{n} w={w:g}"] = base + w * other
        return out

    _held_and_test(args.settings, args.data, labels, scores_of)
    return 0


if __name__ == "__main__":
    sys.exit(main())

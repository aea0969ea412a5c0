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
from collections.abc import Callable, Mapping

import numpy as np
from _holdout import default_log_scores, held_and_test, script_parser

from ir3de import load_embedder

SETTINGS = ("reasoning-paper", "reasoning-2fold", "reasoning-xdata", "domains")
NORMALISE: dict[str, Callable[[str], str]] = {
    "lower": str.lower,
    "fold": lambda s: unicodedata.normalize("NFKC", s).casefold(),
}
WEIGHTS = (0.25, 0.5, 1.0, 2.0)


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
        base = default_log_scores(emb, fit, texts)
        out = {"default": base}
        for n, (e, f) in others.items():
            other = default_log_scores(e, fit, texts, f)
            out[f"{n} only"] = other
            for w in WEIGHTS:
                out[f"{n} w={w:g}"] = base + w * other
        return out

    held_and_test(args.settings, args.data, labels, scores_of)
    return 0


if __name__ == "__main__":
    sys.exit(main())

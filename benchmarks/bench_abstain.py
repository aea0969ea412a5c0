"""Accuracy vs coverage when the router may abstain (send a prompt to the fallback expert).

The router's decision scores are its per-expert confidences (``Decision.scores``: the mean
probability for ``avg``, the softmax of the mean log-likelihood for ``geo``, the default's
selector); the winner's margin over the runner-up is the confidence used here. A threshold
is chosen on a held-out 20 % of each split's FIT data as the margin quantile that keeps the
target coverage there, then applied unchanged to the test prompts (never tuned on them). The
gateway's ``threshold`` applies the same kind of cut to ``Decision.confidence``.

Run:  python benchmarks/bench_abstain.py [--embedder wordllama] [--preset default]
                                        [--data ../shared/data]
"""

from __future__ import annotations

import sys

import numpy as np
from _holdout import decision_margins, flatten, holdout, kept_balanced, script_parser

from ir3de import Router, RouterConfig, compute_stats, load_embedder
from ir3de.eval import load_setting
from ir3de.router import PRESETS

COVERAGES = (1.0, 0.95, 0.9, 0.8)


def _margins(router: Router, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Predicted expert index and top-1 minus top-2 confidence, per prompt."""
    return decision_margins(router.experts, router.route_batch(texts, scores=True))


def main() -> int:
    ap = script_parser(__doc__)
    ap.add_argument("--preset", default="default", choices=sorted(PRESETS))
    args = ap.parse_args()
    emb = load_embedder(args.embedder)
    config = RouterConfig.preset(args.preset)
    print(f"embedder {emb.name}, preset {args.preset}; balanced accuracy (%) on the prompts the "
          "router keeps; in brackets the test coverage overall and of the least-covered domain\n")
    print("| setting / split | " + " | ".join(f"target coverage {100 * c:.0f} %"
                                             for c in COVERAGES) + " |")
    print("|---|" + "---|" * len(COVERAGES))
    for name in ("reasoning-2fold", "reasoning-xdata", "domains"):
        for split in load_setting(name, args.data).splits:
            inner, held = holdout(split.fit)
            stats = [compute_stats(emb, t, domain=d) for d, t in inner.items()]
            _, held_margin = _margins(Router(emb, config).fit_stats(stats),
                                      flatten(held)[0])
            router = Router(emb, config).fit_stats(
                [compute_stats(emb, t, domain=d) for d, t in split.fit.items()])
            pred, margin = _margins(router, split.test_texts)
            gold = np.array([router.experts.index(d) for d in split.test_labels])
            cells = []
            for cov in COVERAGES:
                threshold = np.quantile(held_margin, 1 - cov) if cov < 1 else -np.inf
                keep = margin >= threshold
                worst = min(keep[gold == d].mean() for d in np.unique(gold))
                cells.append(f"{100 * kept_balanced(pred, gold, keep):.1f} "
                             f"({100 * keep.mean():.0f} %, ≥ {100 * worst:.0f} %)")
            print(f"| {name} / {split.name} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Choose the router's default selector, k and balancing on held-out FIT data only.

Protocol: take the leakage-free Reasoning fit sets (gsm8k train, m_arc train,
MBPP train+validation+prompt, Alpaca), hold out a seeded 20 % of every domain,
fit on the other 80 %, and measure balanced routing accuracy on the held-out
20 % for every setting in the grid. No test prompt (gsm8k test, m_arc test,
HumanEval, IFEval) is read. The winner is the highest mean over three seeds;
ties (within 0.1 point) go to the cheaper setting (smaller k). Run on the embedding-only
ridge (the ``dense`` preset) it was made for; identity features came later (issue 6,
benchmarks/explore_identity.py) and keep these choices.

Run:  python benchmarks/choose_defaults.py [--embedder wordllama|minilm] [--data DIR]
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from _holdout import holdout

from ir3de import Router, compute_stats, load_embedder
from ir3de.data import reasoning_split

GRID = [("topk", k) for k in (1, 2, 5, 10, 20, 50, 100, 200, 500)] + [("all", 0), ("avg", 0)]


def balanced_accuracy(router: Router, test: dict[str, list[str]]) -> float:
    return float(np.mean([np.mean([p == d for p in router.predict(texts)])
                          for d, texts in test.items()]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--embedder", default="wordllama")
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    emb = load_embedder(args.embedder)
    fit_all, _ = reasoning_split(args.data, protocol="xdata")  # test half ignored on purpose
    results: dict[tuple[bool, str, int], list[float]] = {}
    for seed in range(args.seeds):
        fit, held = holdout(fit_all, seed)
        stats = [compute_stats(emb, t, domain=d) for d, t in fit.items()]
        for balance in (False, True):
            router = Router(emb, model="ridge", balance=balance, identity=None).fit_stats(stats)
            for selector, k in GRID:
                router.set_params(selector=selector, k=max(k, 1))
                results.setdefault((balance, selector, k), []).append(
                    balanced_accuracy(router, held))
    print(f"embedder {emb.name}: held-out 20% of the fit sets, balanced accuracy (%), "
          f"mean of {args.seeds} seeds")
    print("| balance | " + " | ".join(f"{s}{k or ''}" for s, k in GRID) + " |")
    print("|---|" + "---|" * len(GRID))
    for balance in (False, True):
        cells = [f"{100 * np.mean(results[(balance, s, k)]):.1f}" for s, k in GRID]
        print(f"| {'on' if balance else 'off (paper)'} | " + " | ".join(cells) + " |")
    for balance in (False, True):
        best = max(100 * np.mean(results[(balance, s, k)]) for s, k in GRID if s == "topk")
        k = min(k for s, k in GRID if s == "topk"
                and 100 * np.mean(results[(balance, s, k)]) >= best - 0.1)
        print(f"best topk with balance {'on' if balance else 'off'}: k={k} ({best:.1f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

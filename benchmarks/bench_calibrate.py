"""Do the cuts `ir3de calibrate --folds 5` picks on a router's fit prompts hold on its test
prompts? And what does cross-fitting cost against routing the same prompts once?

For each split, the default router is fitted on the split's fit prompts; `calibrate` holds
each of 5 folds of those prompts out exactly (their statistics subtracted, the rest
re-solved) and picks the `threshold` and `min_coverage` cuts that keep 99 / 95 / 90 % of
them. The full router then routes the split's test prompts (never read before this point)
with each cut: the share of test prompts kept, their balanced accuracy, and the domain kept
least. Timings: calibrate (5 re-solves, counting each fold, routing every prompt once)
against one plain `route_batch` of the same prompts, in this process.

Run:  python benchmarks/bench_calibrate.py [--embedder wordllama] [--data ../shared/data]
"""

from __future__ import annotations

import sys
import time

import numpy as np
from _holdout import script_parser

from ir3de import Router, load_embedder
from ir3de.calibration import calibrate
from ir3de.eval import load_setting

KEEP = (0.99, 0.95, 0.9)


def main() -> int:
    args = script_parser(__doc__).parse_args()
    emb = load_embedder(args.embedder)
    print(f"embedder {emb.name}, preset default; cuts by 5-fold calibration on the fit prompts, "
          "kept share and balanced accuracy (%) on the fit prompts (cross-fitted) -> test "
          "prompts\n")
    print("| setting / split | cut | keep | value | fit: kept / accuracy | test: kept / "
          "accuracy | test: kept least |")
    print("|---|---|---|---|---|---|---|")
    timings = []
    for name in ("reasoning-2fold", "reasoning-xdata", "domains"):
        for split in load_setting(name, args.data).splits:
            router = Router(emb).fit(split.fit_texts, split.fit_labels)
            start = time.perf_counter()
            router.route_batch(split.fit_texts)
            plain = time.perf_counter() - start
            start = time.perf_counter()
            result = calibrate(router, split.fit_texts, split.fit_labels, folds=5, keep=KEEP)
            timings.append((f"{name} / {split.name}", len(split.fit_texts), plain,
                            time.perf_counter() - start))
            decisions = router.route_batch(split.test_texts)
            gold = np.array(split.test_labels)
            right = np.array([d.expert for d in decisions]) == gold
            for knob in result.knobs:
                values = np.array([d.confidence if knob == "threshold" else d.coverage
                                   for d in decisions])
                for share in KEEP:
                    cut = result.cut(knob, share)
                    kept = values >= cut.value
                    recall = [right[kept & (gold == d)].mean() for d in np.unique(gold)
                              if np.any(kept & (gold == d))]
                    least = min(np.unique(gold), key=lambda d: kept[gold == d].mean())
                    print(f"| {name} / {split.name} | {knob} | {100 * share:.0f} % | "
                          f"{cut.value:.3f} | {100 * cut.kept:.1f} / {100 * cut.accuracy:.2f} | "
                          f"{100 * kept.mean():.1f} / {100 * np.mean(recall):.2f} | "
                          f"{least} {100 * kept[gold == least].mean():.0f} % |")
    print("\n| split | fit prompts | route once (s) | calibrate, 5 folds (s) | ratio |")
    print("|---|---|---|---|---|")
    for label, n, plain, folds in timings:
        print(f"| {label} | {n} | {plain:.2f} | {folds:.2f} | {folds / plain:.1f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Issue 6 diagnostic: how many prompts can the held-out rule still tell apart?

Every setting of the default was chosen on a held-out 20 % of each split's fit data
(``_holdout.py``; test prompts of every setting left out of it), then checked on fresh
prompts. This script counts what that held-out part can still see: per split, the held-out
prompts the ``default`` router misroutes (fitted on the other 80 %), beside TF-IDF + LR, the
best bag-of-words baseline, fitted and scored on the same parts. Where the default misroutes
no held-out prompt, or one, no variant can be chosen over it on held-out data: a gap on that
setting's test prompts is below what the rule resolves. The test figures are printed beside
them for reference (both fitted on the whole fit data); they choose nothing.

It chooses nothing. MoDEM-style is left out: fine-tuning it per split costs minutes, and the
question is what the fit data shows, not who wins.

Run:  python benchmarks/rule_resolution.py [--embedder wordllama] [--settings domains ...]
      [--seeds 0 1 2 3 4]
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from _holdout import TokenizedSplit, flatten, script_parser, test_texts

from ir3de import Router, load_embedder
from ir3de.baselines import TfidfLogReg
from ir3de.eval import load_setting
from ir3de.eval.metrics import bootstrap_balanced, percentile_interval
from ir3de.eval.settings import SETTINGS


def _errors(gold: Sequence[str], pred: Sequence[str]) -> tuple[float, int, Counter]:
    """Balanced accuracy, the number of misrouted prompts and the (gold, predicted) counts."""
    gold_a, pred_a = np.asarray(gold), np.asarray(pred)
    recall = [np.mean(pred_a[gold_a == d] == d) for d in np.unique(gold_a)]
    wrong = Counter((g, p) for g, p in zip(gold, pred, strict=True) if g != p)
    return float(np.mean(recall)), sum(wrong.values()), wrong


def _row(label: str, routers: dict[str, Callable[[], Any]], fit: dict[str, list[str]],
         texts: list[str], gold: list[str]) -> None:
    """Fit every router on ``fit`` (domain -> texts), route ``texts`` and print one table row:
    each router's balanced accuracy and errors, and the first minus the second with a paired
    bootstrap interval."""
    fit_texts = [t for d in fit for t in fit[d]]
    fit_labels = [d for d in fit for _ in fit[d]]
    cells, correct, accs = [], [], []
    for make in routers.values():
        pred = list(make().fit(fit_texts, fit_labels).predict(texts))
        acc, n_wrong, wrong = _errors(gold, pred)
        top = ", ".join(f"{g}→{p} {n}" for (g, p), n in wrong.most_common(3))
        cells.append(f"{100 * acc:.2f} ({n_wrong} wrong{': ' + top if top else ''})")
        correct.append(np.asarray(pred) == np.asarray(gold))
        accs.append(acc)
    samples = bootstrap_balanced(np.array(correct), gold)
    low, high = percentile_interval(100 * (samples[0] - samples[1]))
    gap = 100 * (accs[0] - accs[1])
    print(f"| {label} | {len(texts)} | " + " | ".join(cells)
          + f" | {gap:+.2f} ({low:+.2f} to {high:+.2f}) |", flush=True)


def main() -> int:
    ap = script_parser(__doc__)
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=SETTINGS)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0],
                    help="the settings' seeds (the domains split, the HumanEval / IFEval "
                         "halves); the held-out part is drawn with seed 0, as _holdout's")
    args = ap.parse_args()
    start = time.perf_counter()
    emb = load_embedder(args.embedder)
    routers = {"default": lambda: Router(emb), "TF-IDF + LR": TfidfLogReg}
    print(f"Embedder {emb.name}. Balanced accuracy (%) and misrouted prompts, the three most "
          "common confusions named.\n")
    print("| split, part | prompts | " + " | ".join(routers)
          + " | default minus TF-IDF + LR (paired 95 % interval) |")
    print("|---|---|" + "---|" * (len(routers) + 1))
    for seed in args.seeds:
        settings = {name: load_setting(name, args.data, seed=seed) for name in SETTINGS}
        tested = test_texts(settings.values())
        for name in args.settings:
            for split in settings[name].splits:
                # the parts every explore_* script reads: prompts with a token, a seed-0
                # 20 % per domain held out, test prompts of every setting left out of it
                data = TokenizedSplit(emb, split, tested=tested)
                label = f"{name} / {split.name} (seed {seed})"
                _row(f"{label}, held-out", routers, data.inner_texts,
                     *flatten(data.held_texts))
                _row(f"{label}, test", routers, data.fit_texts, list(split.test_texts),
                     list(split.test_labels))
    print(f"\n[{time.perf_counter() - start:.0f} s]")
    return 0


if __name__ == "__main__":
    sys.exit(main())

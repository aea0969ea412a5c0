"""Routing accuracy on the leakage-free Reasoning protocols, per preset and embedder.

Protocols (see ir3de.data): ``xdata`` fits coding on MBPP and instruction following
on Alpaca and tests on HumanEval / IFEval (datasets never fitted on); ``2fold``
fits them on one half of HumanEval / IFEval and tests on the other half (both
folds). Math and multilingual: gsm8k / m_arc train -> test in both.

Settings were NOT tuned here: the presets' k and selector come from
benchmarks/choose_defaults.py, which only reads held-out fit data.

Run:  python benchmarks/bench_accuracy.py [--embedder wordllama minilm] [--data DIR]
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from ir3de import Router, RouterConfig, compute_stats, load_embedder
from ir3de.data import reasoning_split


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--embedder", nargs="+", default=["wordllama"])
    ap.add_argument("--data", default="../shared/data")
    args = ap.parse_args()
    print("| embedder | preset | protocol | math | multilingual | coding | instruction | "
          "balanced | micro |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.embedder:
        emb = load_embedder(name)
        for protocol, fold in (("xdata", 0), ("2fold", 0), ("2fold", 1)):
            fit, test = reasoning_split(args.data, protocol=protocol, fold=fold)
            stats = [compute_stats(emb, texts, domain=d, skip_pairs=True)  # (`skips` reads them)
                     for d, texts in fit.items()]
            for preset in ("default", "spelling-prior", "pairs", "skips", "unigram", "identity",
                           "dense", "paper"):
                router = Router(emb, RouterConfig.preset(preset)).fit_stats(stats)
                hits = {d: np.array([p == d for p in router.predict(t)]) for d, t in test.items()}
                per = {d: 100 * h.mean() for d, h in hits.items()}
                micro = 100 * np.concatenate(list(hits.values())).mean()
                label = protocol if protocol == "xdata" else f"2fold/{fold}"
                print(f"| {emb.name} | {preset} | {label} | "
                      + " | ".join(f"{v:.1f}" for v in per.values())
                      + f" | **{np.mean(list(per.values())):.1f}** | {micro:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

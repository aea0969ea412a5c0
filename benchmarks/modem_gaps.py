"""Gaps of the `default` preset to MoDEM-style, whose runs kept no per-prompt decisions.

The MoDEM-style baseline ran separately (docs/evaluation/modem*/), so `ir3de eval` could not
pair its decisions with those of the main run's routers. This script rebuilds, from each
router's pooled confusion matrix, which prompts of each domain it got right (their order is
unknown, so the two routers are resampled independently: an *unpaired* interval, wider than
a paired one) and prints `default` minus MoDEM-style with a 95 % stratified bootstrap
interval; where the MoDEM-style run itself evaluated the same router
(docs/evaluation/modem-reasoning, WordLlama), it also prints that run's paired interval.

Run:  python benchmarks/modem_gaps.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ir3de.eval.metrics import bootstrap_balanced, percentile_interval

RUNS = Path("docs/evaluation")


def _hits(router: dict, domains: list[str]) -> tuple[np.ndarray, list[str]]:
    """A (1, prompts) hit vector and gold labels with the confusion matrix's per-domain
    counts."""
    cm = np.asarray(router["confusion"])
    gold = [d for i, d in enumerate(domains) for _ in range(cm[i].sum())]
    hits = np.concatenate([np.arange(cm[i].sum()) < cm[i, i] for i in range(len(domains))])
    return hits[None, :], gold


def main() -> None:
    main_run = {s["setting"]: s for s in json.loads((RUNS / "results.json").read_text())
                ["settings"]}
    for folder in sorted(RUNS.glob("modem*")):
        for setting in json.loads((folder / "results.json").read_text())["settings"]:
            name, domains = setting["setting"], setting["domains"]
            modem = next(r for r in setting["routers"] if r["name"] == "MoDEM-style")
            theirs = bootstrap_balanced(*_hits(modem, domains), seed=1)[0]
            for emb in ("wordllama", "minilm"):
                ours = next(r for r in main_run[name]["routers"]
                            if r["name"] == f"IR3DE geo [{emb}, default]")
                low, high = percentile_interval(
                    bootstrap_balanced(*_hits(ours, domains), seed=0)[0] - theirs)
                print(f"{name} [{emb}]: {100 * (ours['balanced'] - modem['balanced']):+.2f} "
                      f"({100 * low:+.2f} to {100 * high:+.2f}) unpaired", end="")
                # A MoDEM-style run made beside this router has the paired interval itself.
                paired = ((setting.get("comparison") or {}).get("differences") or {}).get(
                    ours["name"])
                print("" if paired is None else
                      f"; paired in {folder.name}: {100 * paired['difference']:+.2f} "
                      f"({100 * paired['low']:+.2f} to {100 * paired['high']:+.2f})")


if __name__ == "__main__":
    main()

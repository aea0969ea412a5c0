"""Gaps of the `default`, `pairs` and `tfidf` presets to MoDEM-style, whose runs kept no
per-prompt decisions.

The MoDEM-style baseline ran separately (docs/evaluation/modem*/), so `ir3de eval` could not
pair its decisions with those of the main run's routers. This script rebuilds, from each
router's pooled confusion matrix, which prompts of each domain it got right (their order is
unknown, so the two routers are resampled independently: an *unpaired* interval, wider than
a paired one) and prints `default` minus MoDEM-style with a 95 % stratified bootstrap
interval, for the MoDEM-style runs on the main run's seeds; where a MoDEM-style run itself
evaluated the same router (modem-reasoning, modem-2fold-seeds: WordLlama), it also prints
that run's paired interval. The runs made before the spelling back-off became the default
(2026-11-25, late) call today's `pairs` `default`; the two made after (the folders ending
in -spelling) ran both under today's names.

Run:  python benchmarks/modem_gaps.py
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ir3de.eval.metrics import bootstrap_balanced, percentile_interval

RUNS = Path(__file__).resolve().parent.parent / "docs" / "evaluation"  # (from any folder)
# The MoDEM-style runs made before the spelling back-off was the default, and the name each
# preset has in them (today's default ran in none of them).
_BEFORE_SPELLING = {"modem", "modem-2fold-seeds", "modem-domains", "modem-gpu",
                    "modem-reasoning"}
_NAMED_THEN = {"default": None, "pairs": "default", "tfidf": "tfidf"}


def _hits(router: dict, domains: list[str]) -> tuple[np.ndarray, list[str]]:
    """A (1, prompts) hit vector and gold labels with the confusion matrix's per-domain
    counts."""
    cm = np.asarray(router["confusion"])
    gold = [d for i, d in enumerate(domains) for _ in range(cm[i].sum())]
    hits = np.concatenate([np.arange(cm[i].sum()) < cm[i, i] for i in range(len(domains))])
    return hits[None, :], gold


def _seeds(run: dict) -> list[int]:
    """The split seeds of a run (runs made before ``--seed S…`` record one ``seed``)."""
    return run["meta"].get("seeds", [run["meta"]["seed"]])


def main() -> None:
    # (no options: --help ran the whole script)
    argparse.ArgumentParser(description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    main_run = json.loads((RUNS / "results.json").read_text())
    ours_by_setting = {s["setting"]: s for s in main_run["settings"]}
    for found in sorted(RUNS.glob("modem*/results.json")):  # (modem-gpu holds its own runs)
        folder = found.parent
        run = json.loads(found.read_text())
        # Only a run on the main run's seeds tests the same prompts as its routers.
        same_splits = _seeds(run) == _seeds(main_run)
        for setting in run["settings"]:
            name, domains = setting["setting"], setting["domains"]
            modem = next(r for r in setting["routers"] if r["name"] == "MoDEM-style")
            theirs = bootstrap_balanced(*_hits(modem, domains), seed=1)[0]
            for emb, preset in [(e, p) for e in ("wordllama", "minilm")
                                for p in ("default", "pairs", "tfidf")]:
                label = f"IR3DE geo [{emb}, {preset}]"
                # A MoDEM-style run made beside this router has the paired interval itself.
                named = _NAMED_THEN[preset] if folder.name in _BEFORE_SPELLING else preset
                paired = ((setting.get("comparison") or {}).get("differences") or {}).get(
                    f"IR3DE geo [{emb}, {named}]") if named is not None else None
                parts = []
                if same_splits:
                    ours = next(r for r in ours_by_setting[name]["routers"]
                                if r["name"] == label)
                    low, high = percentile_interval(
                        bootstrap_balanced(*_hits(ours, domains), seed=0)[0] - theirs)
                    parts.append(f"{100 * (ours['balanced'] - modem['balanced']):+.2f} "
                                 f"({100 * low:+.2f} to {100 * high:+.2f}) unpaired")
                if paired is not None:
                    parts.append(f"paired in {folder.name} (seeds "
                                 f"{', '.join(map(str, _seeds(run)))}): "
                                 f"{100 * paired['difference']:+.2f} "
                                 f"({100 * paired['low']:+.2f} to {100 * paired['high']:+.2f})")
                if parts:
                    print(f"{name} [{emb}, {preset}]: " + "; ".join(parts))

if __name__ == "__main__":
    main()

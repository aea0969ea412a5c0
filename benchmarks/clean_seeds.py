"""Repeated splits, judged only on test prompts that no choice of a setting has seen.

The settings of the `default` preset were chosen on the held-out part of seed 0's fit
data (benchmarks/_holdout.py) and on the fresh checks (benchmarks/fresh_unseen.py, whose
check F3 routes seed 0's `code_python` fit prompts). Another seed splits `domains` anew:
some of its test prompts are then prompts those choices were judged on (19 to 20 % of a
seed's test prompts from seed 1 on, most of its `code_python` ones among them).
`ir3de eval --seed 0 1 …` tests on them all. This script repeats the split over the seeds
as the harness does, but leaves out of each split's test prompts every one the choices have
seen (``--keep-seen`` keeps them, which reproduces `ir3de eval --seed`), and pools the
seeds into one paired comparison of the `default` preset with TF-IDF + LR (its shipped C,
and ``--C`` values of its own, such as the one benchmarks/baseline_tuning.py chooses on
held-out data).

Run:  python benchmarks/clean_seeds.py [--setting domains] [--seeds 0 1 ... 19]
                                       [--C 10 300] [--embedder wordllama] [--keep-seen]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import time

from _holdout import script_parser, tokenized_splits

from ir3de import load_embedder
from ir3de.baselines import TfidfLogReg
from ir3de.eval import evaluate, load_setting
from ir3de.eval.settings import Setting, repeat_setting


class _TfidfAt(TfidfLogReg):
    """TF-IDF + LR named by its C, so that several Cs are compared in one run."""

    def __init__(self, *, C: float, seed: int = 0) -> None:
        super().__init__(C=C, seed=seed)
        self.name = f"TF-IDF+LR C={C:g}"


HEADER = ("| TF-IDF + LR's C | TF-IDF + LR (%) | `default` (%) | `default` minus TF-IDF + LR "
          "(points, paired 95 % bootstrap) |\n|---|---|---|---|")


def gap_row(setting: Setting, emb, embedder: str, label: str, C: float) -> str:
    """A row of :data:`HEADER`: TF-IDF + LR at ``C`` and the `default` preset on
    ``setting``'s test prompts, and the paired interval of their gap (one run per C, so
    that each gap is against that baseline, not the best of several)."""
    result = evaluate(setting, embedders=[emb], presets=["default"],
                      baselines=[("tfidf", functools.partial(_TfidfAt, C=C))], progress=False)
    routers = {r["name"]: r for r in result["routers"]}
    router = f"IR3DE geo [{embedder}, default]"
    d = result["comparison"]["differences"][router]
    return (f"| {label} | {100 * routers[f'TF-IDF+LR C={C:g}']['balanced']:.2f} | "
            f"{100 * routers[router]['balanced']:.2f} | {100 * d['difference']:+.2f} "
            f"({100 * d['low']:+.2f} to {100 * d['high']:+.2f}) |")


def seen_texts(emb, name: str, data_dir: str) -> frozenset[str]:
    """The prompts (stripped) the choices of settings were judged on: the held-out part
    of seed 0's fit data of setting ``name``, and for ``domains`` the fit part of
    `code_python` that fresh_unseen.py's check F3 routes."""
    seen = {t.strip() for _, split in tokenized_splits(emb, [name], data_dir)
            for texts in split.held_texts.values() for t in texts}
    if name == "domains":
        seen |= {t.strip() for t in load_setting(name, data_dir).splits[0].fit["code_python"]}
    return frozenset(seen)


def unseen_only(setting: Setting, seen: frozenset[str]) -> Setting:
    """``setting`` with every split's test prompts in ``seen`` left out."""
    splits = []
    for split in setting.splits:
        keep = [i for i, t in enumerate(split.test_texts) if t.strip() not in seen]
        splits.append(dataclasses.replace(
            split, test_ids=[split.test_ids[i] for i in keep],
            test_texts=[split.test_texts[i] for i in keep],
            test_labels=[split.test_labels[i] for i in keep]))
    return dataclasses.replace(setting, splits=splits)


def main() -> None:
    ap: argparse.ArgumentParser = script_parser(__doc__)
    ap.add_argument("--setting", default="domains")
    ap.add_argument("--seeds", nargs="+", type=int, default=list(range(20)))
    ap.add_argument("--C", nargs="+", type=float, default=[10.0],
                    help="TF-IDF + LR's inverse regularisation strengths to compare")
    ap.add_argument("--keep-seen", action="store_true",
                    help="test on every prompt (what `ir3de eval --seed` does)")
    args = ap.parse_args()
    emb = load_embedder(args.embedder)
    start = time.perf_counter()
    seen = frozenset() if args.keep_seen else seen_texts(emb, args.setting, args.data)

    def load(seed: int) -> Setting:
        return unseen_only(load_setting(args.setting, args.data, seed=seed), seen)

    setting = repeat_setting(load, args.seeds)
    n_test = sum(len(split.test_texts) for split in setting.splits)
    n_all = sum(len(split.test_texts) for split in
                repeat_setting(lambda s: load_setting(args.setting, args.data, seed=s),
                               args.seeds).splits)
    print(f"{args.setting}, seeds {args.seeds[0]}-{args.seeds[-1]} ({len(args.seeds)}): "
          f"{n_test} of {n_all} test prompts kept ({n_all - n_test} seen by the choices "
          f"left out)" if not args.keep_seen else f"{n_all} test prompts (all kept)",
          flush=True)
    print(HEADER)
    for C in dict.fromkeys(args.C):
        print(gap_row(setting, emb, args.embedder, f"{C:g}", C), flush=True)
    print(f"({time.perf_counter() - start:.0f} s)")

if __name__ == "__main__":
    main()

"""Wall time of ``Router.add_expert`` / ``Router.remove_expert`` at h = 384 and h = 4096.

Setup (nothing is downloaded, nothing is written outside a temporary folder):

* an embedder made of WordLlama's Llama-2 ``tokenizer.json`` (shipped in the
  ``wordllama`` package) and a random 32000 x h float32 table saved as ``.npy``,
  loaded with ``load_embedder(tokenizer_json, table=npy_path)``;
* per domain, a random token-id histogram (``--nnz`` distinct ids, Zipf-like
  counts) turned into statistics with ``ir3de.statistics.stats_from_counts``.

Measured per h, best and median of ``--repeats`` rounds after a warm-up round:

* ``add_expert`` of a 5th domain to a router holding 4, then ``remove_expert`` of it;
* baselines in the same process: a full refit from the statistics
  (``Router(...).fit_stats`` of all 5, resp. the 4 left), and a full refit from the
  histograms (``stats_from_counts`` of every domain + ``fit_stats``), i.e. what a
  system without stored statistics would redo;
* where the time of one re-solve goes: ``solver.design`` (sum of the A_d, each formed
  from its histogram once and kept with its statistics),
  ``solver.solve`` (LU solve of the (h+1) x (h+1) system) and
  ``selector.vocab_scores`` (per-vocabulary probabilities/entropy/votes); with identity
  features, ``solver.solve_identity_auto`` (the μ search, which keeps its solve at the
  chosen μ; what the router runs), one ``solver.solve_identity`` at that μ alone (what a
  fixed μ would cost instead) and ``vocab_scores``.

It also checks (and prints) that add-then-remove gives back bit-identical W, and
that add gives the W of a full refit on the 5 domains.

Run:
    python benchmarks/bench_experts.py                 # h = 384 and 4096, preset dense
    python benchmarks/bench_experts.py --preset identity --dims 384   # with the μ search
    python benchmarks/bench_experts.py --dims 384 1024 4096 --repeats 5
    python benchmarks/bench_experts.py --quick         # 2 repeats, smaller histograms
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics as pystats
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ir3de import Router, RouterConfig, load_embedder
from ir3de.embedding import Embedder
from ir3de.router import PRESETS
from ir3de.selector import VocabScores, vocab_scores
from ir3de.solver import design, solve, solve_identity, solve_identity_auto, solve_nb
from ir3de.statistics import DomainStats, stats_from_counts

VOCAB = 32000


def wordllama_tokenizer() -> Path:
    spec = importlib.util.find_spec("wordllama")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the wordllama package is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "tokenizers" / \
        "l2_supercat_tokenizer_config.json"
    if not path.is_file():
        raise SystemExit(f"{path}: missing from the wordllama package")
    return path


def random_embedder(folder: Path, h: int, seed: int) -> Embedder:
    rng = np.random.default_rng(seed)
    table = np.empty((VOCAB, h), dtype=np.float32)
    for start in range(0, VOCAB, 4096):  # bounded temporaries at h = 4096
        block = rng.standard_normal((min(4096, VOCAB - start), h), dtype=np.float32)
        table[start:start + block.shape[0]] = block / np.sqrt(h)
    npy = folder / f"random_{h}.npy"
    np.save(npy, table)
    return load_embedder(wordllama_tokenizer(), table=npy)


def random_counts(rng: np.random.Generator, nnz: int, tokens: int) -> np.ndarray:
    """A Zipf-like histogram over ``nnz`` random ids holding about ``tokens`` tokens."""
    counts = np.zeros(VOCAB, dtype=np.int64)
    ids = rng.choice(np.arange(3, VOCAB), size=nnz, replace=False)  # 0-2 are specials
    weights = 1.0 / np.arange(1, nnz + 1)
    counts[ids] = np.maximum(1, np.round(tokens * weights / weights.sum())).astype(np.int64)
    return counts


def timed(fn: Callable[..., Any], *fargs: Any, **fkwargs: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn(*fargs, **fkwargs)
    return time.perf_counter() - t0, out


def summary(times: list[float]) -> str:
    return f"{fmt_s(min(times))} / {fmt_s(pystats.median(times))}"


def fmt_s(x: float) -> str:
    return f"{x * 1e3:.1f} ms" if x < 1 else f"{x:.2f} s"


def bench_dim(h: int, args: argparse.Namespace, folder: Path) -> tuple[list[str], list[str]]:
    t_table, emb = timed(lambda: random_embedder(folder, h, args.seed))
    rng = np.random.default_rng(args.seed + h)
    names = [f"domain{i}" for i in range(args.domains + 1)]
    hists = {n: random_counts(rng, args.nnz, int(rng.integers(200_000, 2_000_000)))
             for n in names}

    def stats_of(name: str) -> DomainStats:
        # 1000 prompts: a token occurs in at most every one of them (the nb model's input);
        # of up to 2,000 tokens each (counts of up to 2 M tokens)
        return stats_from_counts(emb, hists[name], domain=name, n_prompts=1000,
                                 doc_counts=np.minimum(hists[name], 1000), max_tokens=4096)

    t_stats, first = timed(lambda: stats_of(names[0]))
    stats = {names[0]: first, **{n: stats_of(n) for n in names[1:]}}
    base, new = names[:-1], names[-1]
    config = RouterConfig.preset(args.preset)

    def refit(which: list[str]) -> Router:
        return Router(emb, config).fit_stats({n: stats[n] for n in which})

    def refit_hist(which: list[str]) -> Router:
        return Router(emb, config).fit_stats([stats_of(n) for n in which])

    router = refit(base)
    W4 = router.W.copy()
    times: dict[str, list[float]] = {k: [] for k in (
        "add", "remove", "refit5", "refit4", "refit5_hist", "design", "solve", "scores")}
    five = {n: stats[n] for n in [*base, new]}
    ridge = {"lam": config.lam, "balance": config.balance,
             "regularize_bias": config.regularize_bias}
    same_remove = same_add = True
    diff_remove = diff_add = 0.0
    for rnd in range(args.repeats + 1):  # round 0 is the warm-up
        t_add, _ = timed(lambda: router.add_expert(new, stats[new]))
        W5 = router.W.copy()
        t_rm, _ = timed(lambda: router.remove_expert(new))
        W4b = router.W.copy()
        t_r5, ref5 = timed(lambda: refit([*base, new]))
        t_r4, _ = timed(lambda: refit(base))
        t_hist = timed(lambda: refit_hist([*base, new]))[0] if rnd < 2 or args.hist_every else 0.0
        if config.model == "nb":  # "design": the log-likelihood table; no linear solve
            # the α the five-expert refit resolved ("auto" follows the prompt counts)
            t_design, L = timed(solve_nb, five, list(five), alpha=ref5.smoothing[0])
            t_solve = 0.0
            t_scores, _ = timed(VocabScores.from_logits, L)
        elif config.identity is None:
            t_design, (A, B) = timed(design, stats, [*base, new], balance=config.balance,
                                     embedder=emb)
            t_solve, W = timed(solve, A, B, lam=config.lam, normalize=config.normalize,
                               regularize_bias=config.regularize_bias)
            t_scores, _ = timed(vocab_scores, emb, W)
        else:  # "design": the μ search (with its solve at the best μ); "solve": one solve
            mu = config.identity
            if mu == "auto":
                t_design, (_, _, mu) = timed(solve_identity_auto, five, list(five), emb,
                                             **ridge)
            else:
                t_design = 0.0
            t_solve, (W, U) = timed(solve_identity, five, list(five), emb, mu=mu, **ridge)
            t_scores, _ = timed(vocab_scores, emb, W, U)
        same_remove &= bool(np.array_equal(W4b, W4))
        same_add &= bool(np.array_equal(W5, ref5.W))
        diff_remove = max(diff_remove, float(np.abs(W4b - W4).max()))
        diff_add = max(diff_add, float(np.abs(W5 - ref5.W).max()))
        if rnd == 0:
            continue
        for key, val in (("add", t_add), ("remove", t_rm), ("refit5", t_r5), ("refit4", t_r4),
                         ("design", t_design), ("solve", t_solve), ("scores", t_scores)):
            times[key].append(val)
        if t_hist:
            times["refit5_hist"].append(t_hist)

    add_b, rm_b = min(times["add"]), min(times["remove"])
    r5_b, r4_b, rh_b = min(times["refit5"]), min(times["refit4"]), min(times["refit5_hist"])
    d = args.domains
    parts = ("solve_nb", "") if config.model == "nb" else ("design", "solve") \
        if config.identity is None else ("solve_identity_auto", "solve_identity")
    rows = [
        f"| {h} | `add_expert` ({d} → {d + 1}) | {summary(times['add'])} | "
        f"{add_b / r5_b:.2f} x refit from stats; {rh_b / add_b:.0f}x faster than refit "
        "from histograms |",
        f"| {h} | `remove_expert` ({d + 1} → {d}) | {summary(times['remove'])} | "
        f"{rm_b / r4_b:.2f} x refit from stats |",
        f"| {h} | baseline: refit from stats, {d + 1} domains | {summary(times['refit5'])} | "
        "1.00 |",
        f"| {h} | baseline: refit from stats, {d} domains | {summary(times['refit4'])} | |",
        f"| {h} | baseline: refit from histograms, {d + 1} domains | "
        f"{summary(times['refit5_hist'])} | {rh_b / r5_b:.1f} x refit from stats |",
        f"| {h} | of one re-solve ({d + 1} domains): `{parts[0]}` | "
        f"{summary(times['design'])} | {100 * min(times['design']) / r5_b:.0f} % |",
        *([f"| {h} | of one re-solve: `{parts[1]}` | {summary(times['solve'])} | "
           f"{100 * min(times['solve']) / r5_b:.0f} % |"] if parts[1] else []),
        f"| {h} | of one re-solve: `vocab_scores` | {summary(times['scores'])} | "
        f"{100 * min(times['scores']) / r5_b:.0f} % |",
    ]
    checks = [
        f"h={h}: add-then-remove gives back the same W: "
        f"{'yes, bit-identical' if same_remove else 'NO'} (max |ΔW| = {diff_remove:.1e}); "
        f"add equals a full refit on {d + 1} domains: "
        f"{'yes, bit-identical' if same_add else 'NO'} (max |ΔW| = {diff_add:.1e})",
        # (loading fingerprints the table: SHA-256 and a NaN/Inf scan of all its bytes)
        f"h={h}: one-off costs: random table of {emb.table.nbytes / 2**20:.0f} MiB written and "
        f"loaded (fingerprinted) {fmt_s(t_table)}, statistics of one domain from its "
        f"histogram ({args.nnz} distinct ids) {fmt_s(t_stats)}",
    ]
    return rows, checks


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dims", type=int, nargs="+", default=[384, 4096],
                    help="embedding widths h (default: 384 4096)")
    ap.add_argument("--domains", type=int, default=4,
                    help="domains in the router before the add (default 4)")
    ap.add_argument("--nnz", type=int, default=4000,
                    help="distinct token ids per domain histogram (default 4000)")
    ap.add_argument("--repeats", type=int, default=5, help="timed rounds (default 5)")
    # Statistics made from token-id histograms carry no token-pair counts, which the
    # presets whose nb model reads pairs need.
    ap.add_argument("--preset", choices=sorted(p for p, c in PRESETS.items()
                                               if c.model != "nb" or c.pairs is None),
                    default="dense",
                    help="router settings (default: dense, the balanced ridge on the "
                         "embedding)")
    ap.add_argument("--hist-every", action="store_true",
                    help="time the refit from histograms every round (default: 1 round, "
                         "it is the slow baseline)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true",
                    help="2 repeats, 1000 distinct ids (options given explicitly win)")
    args = ap.parse_args()
    if args.quick:  # (as defaults: it overrode --repeats 5 given with it, silently)
        ap.set_defaults(repeats=2, nnz=1000)
        args = ap.parse_args()

    print(f"vocab={VOCAB}, {args.domains} domains + 1, {args.nnz} distinct ids per domain, "
          f"preset={args.preset}, best / median of {args.repeats} rounds after 1 warm-up\n")
    print("| h | operation | wall time best / median | ratio (best) |")
    print("|---|---|---|---|")
    notes = []
    with tempfile.TemporaryDirectory(prefix="ir3de-bench-") as tmp:
        for h in args.dims:
            rows, checks = bench_dim(h, args, Path(tmp))
            for row in rows:
                print(row, flush=True)
            notes += checks
    print()
    for note in notes:
        print(f"* {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

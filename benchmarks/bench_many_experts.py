"""Memory and time of the default (pair) router with many experts: its pair table read
dense (what every router did before 2026-11-25) against sparse (what routers whose table
has more than ``selector._DENSE_ENTRIES`` entries do now).

The nine domain corpora of ``../shared/data`` are cut into ``--experts`` small domains
(consecutive slices of ``--prompts`` prompts, 90 by default, so every expert has pairs of
its own and shares the common ones). Each variant runs in a child process of its own, so its peak
resident memory (``ru_maxrss``) is its own: fit the router from the statistics (counted
once, in the parent, and saved), save it, load it again and route 2000 prompts of the
corpora one at a time and in one batch. Baseline: the dense table, in the same run.

Run:
    python benchmarks/bench_many_experts.py                  # 100 experts, 2 min
    python benchmarks/bench_many_experts.py --experts 20 50 100
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ir3de import DomainStats, Router, RouterConfig, compute_stats, load_embedder
from ir3de.data import read_jsonl

CHILD = "--child"


def child(folder: Path, n: int, dense: bool) -> None:
    """One variant: fit, save, load, route; prints a JSON line of figures."""
    import ir3de.selector

    if dense:  # every table read dense, as before the sparse form
        ir3de.selector._DENSE_ENTRIES = 2**62
    stats = [DomainStats.load(p) for p in sorted(folder.glob("*.stats"))[:n]]
    prompts = json.loads((folder / "prompts.json").read_text())
    emb = load_embedder()
    t0 = time.perf_counter()
    router = Router(emb, RouterConfig.preset("default")).fit_stats(stats)
    fit = time.perf_counter() - t0
    router.save(folder / "router.st")
    t0 = time.perf_counter()
    router = Router.load(folder / "router.st")
    load = time.perf_counter() - t0
    pairs = router._state.table.pairs
    table = sum(a.nbytes for a in (pairs.base, pairs.offset, pairs.indptr, pairs.cols,
                                   pairs.delta)) + (0 if pairs._dense is None
                                                    else pairs._dense.nbytes)
    t0 = time.perf_counter()
    one = [router.route(p).expert for p in prompts]
    single = (time.perf_counter() - t0) / len(prompts)
    t0 = time.perf_counter()
    batch = [d.expert for d in router.route_batch(prompts)]
    per_prompt = (time.perf_counter() - t0) / len(prompts)
    print(json.dumps({"fit": fit, "load": load, "single": single, "batch": per_prompt,
                      "table_mb": table / 2**20, "keys": int(pairs.keys.size),
                      "nnz": int(pairs.delta.size), "decisions": one, "same": one == batch,
                      "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main() -> int:
    if len(sys.argv) == 5 and sys.argv[1] == CHILD:
        child(Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "dense")
        return 0
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--experts", type=int, nargs="+", default=[100])
    ap.add_argument("--prompts", type=int, default=90, help="prompts per expert (90)")
    ap.add_argument("--data", type=Path,
                    default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    args = ap.parse_args()
    corpora = sorted((args.data / "domains").glob("*/all.jsonl"))
    if not corpora:
        raise SystemExit(f"{args.data / 'domains'}: no corpora (see ../shared/data)")
    texts = [r["text"] for path in corpora for r in read_jsonl(path)]
    emb = load_embedder()
    with tempfile.TemporaryDirectory(prefix="ir3de-many-") as tmp:
        folder = Path(tmp)
        need = max(args.experts)
        if need * args.prompts > len(texts):
            raise SystemExit(f"{need} experts of {args.prompts} prompts need more than the "
                             f"{len(texts)} prompts of the corpora")
        for i in range(need):
            part = texts[i * args.prompts:(i + 1) * args.prompts]
            compute_stats(emb, part, domain=f"e{i:03d}").save(folder / f"e{i:03d}.stats")
        (folder / "prompts.json").write_text(json.dumps(texts[::max(1, len(texts) // 2000)]
                                                        [:2000]))
        print("| experts | pair table | distinct pairs | stored corrections | table MB | "
              "peak RSS MB | fit s | load s | route µs/prompt (one / batch) | same "
              "decisions |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for n in args.experts:
            runs = {}
            for form in ("dense", "sparse"):
                out = subprocess.run([sys.executable, __file__, CHILD, str(folder), str(n),
                                      form], check=True, capture_output=True, text=True)
                runs[form] = json.loads(out.stdout.splitlines()[-1])
            agree = runs["dense"]["decisions"] == runs["sparse"]["decisions"]
            for form, r in runs.items():
                label = "dense (forced: the baseline)" if form == "dense" else \
                    "as built (sparse beyond 2^24 entries)"
                print(f"| {n} | {label} | {r['keys']:,} | {r['nnz']:,} | {r['table_mb']:.1f} | "
                      f"{r['rss_mb']:.0f} | {r['fit']:.2f} | {r['load']:.2f} | "
                      f"{r['single'] * 1e6:.0f} / {r['batch'] * 1e6:.0f} | "
                      f"{'yes' if agree else 'NO'} (one = batch: {r['same']}) |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

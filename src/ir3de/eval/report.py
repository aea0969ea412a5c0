"""Write an evaluation run to a folder: ``report.md``, ``results.json``, PNG plots and, when
kept, ``decisions.jsonl``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..selector import SELECTORS
from ..store import atomic_write_text
from .harness import K_GRID

# Selectors without k: one column each in the grid, one row each in the main tables.
_POOLED = tuple(s for s in SELECTORS if s != "topk")

__all__ = ["render_markdown", "write_report"]


def _pct(x: float | None) -> str:
    return "-" if x is None or x != x else f"{100 * x:.1f}"  # no test prompts: no figure


def _ci(r: dict[str, Any]) -> str:
    ci = r.get("balanced_ci")
    return "-" if ci is None else f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def _difference(d: dict[str, float]) -> str:
    """A gap in points with its interval; ▲/▼ when the interval excludes 0."""
    mark = " ▲" if d["low"] > 0 else " ▼" if d["high"] < 0 else ""
    return (f"{100 * d['difference']:+.2f} ({100 * d['low']:+.2f} to "
            f"{100 * d['high']:+.2f}){mark}")


def _comparison_lines(settings: list[dict[str, Any]]) -> list[str]:
    """Summary table: each preset router minus each setting's best baseline."""
    shown = [s for s in settings if s.get("comparison") and s["comparison"]["differences"]]
    if not shown:
        return []
    level = shown[0]["comparison"]["level"]
    resamples = shown[0]["comparison"]["resamples"]
    names = list(dict.fromkeys(n for s in shown for n in s["comparison"]["differences"]))
    rows = [[name, *(_difference(s["comparison"]["differences"][name])
                     if name in s["comparison"]["differences"] else "-" for s in shown)]
            for name in names]
    return ["", f"## Preset routers against the best baseline (points, {100 * level:.0f} % "
            "interval)", "",
            "Balanced accuracy of the router minus that of the setting's best baseline, with "
            f"a paired, stratified bootstrap interval ({resamples} resamples of the test "
            "prompts within each domain, one prompt counted once however many splits test "
            "it). ▲ / ▼: the interval lies above / below 0; without a mark, another draw of "
            "test prompts of the same size could reverse the order.", "",
            *_table(["router", *(f"{s['setting']} (vs {s['comparison']['baseline']})"
                                 for s in shown)], rows)]


def _seeds(meta: dict[str, Any]) -> str:
    seeds = meta.get("seeds") or [meta["seed"]]
    if len(seeds) == 1:
        return f"seed {seeds[0]}"
    return (f"seeds {', '.join(map(str, seeds))} (seeded splits repeated once per seed and "
            "pooled)")


def _num(x: float | None) -> float:
    return float("nan") if x is None else x


def _mark_best(rows: list[list[str]], values: list[list[float]], higher: Sequence[bool]) -> None:
    """Bold the best value of every column (ties all bold)."""
    for j, up in enumerate(higher):
        col = [v[j] for v in values if v[j] == v[j]]
        if not col:
            continue
        best = max(col) if up else min(col)
        for row, v in zip(rows, values, strict=True):
            if v[j] == best:
                row[j + 1] = f"**{row[j + 1]}**"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(r) + " |" for r in rows)]


def _main_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Preset IR3DE routers, their all/avg variants, then every baseline."""
    ir3de = [r for r in result["routers"] if r["family"] == "ir3de"]
    shown = [r for r in ir3de if r["is_preset"] or r["selector"] in _POOLED]
    return shown + [r for r in result["routers"] if r["family"] != "ir3de"]


def _setting_section(result: dict[str, Any], plots: Sequence[str]) -> list[str]:
    domains = result["domains"]
    lines = [f"## {result['setting']}", "", result["description"], ""]
    if result["leaks_test"]:
        lines += ["> **Leaks test prompts into the fit** (the paper's protocol): use it to "
                  "compare with the paper, not to judge generalisation.", ""]
    for split in result["splits"]:
        fit = ", ".join(f"{d} {n}" for d, n in split["fit"].items())
        test = ", ".join(f"{d} {n}" for d, n in split["test"].items())
        lines.append(f"* split `{split['name']}`: fit {fit}; test {test}")
    lines += ["", "Routing accuracy (%), pooled over splits; time per prompt of one batch call "
              "over the test set (tokenisation / sentence encoding included); best per column "
              "in bold. Rows marked ★ are the named presets.", ""]
    multi = len(result["splits"]) > 1
    header = ["router", *domains, "balanced", "micro"]
    header += ["balanced per split"] if multi else []
    if result.get("comparison"):
        header += [f"balanced {100 * result['comparison']['level']:.0f} % CI"]
    header += ["route µs/prompt", "fit s"]
    rows, values = [], []
    for r in _main_rows(result):
        star = " ★" if r.get("is_preset") else ""
        row = [r["name"] + star, *(_pct(r["per_domain"][d]) for d in domains),
               _pct(r["balanced"]), _pct(r["micro"])]
        vals = [*(_num(r["per_domain"][d]) for d in domains), r["balanced"], r["micro"]]
        if multi:
            row.append(" / ".join(_pct(s["balanced"]) for s in r["splits"]))
            vals.append(float("nan"))
        if result.get("comparison"):
            row.append(_ci(r))
            vals.append(float("nan"))
        row += [f"{r['route_us']:.0f}", f"{r['fit_s']:.2f}"]
        vals += [r["route_us"], r["fit_s"]]
        rows.append(row)
        values.append(vals)
    _mark_best(rows, values, [True] * (len(domains) + 2 + multi + bool(result.get("comparison")))
               + [False, False])
    lines += _table(header, rows)

    lines += ["", "IR3DE balanced accuracy (%) over the selector grid (best of each row in "
              "bold):", ""]
    grid = [f"k={k}" for k in K_GRID] + list(_POOLED)
    rows, values = [], []
    for emb, preset in dict.fromkeys((r["embedder"], r["preset"]) for r in result["routers"]
                                     if r["family"] == "ir3de"):
        cells = {(r["selector"], r["k"]): r["balanced"] for r in result["routers"]
                 if r["family"] == "ir3de" and r["embedder"] == emb and r["preset"] == preset}
        vals = [cells[("topk", k)] for k in K_GRID] + [cells[(sel, None)] for sel in _POOLED]
        row = [f"{emb}, {preset}", *(_pct(v) for v in vals)]
        best = max(vals)
        rows.append([c if v != best or i == 0 else f"**{c}**"
                     for i, (c, v) in enumerate(zip(row, [None, *vals], strict=True))])
        values.append(vals)
    lines += _table(["embedder, preset", *grid], rows)

    if result.get("normalized_performance"):
        kind = result["score_kind"]
        lines += ["", f"Normalized performance ({kind} scores; 1.0 = the domain expert, higher "
                  "is better):", ""]
        for split, table in result["normalized_performance"].items():
            cols = [c for c in next(iter(table.values())) if c != "average"] + ["average"]
            lines += [f"split `{split}`:", ""]
            lines += _table(["method", *cols],
                            [[name, *(f"{row[c]:.3f}" for c in cols)]
                             for name, row in table.items()])
            lines.append("")
    lines += ["", *(f"![{Path(p).stem}]({Path(p).name})" for p in plots), ""]
    return lines


def render_markdown(results: dict[str, Any], plots: dict[str, Sequence[str]]) -> str:
    """The report: a summary across settings, then one section per setting."""
    meta = results["meta"]
    lines = ["# IR3DE evaluation report", "",
             f"Command: `{meta['command']}`  ", f"Date: {meta['date']}  ",
             f"Machine: {meta['machine']}  ", f"Data: `{meta['data_dir']}`, " + _seeds(meta)
             + (f", at most {meta['max_fit']} fit / {meta['max_test']} test prompts per domain"
                if meta.get("max_fit") or meta.get("max_test") else ""), "",
             "## Summary: balanced routing accuracy (%)", ""]
    settings = results["settings"]
    names = list(dict.fromkeys(r["name"] for s in settings for r in _main_rows(s)
                               if r.get("is_preset") or r["family"] != "ir3de"))
    rows, values = [], []
    for name in names:
        found = [next((r for r in s["routers"] if r["name"] == name), None) for s in settings]
        rows.append([name, *(_pct(r["balanced"]) if r else "-" for r in found)])
        values.append([r["balanced"] if r else float("nan") for r in found])
    _mark_best(rows, values, [True] * len(settings))
    lines += _table(["router", *(s["setting"] for s in settings)], rows)
    lines += _comparison_lines(settings)
    for result in settings:
        lines += ["", *_setting_section(result, plots.get(result["setting"], []))]
    return "\n".join(lines).rstrip() + "\n"


def write_report(results: dict[str, Any], out_dir: str | Path, *, plots: bool = True) -> Path:
    """Write ``results.json``, the plots and ``report.md`` to ``out_dir``; returns report.md.

    Settings evaluated with ``keep_decisions`` have their per-prompt decisions written to
    ``decisions.jsonl`` instead (one line per setting, split and test prompt), which keeps
    results.json small enough to read.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if any("decisions" in r for r in results["settings"]):
        lines = [json.dumps({"setting": r["setting"], **d}, ensure_ascii=False)
                 for r in results["settings"] for d in r.get("decisions", ())]
        atomic_write_text(out / "decisions.jsonl", "".join(f"{line}\n" for line in lines))
        results = {**results, "settings": [{k: v for k, v in r.items() if k != "decisions"}
                                           for r in results["settings"]]}
    written: dict[str, list[str]] = {}
    if plots:
        from .plots import plot_setting

        for result in results["settings"]:
            written[result["setting"]] = [str(p) for p in plot_setting(result, out)]
    atomic_write_text(out / "results.json", json.dumps(results, indent=1, allow_nan=False))
    report = out / "report.md"
    atomic_write_text(report, render_markdown(results, written))
    return report

"""Write an evaluation run to a folder: ``report.md``, ``results.json``, PNG plots and, when
kept, ``decisions.jsonl``.

``results.json`` lists the files a run wrote under ``"outputs"``; the next run into the same
folder removes those of them it does not write again, so the folder never shows one run's
report beside another run's plots or decisions. Other files are left alone.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..errors import IR3DEError
from ..selector import SELECTORS
from ..store import atomic_write_text
from .harness import K_GRID, MIN_TEST_PROMPTS

# Selectors without k: one column each in the grid, one row each in the main tables.
_POOLED = tuple(s for s in SELECTORS if s != "topk")

__all__ = ["previous_outputs", "render_markdown", "write_report"]


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
    few = [s["setting"] for s in shown if _few_test_prompts(s)]
    caveat = ["", f"**Not meaningful for {', '.join(f'`{n}`' for n in few)}**: a domain there "
              f"has fewer than {MIN_TEST_PROMPTS} test prompts (see the setting's section)."] \
        if few else []
    return ["", f"## Preset routers against the best baseline (points, {100 * level:.0f} % "
            "interval)", "",
            "Balanced accuracy of the router minus that of the setting's best baseline, with "
            f"a paired, stratified bootstrap interval ({resamples} resamples of the test "
            "prompts within each domain, one prompt counted once however many splits test "
            "it). ▲ / ▼: the interval lies above / below 0; without a mark, another draw of "
            "test prompts of the same size could reverse the order.", "",
            *_table(["router", *(f"{s['setting']} (vs {s['comparison']['baseline']})"
                                 for s in shown)], rows), *caveat]


def _test_prompts(result: dict[str, Any]) -> dict[str, int]:
    """Distinct test prompts per domain (summed over splits for results without the count)."""
    if isinstance(result.get("test_prompts"), dict):
        return result["test_prompts"]
    return {d: sum(s["test"].get(d, 0) for s in result["splits"]) for d in result["domains"]}


def _few_test_prompts(result: dict[str, Any]) -> dict[str, int]:
    return {d: n for d, n in _test_prompts(result).items() if n < MIN_TEST_PROMPTS}


def _data_notes(result: dict[str, Any]) -> list[str]:
    """Notes on the test data under a setting's split lines: test prompts dropped as fit
    prompts, domains with too few test prompts for their figures to mean much, and what a
    "-" in a domain's column means."""
    lines = []
    dropped = sum(n for s in result["splits"] for n in s.get("dropped", {}).values())
    if dropped:
        over = ", summed over splits" if len(result["splits"]) > 1 else ""
        lines += [f"> **{dropped} test prompt{'s' * (dropped != 1)} left out** (\"dropped\" "
                  f"above{over}): the exact text is also a fit prompt, and a router tested on a "
                  "prompt it was fitted on is tested on memory, not on routing.", ""]
    few = _few_test_prompts(result)
    if few:
        counts = ", ".join(f"{d} {n}" for d, n in few.items())
        worth = (f"Each prompt there is worth at least {100 // max(few.values())} points "
                 "of its domain's accuracy, and the" if max(few.values()) else "The")
        lines += [f"> **Too few test prompts to judge by**: {counts} (fewer than "
                  f"{MIN_TEST_PROMPTS}). {worth} bootstrap intervals, which redraw the same "
                  "few prompts, are far narrower than the real uncertainty: the figures of "
                  "these domains, the balanced accuracy's intervals and the gaps to the best "
                  "baseline are not meaningful. Give each domain more test prompts "
                  "(`--test`, or more data).", ""]
    if 0 in few.values():
        none = ", ".join(d for d, n in few.items() if n == 0)
        lines += [f"> **Not tested: {none}** (\"-\" in the tables): no test prompt has that "
                  "gold domain, so it has no accuracy and is left out of the balanced mean; "
                  "the routers may still send other domains' prompts to it, which counts "
                  "against those domains.", ""]
    return lines


def _seeds(meta: dict[str, Any]) -> str:
    seeds = meta.get("seeds") or [meta["seed"]]
    if len(seeds) == 1:
        return f"seed {seeds[0]}"
    return (f"seeds {', '.join(map(str, seeds))} (seeded splits repeated once per seed and "
            "pooled)")


def _data(meta: dict[str, Any], settings: list[dict[str, Any]]) -> str:
    """The data the run read: the user's ``fit``/``test`` files when ``meta`` names them, and
    the shared data folder only when a built-in setting (one with ``sources``) read it."""
    parts = []
    if meta.get("fit"):
        test = f"`{meta['test']}`" if meta.get("test") else "30 % of the fit data (by id)"
        parts.append(f"fit `{meta['fit']}`, test {test}")
    if meta.get("data_dir") and any(s.get("sources") for s in settings):
        parts.append(f"`{meta['data_dir']}`")
    # A custom setting's description names its files when meta does not.
    return "; ".join(parts) or "user data (see each setting below)"


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


def _cell(text: object) -> str:
    """A table cell's text: a ``|`` or a line break in it (a domain or router name) would
    end the cell or the row, so pipes are escaped and line breaks become spaces."""
    return " ".join(str(text).splitlines()).replace("|", "\\|")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(map(_cell, cells)) + " |"

    return [line(header), "|" + "---|" * len(header), *map(line, rows)]


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
        gone = ", ".join(f"{d} {n}" for d, n in split.get("dropped", {}).items() if n)
        dropped = f"; dropped (text also a fit prompt) {gone}" if gone else ""
        lines.append(f"* split `{split['name']}`: fit {fit}; test {test}{dropped}")
    lines += ["", *_data_notes(result)]
    lines += ["Routing accuracy (%), pooled over splits; time per prompt of one batch call "
              "over the test set (tokenisation / sentence encoding included); best per column "
              "in bold. Rows marked ★ are the named presets; \"-\": no figure (a domain "
              "without test prompts, a router without an interval).", ""]
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
             f"Machine: {meta['machine']}  ",
             f"Data: {_data(meta, results['settings'])}, " + _seeds(meta)
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


# The only names an evaluation run writes (see plots.plot_setting), hence the only ones a
# later run may remove.
_FIXED_OUTPUTS = ("report.md", "results.json", "decisions.jsonl")
_PLOT_NAME = re.compile(r"(?:accuracy_vs_k|confusion|cost)_.+\.png")


def _is_output_name(name: object) -> bool:
    """Whether ``name`` is a bare file name of the evaluation's own outputs."""
    return (isinstance(name, str) and Path(name).name == name and "\\" not in name
            and (name in _FIXED_OUTPUTS or _PLOT_NAME.fullmatch(name) is not None))


def _plot_names(setting: str) -> list[str]:
    return [f"{kind}_{setting}.png" for kind in ("accuracy_vs_k", "confusion", "cost")]


def previous_outputs(out: Path) -> set[str]:
    """The files the previous run into ``out`` wrote, as its ``results.json`` lists them.

    A ``results.json`` written before the list was kept ("outputs" missing) yields itself,
    ``report.md``, the plots of its settings, and ``decisions.jsonl`` when that file's
    first line is one of their decisions. Nothing when there is no readable
    ``results.json`` of an evaluation. ``ir3de eval`` replaces these without ``--force``.
    """
    try:
        previous = json.loads((out / "results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    if not isinstance(previous, dict):
        return set()
    if isinstance(previous.get("outputs"), list):
        return {n for n in previous["outputs"] if _is_output_name(n)}
    settings = previous.get("settings")
    if not isinstance(previous.get("meta"), dict) or not isinstance(settings, list):
        return set()
    names = {s["setting"] for s in settings
             if isinstance(s, dict) and isinstance(s.get("setting"), str)}
    found = {"results.json", "report.md"}
    found |= {n for s in names for n in _plot_names(s) if _is_output_name(n)}
    try:
        with (out / "decisions.jsonl").open(encoding="utf-8") as fh:
            first = json.loads(fh.readline())
        if isinstance(first, dict) and first.get("setting") in names and "routed" in first:
            found.add("decisions.jsonl")
    except (OSError, ValueError):
        pass
    return found


def _remove_stale(out: Path, stale: Iterable[str]) -> None:
    """Remove the previous run's outputs that this run did not write again."""
    for name in sorted(stale):
        path = out / name
        if not _is_output_name(name) or path.is_symlink() or not path.is_file():
            continue  # never written by ir3de as such: a user's
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise IR3DEError(f"cannot remove {path}, left from the previous evaluation "
                             f"in {out}: {exc}") from exc


def write_report(results: dict[str, Any], out_dir: str | Path, *, plots: bool = True) -> Path:
    """Write ``results.json``, the plots and ``report.md`` to ``out_dir``; returns report.md.

    Settings evaluated with ``keep_decisions`` have their per-prompt decisions written to
    ``decisions.jsonl`` instead (one line per setting, split and test prompt), which keeps
    results.json small enough to read.

    ``results.json`` lists the names of the files written under ``"outputs"``. Once every
    file is written, those the previous run into ``out_dir`` listed (plots of settings not
    run now, a ``decisions.jsonl`` not kept now, plots after ``plots=False``) are removed,
    so the folder holds exactly this run's outputs; no other file is touched, and a run
    that fails before then leaves the previous run's files as they were.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    previous = previous_outputs(out)
    outputs: list[str] = []
    if any("decisions" in r for r in results["settings"]):
        lines = [json.dumps({"setting": r["setting"], **d}, ensure_ascii=False)
                 for r in results["settings"] for d in r.get("decisions", ())]
        atomic_write_text(out / "decisions.jsonl", "".join(f"{line}\n" for line in lines))
        outputs.append("decisions.jsonl")
        results = {**results, "settings": [{k: v for k, v in r.items() if k != "decisions"}
                                           for r in results["settings"]]}
    written: dict[str, list[str]] = {}
    if plots:
        from .plots import plot_setting

        for result in results["settings"]:
            paths = plot_setting(result, out)
            written[result["setting"]] = [str(p) for p in paths]
            outputs += [p.name for p in paths]
    outputs += ["results.json", "report.md"]
    results = {**results, "outputs": outputs}
    # Both rendered before either is written: results.json, whose list the next run trusts,
    # and report.md then only fail on I/O.
    text = json.dumps(results, indent=1, allow_nan=False)
    markdown = render_markdown(results, written)
    atomic_write_text(out / "results.json", text)
    report = out / "report.md"
    atomic_write_text(report, markdown)
    _remove_stale(out, previous - set(outputs))
    return report

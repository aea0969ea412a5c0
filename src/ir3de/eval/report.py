"""Write an evaluation run to a folder: ``report.md``, ``results.json``, PNG plots and, when
kept, ``decisions.jsonl``.

``results.json`` lists the files a run wrote under ``"outputs"``; the next run into the same
folder removes those of them it does not write again, so the folder never shows one run's
report beside another run's plots or decisions. Other files are left alone.

Every output is rendered in memory and written to a hidden staging folder inside the output
folder before any file of the folder changes; only then are the files moved in (renames,
which need no space), ``report.md`` and ``results.json`` last. A failure while rendering or
writing (bad results, a full disk) leaves the previous run's files as they were. While the
files are moved in, a hidden ``.ir3de-eval-pending.json`` lists them, and stays if the move
is cut short (a signal, a rename refused), so that the next run knows them as its own
(:func:`previous_outputs`) rather than as files it must not replace.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import IR3DEError, listed, require_creatable
from ..selector import SELECTORS
from ..store import atomic_write_bytes, atomic_write_text
from .harness import EVIDENCE_TERMS, K_GRID, MIN_TEST_PROMPTS
from .plots import MAX_LABELLED_DOMAINS, plot_names
from .settings import check_setting_name

# Selectors without k: one column each in the grid, one row each in the main tables.
_POOLED = tuple(s for s in SELECTORS if s != "topk")
# What write_report needs of each setting's result (evaluate() returns all of them).
_RESULT_KEYS = ("setting", "description", "leaks_test", "domains", "splits", "routers")
# ... and of each router's result, by its family (a baseline's holds no selector).
_ROUTER_KEYS = ("name", "family", "balanced", "micro", "per_domain", "confusion", "splits",
                "fit_s", "route_us")
_FAMILY_KEYS = {"ir3de": ("embedder", "preset", "selector", "k", "is_preset"),
                "saved": ("embedder", "selector", "k")}
try:
    import fcntl
except ImportError:  # not POSIX (Windows): staging folders are not locked, nor collected
    fcntl = None  # type: ignore[assignment]

# Lists the files a write is moving into the output folder until it has finished.
_PENDING = ".ir3de-eval-pending.json"
_STAGING = ".ir3de-eval-staging-"
# A staging folder left by a run that was killed is removed by the next run once no process
# holds it and it has not changed for this long (a run that has just made one, and not yet
# locked it, is not taken for dead).
_STAGING_STALE_S = 60.0

__all__ = ["check_outputs", "foreign_outputs", "machine", "output_names", "previous_outputs",
           "render_markdown", "summary_routers", "write_report"]


def machine() -> str:
    """This machine as the report's *Machine* line describes it."""
    return (f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}, "
            f"Python {platform.python_version()}")


def _inline(text: object) -> str:
    """``text`` on one line: a line break in a domain name would end a bullet or a note."""
    return " ".join(str(text).splitlines())


def _code(text: object) -> str:
    """``text`` as a markdown code span, on one line: fenced by one backtick more than the
    longest run of backticks inside (a lone backtick in a path or argument ended the span),
    and padded with a space when it starts or ends with a backtick, or has a space at both
    ends: markdown strips one space from each end of such a span."""
    flat = _inline(text)
    fence = "`" * (max(map(len, re.findall("`+", flat)), default=0) + 1)
    pad = " " if flat[:1] == "`" or flat[-1:] == "`" or (flat[:1] == flat[-1:] == " ") \
        else ""
    return f"{fence}{pad}{flat}{pad}{fence}"


def _level(level: float) -> str:
    """An interval's level in percent, as given (0.999: 99.9, not 100; 0.975: 97.5)."""
    return f"{round(100 * level, 6):g}"


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
    return ["", f"## Preset routers against the best baseline (points, {_level(level)} % "
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
    """Domains with some test prompts, but fewer than :data:`MIN_TEST_PROMPTS`. A domain
    with none is not among them: it has no figure to doubt and is out of the balanced mean,
    so it leaves the other domains' figures as meaningful as they are (it is "Not
    tested")."""
    return {d: n for d, n in _test_prompts(result).items() if 0 < n < MIN_TEST_PROMPTS}


def _data_notes(result: dict[str, Any]) -> list[str]:
    """Notes on the test data under a setting's split lines: test prompts dropped as fit
    prompts, domains with too few test prompts for their figures to mean much, and what a
    "-" in a domain's column means."""
    lines = []
    dropped = sum(n for s in result["splits"] for n in s.get("dropped", {}).values())
    if dropped:
        over = ", summed over splits" if len(result["splits"]) > 1 else ""
        lines += [f"> **{dropped} test prompt{'s' * (dropped != 1)} left out** (\"dropped\" "
                  f"above{over}): the text (leading and trailing whitespace aside) is also a "
                  "fit prompt, and a router tested on a prompt it was fitted on is tested on "
                  "memory, not on routing.", ""]
    few = _few_test_prompts(result)
    if few:
        counts = ", ".join(f"{_inline(d)} {n}" for d, n in few.items())
        lines += [f"> **Too few test prompts to judge by**: {counts} (fewer than "
                  f"{MIN_TEST_PROMPTS}). Each prompt there is worth at least "
                  f"{100 // max(few.values())} points of its domain's accuracy, and the "
                  "bootstrap intervals, which redraw the same few prompts, are far narrower "
                  "than the real uncertainty: the figures of these domains, the balanced "
                  "accuracy's intervals and the gaps to the best baseline are not meaningful. "
                  "Give each domain more test prompts (`--test`, or more data).", ""]
    untested = [_inline(d) for d, n in _test_prompts(result).items() if n == 0]
    if untested:
        none = ", ".join(untested)
        lines += [f"> **Not tested: {none}** (\"-\" in the tables): no test prompt has that "
                  "gold domain, so it has no accuracy and is left out of the balanced mean; "
                  "the routers may still send other domains' prompts to it, which counts "
                  "against those domains.", ""]
    return lines


# Baseline families whose fit takes a seed (make_baselines' ``seed``); kNN has none.
_SEEDED_BASELINES = frozenset({"random", "tfidf", "modem"})


def _seeds(meta: dict[str, Any], settings: list[dict[str, Any]]) -> str | None:
    """The seeds of the run, and with several what each setting did with them: a split the
    seed does not change (a custom setting with its own test data, say) is run once, which
    "repeated once per seed" would misstate. None when neither meta nor the settings say."""
    seeds = meta.get("seeds") or ([meta["seed"]] if "seed" in meta else []) or list(
        dict.fromkeys(seed for r in settings for seed in r.get("seeds") or ()))
    if not seeds:
        return None
    if len(seeds) == 1:
        return f"seed {seeds[0]}"
    pooled, others = [], []
    for r in settings:
        used = r.get("seeds") or seeds  # a result from before "seeds" was kept: all
        if list(used) == list(seeds):
            pooled.append(r["setting"])
        elif len(used) == 1:
            others.append(f"{r['setting']}: one split, which the seed does not change, run "
                          f"with seed {used[0]}")
        else:
            others.append(f"{r['setting']}: the splits of seeds {', '.join(map(str, used))} "
                          "only, the others' being the same, pooled")
    which = f" for {', '.join(pooled)}" if others else ""
    parts = [f"seeded splits repeated once per seed and pooled{which}"] if pooled else []
    others += _baseline_seeds(meta, settings, seeds)
    return f"seeds {', '.join(map(str, seeds))} ({'; '.join(parts + others)})"


def _baseline_seeds(meta: dict[str, Any], settings: list[dict[str, Any]],
                    seeds: list[int]) -> list[str]:
    """Which seed trained each seeded baseline of the pooled settings (a setting run once
    says its seed already). A baseline's figure on a fold can move with its training seed
    (MoDEM-style's by 0.3 point, EVALUATION.md), so a reader of pooled figures should know
    whether that draw was repeated with the splits (each split's seed, kept per split since
    the harness gives it) or made once (results from before: the run's one seed,
    ``meta["seed"]``, on every split)."""
    trained: dict[str, set[int]] = {}
    for s in settings:
        if len(s.get("seeds") or seeds) < 2:
            continue
        for r in s["routers"]:
            if r.get("family") in _SEEDED_BASELINES:
                trained.setdefault(r["name"], set()).update(
                    sp["seed"] for sp in r.get("splits") or () if "seed" in sp)
    per_split = [name for name, got in trained.items() if len(got) > 1]
    once: dict[int, list[str]] = {}
    for name, got in trained.items():
        if len(got) == 1 or (not got and "seed" in meta):
            once.setdefault(next(iter(got)) if got else meta["seed"], []).append(name)
    lines = [f"{listed(per_split)} trained with each split's seed"] if per_split else []
    return lines + [f"{listed(names)} with seed {seed} on every split"
                    for seed, names in once.items()]


def _data(meta: dict[str, Any], settings: list[dict[str, Any]]) -> str:
    """The data the run read: the user's ``fit``/``test`` files when ``meta`` names them, and
    the shared data folder only when a built-in setting (one with ``sources``) read it."""
    parts = []
    if meta.get("fit"):
        test = _code(meta["test"]) if meta.get("test") else "30 % of the fit data (by id)"
        parts.append(f"fit {_code(meta['fit'])}, test {test}")
    elif meta.get("test"):  # saved routers scored on test data alone
        parts.append(f"test {_code(meta['test'])} (no fit data: saved routers only)")
    if any(s.get("sources") for s in settings):
        # (a meta made in Python may not name the folder; each setting lists its files)
        parts.append(_code(meta["data_dir"]) if meta.get("data_dir")
                     else "the shared data (each setting below lists its files)")
    # A custom setting's description names its files when meta does not.
    return "; ".join(parts) or "user data (see each setting below)"


def _num(x: float | None) -> float:
    return float("nan") if x is None else x


def _mark_best(rows: list[list[str]], values: list[list[float]], higher: Sequence[bool]) -> None:
    """Bold the best value of every column (ties all bold), as shown: two routers both at
    82.5 are tied, whatever digits past the shown ones tell them apart (0.825 and
    0.8250000000000001 made one bold and not the other). ``values`` NaN: not compared."""
    for j, up in enumerate(higher):
        shown = [float(row[j + 1]) if v[j] is not None and v[j] == v[j] else None
                 for row, v in zip(rows, values, strict=True)]
        col = [x for x in shown if x is not None]
        if not col:
            continue
        best = max(col) if up else min(col)
        for row, x in zip(rows, shown, strict=True):
            if x == best:
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


def summary_routers(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The routers of one setting's result that the report's summary shows: the preset
    IR3DE routers and the baselines. The rest of the selector grid is left out: the best of
    it is picked on the test prompts, so its figure overstates what a router chosen
    beforehand gets (the setting's own tables show every figure)."""
    return [r for r in _main_rows(result) if r.get("is_preset") or r["family"] != "ir3de"]


def _term(term: dict[str, Any]) -> str:
    """A term of an explanation as the report names it: its token, its pair's two tokens
    (``(start)`` before the first), a skip pair's with ``_`` for the token between, or
    ``(TF-IDF bias)`` (the ``tfidf`` preset's ridge bias, which no fit text holds)."""
    if term["kind"] == "bias":
        return "(TF-IDF bias)"
    names = ["(start)" if t is None else t for t in term["tokens"]]
    return _code((" _ " if term["kind"] == "skip" else " ").join(names))


def _error_lines(result: dict[str, Any], beside: bool) -> list[str]:
    """The section on what the IR3DE routers' errors rest on (runs with ``--decisions``);
    ``beside``: the report's decisions.jsonl is written with it (results rendered into
    another folder have theirs elsewhere)."""
    found = result.get("error_terms")
    if not found:
        return []
    where = "are in decisions.jsonl" if beside else \
        "were kept in the run's decisions.jsonl, which is not beside this report"
    rows = [[name, str(info["errors"]),
             ", ".join(f"{_term(t)} ({t['errors']})" for t in info["terms"]) or "-"]
            for name, info in found.items()]
    return ["", f"What the IR3DE routers' errors rest on (each error's terms {where}): "
            "the terms found most often among an error's "
            f"{EVIDENCE_TERMS} largest, counting those that pulled towards the wrong expert, "
            "with the number of errors that hold them in brackets. A token or pair that recurs "
            "across many errors is worth looking for in the fit data; most terms appear in "
            "one error or a few.", "",
            *_table(["router", "errors", "most frequent terms"], rows)]


def _setting_section(result: dict[str, Any], plots: Sequence[str],
                     decisions: bool = True) -> list[str]:
    domains = result["domains"]
    lines = [f"## {result['setting']}", "", _inline(result["description"]), ""]
    if result["leaks_test"]:
        lines += ["> **Leaks test prompts into the fit** (the paper's protocol): use it to "
                  "compare with the paper, not to judge generalisation.", ""]
    for split in result["splits"]:
        # A line break in a domain name would end the bullet mid-list.
        fit = ", ".join(f"{_inline(d)} {n}" for d, n in split["fit"].items()) \
            or "none (saved routers only)"
        test = ", ".join(f"{_inline(d)} {n}" for d, n in split["test"].items())
        gone = ", ".join(f"{_inline(d)} {n}" for d, n in split.get("dropped", {}).items() if n)
        dropped = f"; dropped (text also a fit prompt) {gone}" if gone else ""
        lines.append(f"* split {_code(split['name'])}: fit {fit}; test {test}{dropped}")
    lines += ["", *_data_notes(result)]
    lines += ["Routing accuracy (%), pooled over splits; time per prompt of one batch call "
              "over the test set (tokenisation / sentence encoding included); fit s: from "
              "the fit prompts to a usable router, one-off model loads (the IR3DE embedders, "
              "the MiniLM encoder the kNN routers share) charged to none (MoDEM-style's fit "
              "includes loading the weights it fine-tunes); best per column in bold. Rows "
              "marked ★ are the named presets; \"-\": no figure (a domain without test "
              "prompts, a router without an interval).", ""]
    multi = len(result["splits"]) > 1
    header = ["router", *domains, "balanced", "micro"]
    header += ["balanced per split"] if multi else []
    if result.get("comparison"):
        header += [f"balanced {_level(result['comparison']['level'])} % CI"]
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
        # a saved router has no fit time: it was not fitted in this run
        row += [f"{r['route_us']:.0f}", "-" if r["fit_s"] is None else f"{r['fit_s']:.2f}"]
        vals += [r["route_us"], _num(r["fit_s"])]
        rows.append(row)
        values.append(vals)
    _mark_best(rows, values, [True] * (len(domains) + 2 + multi + bool(result.get("comparison")))
               + [False, False])
    lines += _table(header, rows)

    grid = [f"k={k}" for k in K_GRID] + list(_POOLED)
    rows = []
    for emb, preset in dict.fromkeys((r["embedder"], r["preset"]) for r in result["routers"]
                                     if r["family"] == "ir3de"):
        cells = {(r["selector"], r["k"]): r["balanced"] for r in result["routers"]
                 if r["family"] == "ir3de" and r["embedder"] == emb and r["preset"] == preset}
        vals = [cells[("topk", k)] for k in K_GRID] + [cells[(sel, None)] for sel in _POOLED]
        row = [f"{emb}, {preset}", *(_pct(v) for v in vals)]
        best = max(float(c) for c in row[1:])  # as shown (see _mark_best)
        rows.append([row[0], *(f"**{c}**" if float(c) == best else c for c in row[1:])])
    if rows:  # (a run of saved routers alone has no selector grid)
        lines += ["", "IR3DE balanced accuracy (%) over the selector grid (best of each row "
                  "in bold):", "", *_table(["embedder, preset", *grid], rows)]

    lines += _error_lines(result, decisions)
    if result.get("normalized_performance"):
        kind = result["score_kind"]
        lines += ["", f"Normalized performance ({kind} scores; 1.0 = the domain expert, higher "
                  "is better):", ""]
        for split, table in result["normalized_performance"].items():
            # (the domains scored; the plots' note below counts the setting's)
            scored = list(next(iter(table.values()))["domains"])
            lines += [f"split {_code(split)}:", ""]
            lines += _table(["method", *scored, "average"],
                            [[name, *(f"{row['domains'][d]:.3f}" for d in scored),
                              f"{row['average']:.3f}"] for name, row in table.items()])
            lines.append("")
    lines += ["", *(f"![{Path(p).stem}]({Path(p).name})" for p in plots), ""]
    if plots and len(domains) > MAX_LABELLED_DOMAINS:
        lines += [f"The confusion plot's axes are not labelled: {len(domains)} domains are "
                  f"more than {MAX_LABELLED_DOMAINS} can be named legibly. Its rows and "
                  "columns follow the order of `domains` in results.json; each domain's "
                  "accuracy is in the table above.", ""]
    return lines


def render_markdown(results: dict[str, Any], plots: Mapping[str, Sequence[str]]) -> str:
    """The report: a summary across settings, then one section per setting. ``plots`` maps
    a setting to its plot files' names. A *Command*, *Date* or *Machine* line is left out
    when ``results["meta"]`` lacks it (see :func:`write_report`)."""
    meta = results.get("meta") or {}
    settings = results["settings"]
    data = [_data(meta, settings), _seeds(meta, settings)]
    caps = [f"{meta[f'max_{role}']} {role}" for role in ("fit", "test")
            if meta.get(f"max_{role}")]
    if caps:
        data.append(f"at most {' / '.join(caps)} prompts per domain")
    lines = ["# IR3DE evaluation report", ""]
    # The command as a shell would take it, in a code span no backtick in it can end.
    lines += [f"Command: {_code(meta['command'])}  "] if meta.get("command") else []
    lines += [f"{key.title()}: {_inline(meta[key])}  " for key in ("date", "machine")
              if meta.get(key)]
    lines += [f"Data: {', '.join(part for part in data if part)}", "",
              "## Summary: balanced routing accuracy (%)", ""]
    names = list(dict.fromkeys(r["name"] for s in settings for r in summary_routers(s)))
    rows, values = [], []
    for name in names:
        found = [next((r for r in s["routers"] if r["name"] == name), None) for s in settings]
        rows.append([name, *(_pct(r["balanced"]) if r else "-" for r in found)])
        values.append([r["balanced"] if r else float("nan") for r in found])
    _mark_best(rows, values, [True] * len(settings))
    lines += _table(["router", *(s["setting"] for s in settings)], rows)
    lines += _comparison_lines(settings)
    # (results that list their outputs say whether decisions.jsonl is among them)
    decisions = "decisions.jsonl" in results.get("outputs", ["decisions.jsonl"])
    for result in settings:
        lines += ["", *_setting_section(result, plots.get(result["setting"], []), decisions)]
    return "\n".join(lines).rstrip() + "\n"


# The only names an evaluation run writes (see plots.plot_names), hence the only ones a
# later run may remove.
_FIXED_OUTPUTS = ("report.md", "results.json", "decisions.jsonl")
_PLOT_NAME = re.compile(r"(?:accuracy_vs_k|confusion|cost)_.+\.png")


def _is_output_name(name: object) -> bool:
    """Whether ``name`` is a bare file name of the evaluation's own outputs."""
    return (isinstance(name, str) and Path(name).name == name and "\\" not in name
            and (name in _FIXED_OUTPUTS or _PLOT_NAME.fullmatch(name) is not None))


def output_names(settings: Sequence[str], *, plots: bool, decisions: bool) -> list[str]:
    """The files a run of ``settings`` (their names) writes, in the order they are moved
    in: what ``ir3de eval`` checks in ``--out`` before the run, all known by then."""
    names = ["decisions.jsonl"] if decisions else []
    names += [n for s in settings for n in plot_names(s)] if plots else []
    return [*names, "results.json", "report.md"]


def check_outputs(out: Path, names: Iterable[str]) -> None:
    """Raise :class:`~ir3de.errors.IR3DEError` when ``out``, or an output ``names`` of it,
    cannot be written as a file: ``out`` a file or under one, an output a directory or
    something else that is not a regular file (a FIFO), or a symbolic link to nothing.
    Found before the run, not after."""
    if out.exists() and not out.is_dir():
        raise IR3DEError(f"{out} is not a directory")
    require_creatable(out)
    for name in names:
        path = out / name
        if path.is_symlink() and not path.exists():
            # Written through, it would create a file (and its folders) wherever the link
            # points, outside the output folder, or fail after the whole run.
            raise IR3DEError(f"{path} is a symbolic link to {os.readlink(path)}, which does "
                             "not exist: remove the link, or write elsewhere")
        if path.is_dir():
            raise IR3DEError(f"{path} is a directory")
        if path.exists() and not path.is_file():
            raise IR3DEError(f"{path} is not a regular file")


def foreign_outputs(out: Path, names: Iterable[str]) -> list[str]:
    """The outputs ``names`` that exist in ``out`` but that no evaluation wrote (they are
    not among :func:`previous_outputs`): a user's own ``report.md``, say. A run replaces
    them only when told to (``write_report(..., force=True)``, ``ir3de eval --force``);
    a previous evaluation's outputs it replaces without asking."""
    if not out.is_dir():
        return []
    own = previous_outputs(out)
    return [name for name in names if (out / name).exists() and name not in own]


def _pending(out: Path) -> set[str]:
    """The output names a write that stopped while moving them in listed (none when the
    last write finished)."""
    try:
        names = json.loads((out / _PENDING).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    return {n for n in names if _is_output_name(n)} if isinstance(names, list) else set()


def previous_outputs(out: Path) -> set[str]:
    """The files the previous run into ``out`` wrote, as its ``results.json`` lists them,
    and those a run that stopped while moving its files in had listed as pending.

    A ``results.json`` written before the list was kept ("outputs" missing) yields itself,
    ``report.md``, the plots of its settings, and ``decisions.jsonl`` when that file's
    first line is one of their decisions. Nothing but the pending files when there is no
    readable ``results.json`` of an evaluation. :func:`write_report` and ``ir3de eval``
    replace these without ``force`` / ``--force``.
    """
    return _listed_outputs(out) | _pending(out)


def _listed_outputs(out: Path) -> set[str]:
    """The outputs the ``results.json`` of ``out`` names (see :func:`previous_outputs`)."""
    previous = _previous_results(out)
    if previous is None:
        return set()
    if isinstance(previous.get("outputs"), list):
        return {n for n in previous["outputs"] if _is_output_name(n)}
    settings = previous.get("settings")
    if not isinstance(previous.get("meta"), dict) or not isinstance(settings, list):
        return set()
    names = {s["setting"] for s in settings
             if isinstance(s, dict) and isinstance(s.get("setting"), str)}
    found = {"results.json", "report.md"}
    found |= {n for s in names for n in plot_names(s) if _is_output_name(n)}
    try:
        with (out / "decisions.jsonl").open(encoding="utf-8") as fh:
            first = json.loads(fh.readline())
        if isinstance(first, dict) and first.get("setting") in names and "routed" in first:
            found.add("decisions.jsonl")
    except (OSError, ValueError):
        pass
    return found


def _previous_results(out: Path) -> dict[str, Any] | None:
    """The ``results.json`` of ``out`` as a dict (None where there is none to read)."""
    try:
        previous = json.loads((out / "results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return previous if isinstance(previous, dict) else None


def _previous_error_terms(out: Path) -> object:
    """Each setting's ``error_terms`` in the ``results.json`` of ``out`` (None where there is
    none to read)."""
    try:
        return {r["setting"]: r.get("error_terms")
                for r in (_previous_results(out) or {})["settings"]}
    except (TypeError, KeyError):
        return None


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


def _checked(results: object) -> dict[str, Any]:
    """``results`` with ``meta`` completed (``date``: now, ``machine``: this one, when
    missing), after checking it is what :func:`write_report` can write: a dict whose
    ``settings`` are results of :func:`~ir3de.eval.harness.evaluate` with distinct names
    that can name files. Checked before anything is written or drawn."""
    if not isinstance(results, dict) or not isinstance(results.get("settings"), list) \
            or not results["settings"]:
        raise IR3DEError('write_report needs {"meta": {...}, "settings": [results of '
                         "evaluate(), at least one]}")
    meta = results.get("meta", {})
    if not isinstance(meta, dict):
        raise IR3DEError(f"write_report: 'meta' must be a dict, got {type(meta).__name__}")
    seen: set[str] = set()
    for i, result in enumerate(results["settings"]):
        missing = [k for k in _RESULT_KEYS if not isinstance(result, dict) or k not in result]
        if missing:
            raise IR3DEError(f"write_report: settings[{i}] is not a result of evaluate(): "
                             f"it lacks {', '.join(missing)}")
        name = check_setting_name(result["setting"])
        routers = result["routers"]
        if not isinstance(routers, list):
            raise IR3DEError(f"write_report: setting {name!r}: 'routers' must be a list of "
                             f"router results, got {type(routers).__name__}")
        for j, router in enumerate(routers):
            if not isinstance(router, dict):
                raise IR3DEError(f"write_report: setting {name!r}: routers[{j}] must be a "
                                 f"dict, got {type(router).__name__}")
            keys = (*_ROUTER_KEYS, *_FAMILY_KEYS.get(str(router.get("family")), ()))
            lacking = [k for k in keys if k not in router]
            if lacking:
                raise IR3DEError(f"write_report: setting {name!r}: router "
                                 f"{router.get('name', f'#{j}')!r} is not a result of "
                                 f"evaluate(): it lacks {', '.join(lacking)}")
        if name in seen:  # the second's plots would overwrite the first's
            raise IR3DEError(f"write_report: two settings are named {name!r}")
        seen.add(name)
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return {**results, "meta": {"date": now, "machine": machine(), **meta}}


def _utf8(name: str, text: str) -> bytes:
    """``text`` encoded for the file ``name``; text that is not UTF-8 (a surrogate from a
    file name that is not) is an error naming it, raised before anything is written."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise IR3DEError(f"cannot write {name}: the results hold "
                         f"{exc.object[exc.start:exc.end]!a}, which is not UTF-8 text (from "
                         "a file name that is not UTF-8?)") from None


def _remove_dead_staging(out: Path) -> None:
    """Remove the staging folders of ``out`` that runs killed outright (SIGKILL, a power
    cut) left behind, which no ``finally`` removed: each run holds a lock on its own, so
    one that can be locked, and has not changed for a while, is nobody's. Not done where
    there is no ``flock`` (Windows)."""
    if fcntl is None:
        return
    now = time.time()
    for folder in out.glob(f"{_STAGING}*"):
        try:
            if folder.is_symlink() or not folder.is_dir() or \
                    now - folder.stat().st_mtime < _STAGING_STALE_S:
                continue
            fd = os.open(folder, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            shutil.rmtree(folder, ignore_errors=True)
        except OSError:  # (held: a run still writing)
            pass
        finally:
            os.close(fd)


def _lock_staging(staging: Path) -> int | None:
    """Hold a lock on ``staging`` for as long as the returned descriptor is open (see
    :func:`_remove_dead_staging`); None where there is no ``flock``."""
    if fcntl is None:
        return None
    fd = os.open(staging, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _move_in(out: Path, files: dict[str, bytes], previous: set[str]) -> None:
    """Write ``files`` (name -> bytes) into ``out`` as the module docs describe: staged in a
    hidden folder of ``out`` (the same file system, so moving in is a rename), then moved
    in in order, the previous run's other outputs (``previous``) removed, and the pending
    list dropped. The staging folder is removed however this ends (but a kill), and one
    that an earlier, killed run left is removed now."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        _remove_dead_staging(out)
        staging = Path(tempfile.mkdtemp(prefix=_STAGING, dir=out))
    except OSError as exc:
        raise IR3DEError(f"cannot write in {out}: {exc.strerror or exc}") from None
    lock = None
    try:
        lock = _lock_staging(staging)
        for name, data in files.items():
            target = out / name
            # The permissions of the file replaced, as atomic_write_bytes keeps them.
            mode = stat.S_IMODE(target.stat().st_mode) if target.is_file() else None
            atomic_write_bytes(staging / name, data, mode=mode)
        atomic_write_text(out / _PENDING, json.dumps(sorted(set(files) | _pending(out))))
        for name in files:
            target = out / name
            if target.is_symlink():  # written through, as atomic_write_bytes does
                atomic_write_bytes(target, files[name])
                continue
            try:
                os.replace(staging / name, target)
            except OSError as exc:
                raise IR3DEError(f"cannot write {target}: {exc.strerror or exc}") from None
        _remove_stale(out, previous - set(files))
        (out / _PENDING).unlink()
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if lock is not None:
            os.close(lock)


def write_report(results: dict[str, Any], out_dir: str | Path, *, plots: bool = True,
                 force: bool = False) -> Path:
    """Write ``results.json``, the plots and ``report.md`` to ``out_dir``; returns report.md.

    ``results`` is ``{"meta": {...}, "settings": [...]}``, the settings results of
    :func:`~ir3de.eval.harness.evaluate` with distinct names. Every ``meta`` key is
    optional and goes to results.json as given: ``command`` (the *Command* line), ``date``
    and ``machine`` (default: now, and this machine), ``seed`` (the first seed, which
    trained the baselines of results that keep no seed per split) / ``seeds``, ``data_dir``,
    ``fit`` / ``test`` and ``max_fit`` / ``max_test`` (the *Data* line); ``ir3de eval``
    also records its version, embedders, presets, baselines and saved routers.

    Settings evaluated with ``keep_decisions`` have their per-prompt decisions written to
    ``decisions.jsonl`` instead (one line per setting, split and test prompt), which keeps
    results.json small enough to read.

    ``results.json`` lists the names of the files written under ``"outputs"``. Everything
    is rendered and staged before the folder changes (see the module docs); once every
    file is in place, those the previous run into ``out_dir`` listed (plots of settings not
    run now, a ``decisions.jsonl`` not kept now, plots after ``plots=False``) are removed,
    so the folder holds exactly this run's outputs; no other file is touched, and a run
    that fails leaves the previous run's files as they were. Results read back from a
    ``results.json`` (which holds no decisions) and written into its folder again (the
    same error terms; ``meta`` may be edited) keep its ``decisions.jsonl``, which their
    error terms point to.

    A file of an output's name that no evaluation wrote (:func:`foreign_outputs`: a
    ``report.md`` of your own) is an :class:`~ir3de.errors.IR3DEError` unless ``force``,
    as ``ir3de eval`` refuses it without ``--force``; a directory of such a name is one
    even then. Both are found before anything is drawn or written.
    """
    results = _checked(results)
    out = Path(out_dir)
    settings = results["settings"]
    decisions = any("decisions" in r for r in settings)
    previous = previous_outputs(out)
    # Results read back from a results.json, rendered again into its folder: their
    # decisions were moved out to decisions.jsonl, which they cannot give back, and their
    # error terms point there. Removed as a stale output, it was lost. (The same run: the
    # folder's results.json holds the same error terms, which its decisions give, whatever
    # was edited in meta; another run's decisions.jsonl goes, as before.)
    kept = not decisions and "decisions.jsonl" in previous and \
        any("error_terms" in r for r in settings) and \
        _previous_error_terms(out) == {r["setting"]: r.get("error_terms") for r in settings}
    names = output_names([r["setting"] for r in settings], plots=plots,
                         decisions=decisions or kept)
    check_outputs(out, names)
    foreign = [] if force else foreign_outputs(out, names)
    if foreign:
        raise IR3DEError(f"{out} holds {listed(foreign)}, not written by an ir3de evaluation; "
                         "pass force=True to replace them, or write elsewhere")
    files: dict[str, bytes] = {}
    if decisions:
        lines = [json.dumps({"setting": r["setting"], **d}, ensure_ascii=False)
                 for r in settings for d in r.get("decisions", ())]
        files["decisions.jsonl"] = _utf8("decisions.jsonl",
                                         "".join(f"{line}\n" for line in lines))
        settings = [{k: v for k, v in r.items() if k != "decisions"} for r in settings]
    results = {**results, "settings": settings, "outputs": names}
    shown = {r["setting"]: plot_names(r["setting"]) for r in settings} if plots else {}
    # Text first, the plots (slow) after: results that cannot be written fail at once.
    text = {"results.json": json.dumps(results, indent=1, allow_nan=False),
            "report.md": render_markdown(results, shown)}
    encoded = {name: _utf8(name, t) for name, t in text.items()}
    if plots:
        from .plots import render_plots

        files.update(render_plots(*settings))  # one warning for all, if any
    files.update(encoded)  # last: report.md and results.json are moved in after the rest
    _move_in(out, files, previous - {"decisions.jsonl"} if kept else previous)
    return out / "report.md"

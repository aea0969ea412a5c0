"""write_report into a folder that already holds an earlier run: no stale outputs survive."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from ir3de import Embedder
from ir3de.errors import IR3DEError

pytest.importorskip("sklearn", reason="the evaluation harness needs pip install 'ir3de[eval]'")
pytest.importorskip("matplotlib", reason="the evaluation harness needs pip install 'ir3de[eval]'")

from conftest import CORPORA

from ir3de.eval import custom_setting, evaluate, render_markdown, write_report
from ir3de.eval.harness import make_baselines

META = {"command": "pytest", "date": "today", "machine": "here", "data_dir": "data", "seed": 0}
KINDS = ("accuracy_vs_k", "confusion", "cost")


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory, emb: Embedder) -> dict:
    """One tiny evaluation (inline corpora), decisions kept."""
    data = tmp_path_factory.mktemp("data") / "fit.jsonl"
    data.write_text("".join(json.dumps({"text": t, "domain": d}) + "\n"
                            for d, texts in CORPORA.items() for t in texts))
    return evaluate(custom_setting(data), embedders=[emb], presets=["default"],
                    baselines=make_baselines(["random"]), resamples=0, keep_decisions=True,
                    progress=False)


def _run(result: dict, out: Path, names: list[str], *, decisions: bool,
         plots: bool = True, force: bool = False) -> Path:
    drop = () if decisions else ("decisions", "error_terms")  # (as evaluate() gives them)
    settings = [{**{k: v for k, v in result.items() if k not in drop}, "setting": n}
                for n in names]
    return write_report({"meta": META, "settings": settings}, out, plots=plots, force=force)


def _plots(*names: str) -> set[str]:
    return {f"{kind}_{n}.png" for n in names for kind in KINDS}


def test_second_run_removes_the_first_runs_stale_outputs(result: dict, tmp_path: Path) -> None:
    _run(result, tmp_path, ["alpha", "beta"], decisions=True)
    assert {p.name for p in tmp_path.iterdir()} == (
        _plots("alpha", "beta") | {"decisions.jsonl", "results.json", "report.md"})
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "confusion_mine.png").write_bytes(b"mine")  # looks like a plot, never written
    report = _run(result, tmp_path, ["alpha"], decisions=False)
    assert {p.name for p in tmp_path.iterdir()} == (
        _plots("alpha") | {"results.json", "report.md", "notes.txt", "confusion_mine.png"})
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert (tmp_path / "confusion_mine.png").read_bytes() == b"mine"
    loaded = json.loads((tmp_path / "results.json").read_text())
    assert set(loaded["outputs"]) == _plots("alpha") | {"results.json", "report.md"}
    assert "beta" not in report.read_text()


def test_a_run_without_plots_removes_the_previous_plots(result: dict, tmp_path: Path) -> None:
    _run(result, tmp_path, ["alpha"], decisions=False)
    _run(result, tmp_path, ["alpha"], decisions=True, plots=False)
    assert {p.name for p in tmp_path.iterdir()} == {"decisions.jsonl", "results.json",
                                                   "report.md"}


def test_only_the_eval_output_names_listed_are_removed(result: dict, tmp_path: Path) -> None:
    """A tampered list never removes a user's file nor anything outside the folder."""
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"x")
    out = tmp_path / "out"
    _run(result, out, ["alpha"], decisions=False)
    loaded = json.loads((out / "results.json").read_text())
    loaded["outputs"] += ["notes.txt", "../outside.png", "../cost_x.png", "cost_link.png"]
    (out / "results.json").write_text(json.dumps(loaded))
    (out / "notes.txt").write_text("mine")
    (tmp_path / "cost_x.png").write_bytes(b"x")
    (out / "cost_link.png").symlink_to(outside)
    _run(result, out, ["alpha"], decisions=False)
    assert (out / "notes.txt").exists() and outside.exists() and (tmp_path / "cost_x.png").exists()
    assert (out / "cost_link.png").is_symlink()


def test_results_json_without_a_list_still_cleans_up(result: dict, tmp_path: Path) -> None:
    """A folder written before the list was kept: its settings' plots and decisions go."""
    _run(result, tmp_path, ["alpha", "beta"], decisions=True)
    loaded = json.loads((tmp_path / "results.json").read_text())
    del loaded["outputs"]
    (tmp_path / "results.json").write_text(json.dumps(loaded))
    (tmp_path / "confusion_mine.png").write_bytes(b"mine")
    _run(result, tmp_path, ["alpha"], decisions=False)
    assert {p.name for p in tmp_path.iterdir()} == (
        _plots("alpha") | {"results.json", "report.md", "confusion_mine.png"})


def test_a_users_decisions_jsonl_is_kept_without_a_list(result: dict, tmp_path: Path) -> None:
    _run(result, tmp_path, ["alpha"], decisions=False)
    loaded = json.loads((tmp_path / "results.json").read_text())
    del loaded["outputs"]
    (tmp_path / "results.json").write_text(json.dumps(loaded))
    (tmp_path / "decisions.jsonl").write_text('{"mine": 1}\n')
    _run(result, tmp_path, ["alpha"], decisions=False)
    assert (tmp_path / "decisions.jsonl").read_text() == '{"mine": 1}\n'


@pytest.mark.parametrize("name", ["report.md", "results.json", "confusion_alpha.png"])
def test_write_report_replaces_a_file_no_evaluation_wrote_only_when_forced(
        name: str, result: dict, tmp_path: Path) -> None:
    """write_report silently replaced a user's report.md, which ir3de eval refuses
    without --force."""
    (tmp_path / name).write_text("mine")
    with pytest.raises(IR3DEError) as exc:
        _run(result, tmp_path, ["alpha"], decisions=False)
    assert str(exc.value) == (f"{tmp_path} holds {name}, not written by an ir3de evaluation; "
                              "pass force=True to replace them, or write elsewhere")
    assert [p.name for p in tmp_path.iterdir()] == [name]  # found before anything was written
    assert (tmp_path / name).read_text() == "mine"
    _run(result, tmp_path, ["alpha"], decisions=False, force=True)
    assert (tmp_path / name).read_bytes() != b"mine"
    # Now the evaluation's own: replaced without force, as ir3de eval replaces its own.
    _run(result, tmp_path, ["alpha"], decisions=False)


def test_a_failed_run_keeps_the_previous_outputs(result: dict, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    _run(result, tmp_path, ["alpha", "beta"], decisions=True)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def fail(*args: object, **kwargs: object) -> None:
        raise IR3DEError("disk full")

    monkeypatch.setattr("ir3de.eval.report.render_markdown", fail)
    with pytest.raises(IR3DEError, match="disk full"):
        _run(result, tmp_path, ["alpha"], decisions=False)
    assert {p.name for p in tmp_path.iterdir()} == set(before)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def _tables(markdown: str) -> list[list[str]]:
    """The markdown's tables, each as its lines; a table's rows must follow without a gap."""
    tables: list[list[str]] = []
    previous = ""
    for line in markdown.splitlines():
        if line.startswith("|"):
            if previous.startswith("|"):
                tables[-1].append(line)
            else:
                tables.append([line])
        else:
            assert not previous.startswith("|") or not line, f"row broken: {line!r}"
        previous = line
    return tables


def test_table_cells_escape_pipes_and_line_breaks(tmp_path: Path, emb: Embedder) -> None:
    """A domain named with ``|`` keeps every table's columns aligned (a line break in a
    name is refused when the data is read)."""
    names = {"math": "ma|th", "coding": "cod ing"}
    data = tmp_path / "fit.jsonl"
    records = [{"id": f"{d}{i}", "text": t, "domain": names.get(d, d)}
               for d, texts in CORPORA.items() for i, t in enumerate(texts)]
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    experts = [names.get(d, d) for d in CORPORA]
    scores = {(r["id"], e): 1.0 + (e == r["domain"]) for r in records for e in experts}
    res = evaluate(custom_setting(data), embedders=[emb], presets=["default"],
                   baselines=make_baselines(["random"]), resamples=0, scores=scores,
                   score_kind="task", progress=False)
    markdown = render_markdown({"meta": META, "settings": [res]}, {})
    tables = _tables(markdown)
    assert len(tables) == 4  # summary, accuracy, selector grid, normalized performance
    for table in tables:
        widths = {len(re.split(r"(?<!\\)\|", row)) for row in table}
        assert len(widths) == 1, table
    assert r"ma\|th" in tables[1][0] and "cod ing" in tables[1][0]
    assert r"ma\|th" in tables[3][0]


def test_data_line_shows_what_the_run_read(result: dict) -> None:
    def data_line(meta: dict, **changes: object) -> str:
        markdown = render_markdown({"meta": meta, "settings": [{**result, **changes}]}, {})
        return next(line for line in markdown.splitlines() if line.startswith("Data: "))

    # A custom setting reads no data folder: the default one is not named as if it had.
    assert "`data`" not in data_line(META)
    assert data_line({**META, "fit": "mine/fit.jsonl", "test": None}).startswith(
        "Data: fit `mine/fit.jsonl`, test 30 % of the fit data (by id), seed 0")
    assert data_line({**META, "fit": "f.jsonl", "test": "t.jsonl"}).startswith(
        "Data: fit `f.jsonl`, test `t.jsonl`, seed 0")
    # A built-in setting lists the shared files it read under "sources".
    assert data_line(META, sources={"fit": {"math": ["gsm8k.jsonl"]}}).startswith(
        "Data: `data`, seed 0")
    # write_report's docstring example gives a meta without the folder: not "user data"
    assert data_line({k: v for k, v in META.items() if k != "data_dir"},
                     sources={"fit": {"math": ["gsm8k.jsonl"]}}).startswith(
        "Data: the shared data (each setting below lists its files), seed 0")


@pytest.mark.parametrize("panels", [3, 6])
def test_confusion_figure_text_does_not_overlap(result: dict, panels: int,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The suptitle clears the panel titles, and no panel's tick labels reach its neighbour."""
    import matplotlib

    matplotlib.use("Agg")
    from ir3de.eval import plots

    baseline = next(r for r in result["routers"] if r["family"] == "random")
    shown = [r for r in result["routers"] if r["family"] == "ir3de" and r["is_preset"]]
    extra = [{**baseline, "name": f"baseline {i}"} for i in range(panels - len(shown))]
    fig = plots._confusions({**result, "routers": shown + extra}, plots._Readable())
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    axes = [ax for ax in fig.axes if ax.has_data()]
    assert len(axes) == panels
    suptitle = fig._suptitle.get_window_extent(renderer)
    for ax in axes:
        assert not suptitle.overlaps(ax.title.get_window_extent(renderer))
    boxes = [ax.get_tightbbox(renderer) for ax in axes]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not a.overlaps(b)


def test_plots_print_dollar_signs_in_names(result: dict) -> None:
    """A domain named like mathtext was parsed as such and failed (ValueError) at savefig."""
    from ir3de.eval.plots import render_plots

    names = {d: f"$\\{d}$" for d in result["domains"]}
    routers = [{**r, "per_domain": {names[d]: v for d, v in r["per_domain"].items()}}
               for r in result["routers"]]
    renamed = {**result, "domains": list(names.values()), "routers": routers}
    pngs = render_plots(renamed)
    assert len(pngs) == 3 and all(png.startswith(b"\x89PNG") for png in pngs.values())


def test_names_the_plot_font_lacks_get_one_warning_not_matplotlibs(
        result: dict, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Chinese domain names drew as rows of identical boxes, and matplotlib warned once per
    character and plot ("Glyph 25968 (...) missing from font(s) DejaVu Sans."), a dozen
    lines on stderr even with ir3de eval -q."""
    import warnings

    import matplotlib

    names = dict(zip(result["domains"], ["数学", "程序", "法律", "多语言"], strict=True))
    routers = [{**r, "per_domain": {names[d]: v for d, v in r["per_domain"].items()}}
               for r in result["routers"]]
    renamed = {**result, "domains": list(names.values()), "routers": routers}
    with matplotlib.rc_context({"font.family": ["DejaVu Sans"]}), \
            warnings.catch_warnings(record=True) as caught, \
            caplog.at_level("WARNING", logger="ir3de.eval"):
        warnings.simplefilter("always")
        _run(renamed, tmp_path, ["alpha", "beta"], decisions=False)
        figures = _drawn(renamed, monkeypatch)
    assert [str(w.message) for w in caught if "Glyph" in str(w.message)] == []
    # One line for the whole run, two settings of the same names notwithstanding (and one
    # more for the figures drawn again here).
    assert [r.name for r in caplog.records] == ["ir3de.eval.plots"] * 2
    assert caplog.messages[0] == (
        "ir3de: warning: the plot font (DejaVu Sans) has no glyph for some characters of 数学, "
        "程序, 法律, 多语言: the plots show each such character as its code point (数 as "
        "U+6570); name a font that has them in matplotlib's font.family to see them drawn")
    for axis in (figures["confusion"].axes[0].xaxis,  # type: ignore[attr-defined]
                 figures["confusion"].axes[0].yaxis):  # type: ignore[attr-defined]
        assert _tick_labels(axis) == ["U+6570 U+5B66", "U+7A0B U+5E8F", "U+6CD5 U+5F8B",
                                      "U+591A U+8BED U+8A00"]


def _section(markdown: str, setting: str) -> str:
    return markdown[markdown.index(f"## {setting}\n"):]


def test_report_says_what_was_dropped_and_where_test_prompts_are_too_few(result: dict) -> None:
    """Dropped prompts were counted in results.json only; one test prompt per domain gave a
    "95 % CI [100.0, 100.0]" and a domain without test prompts a bare "-", without a note."""
    (split,) = result["splits"]
    name = "IR3DE geo [wordllama, default]"
    comparison = {"baseline": "TF-IDF+LR", "level": 0.95, "resamples": 100,
                  "differences": {name: {"difference": 0.0, "low": 0.0, "high": 0.0}}}
    routers = [{**r, "per_domain": {**r["per_domain"], "law": None}} for r in result["routers"]]
    odd = {**result, "setting": "odd", "routers": routers, "comparison": comparison,
           "splits": [{**split, "test": {**split["test"], "law": 0},
                       "dropped": {**split["dropped"], "math": 2, "law": 5}}],
           "test_prompts": {**result["test_prompts"], "law": 0}}
    markdown = render_markdown({"meta": META, "settings": [odd]}, {})
    text = _section(markdown, "odd")
    assert "; test math 3, coding 3, law 0, multilingual 2; dropped (text also a fit prompt) " \
           "math 2, law 5\n" in text
    assert "> **7 test prompts left out** (\"dropped\" above): the text (leading and " \
           "trailing whitespace aside) is also a fit prompt" in text
    assert "> **Too few test prompts to judge by**: math 3, coding 3, multilingual 2 " \
           "(fewer than 20). Each prompt there is worth at least 33 points" in text
    assert "the balanced accuracy's intervals and the gaps to the best baseline are not " \
           "meaningful" in text
    assert "> **Not tested: law** (\"-\" in the tables): no test prompt has that gold domain" \
        in text
    assert '"-": no figure (a domain without test prompts' in text
    # The summary's gaps to the best baseline carry the caveat too.
    summary = markdown[:markdown.index("## odd\n")]
    assert "**Not meaningful for `odd`**: a domain there has fewer than 20 test prompts" \
        in summary
    # Enough test prompts, none dropped: no note at all.
    fine = {**odd, "setting": "fine", "splits": [split],
            "test_prompts": {d: 20 for d in result["domains"]}}
    markdown = render_markdown({"meta": META, "settings": [fine]}, {})
    assert "left out" not in markdown and "Too few" not in markdown
    assert "Not tested" not in markdown and "Not meaningful" not in markdown


def test_an_untested_domain_is_not_too_few_test_prompts(result: dict) -> None:
    """A --test without prompts of one fit domain made the report say "Too few test
    prompts to judge by: law 0" and "Not meaningful" of the whole setting, though every
    tested domain had 60."""
    (split,) = result["splits"]
    name = "IR3DE geo [wordllama, default]"
    comparison = {"baseline": "TF-IDF+LR", "level": 0.95, "resamples": 100,
                  "differences": {name: {"difference": 0.0, "low": 0.0, "high": 0.0}}}
    counts = {**dict.fromkeys(result["domains"], 60), "law": 0}
    untested = {**result, "comparison": comparison, "test_prompts": counts,
                "splits": [{**split, "test": counts}]}
    markdown = render_markdown({"meta": META, "settings": [untested]}, {})
    assert "> **Not tested: law** (\"-\" in the tables)" in markdown
    assert "Too few" not in markdown and "Not meaningful" not in markdown
    # Without the per-domain count (results from before it was kept), the same.
    del untested["test_prompts"]
    assert "Too few" not in render_markdown({"meta": META, "settings": [untested]}, {})


def _drawn(result: dict, monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """The figures render_plots draws, by kind, drawn (so tick labels exist), not saved."""
    import matplotlib

    matplotlib.use("Agg")
    from ir3de.eval import plots

    figures: list[object] = []

    def keep(fig: object) -> bytes:
        fig.canvas.draw()  # type: ignore[attr-defined]
        figures.append(fig)
        return b""

    monkeypatch.setattr(plots, "figure_png", keep)
    names = plots.render_plots({**result, "setting": "custom"})
    return {name.split("_custom")[0]: fig for name, fig in zip(names, figures, strict=True)}


def _tick_labels(axis: object) -> list[str]:
    return [t.get_text() for t in axis.get_ticklabels(which="both")  # type: ignore[attr-defined]
            if t.get_text()]


def test_log_axes_have_plain_tick_labels(result: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """With math parsing off (for "$" in names), matplotlib's own log tick labels printed
    as raw TeX: $\\mathdefault{10^{1}}$, overlapping one another."""
    figures = _drawn(result, monkeypatch)
    k_axis = figures["accuracy_vs_k"].axes[0].xaxis  # type: ignore[attr-defined]
    assert _tick_labels(k_axis) == ["1", "2", "5", "10", "20", "50", "100", "200", "500", "avg"]
    cost_axis = figures["cost"].axes[0].xaxis  # type: ignore[attr-defined]
    labels = _tick_labels(cost_axis)  # (1000 beside 1e4 and 1e+05 before)
    assert labels and all(re.fullmatch(r"[0-9][0-9,]*|0\.[0-9]+", t) for t in labels), labels
    for fig in figures.values():
        for ax in fig.axes:  # type: ignore[attr-defined]
            for t in _tick_labels(ax.xaxis) + _tick_labels(ax.yaxis):
                assert "$" not in t and "mathdefault" not in t, t


def test_cost_plot_places_a_zero_cost_router_and_labels_every_named_router(
        result: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """A router at 0 µs was clipped to an arbitrary left edge; point labels overlapped."""
    import numpy as np

    routers = [{**r, "route_us": 0.0} if r["family"] == "random" else r
               for r in result["routers"]]
    ax = _drawn({**result, "routers": routers}, monkeypatch)["cost"].axes[0]  # type: ignore
    assert not ax.texts  # names in the legend, not on the points
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    named = [r for r in routers if r["family"] != "ir3de" or r["is_preset"]]
    assert legend[0].startswith("IR3DE, other selectors")
    assert "random (0 µs: drawn at the left end)" in legend
    assert len(legend) == 1 + len(named)
    xs = np.concatenate([c.get_offsets()[:, 0] for c in ax.collections])
    positive = [r["route_us"] for r in routers if r["route_us"] > 0]
    assert xs.min() == pytest.approx(min(positive) / 2) and ax.get_xlim()[0] < xs.min()


# ----------------------------------------------------------------------------- probe fixes
def test_an_output_in_the_way_fails_before_anything_is_written(result: dict,
                                                               tmp_path: Path) -> None:
    """A folder named like a plot failed after decisions.jsonl and the first plots were
    written beside the previous report."""
    _run(result, tmp_path, ["alpha"], decisions=False)
    (tmp_path / "cost_alpha.png").unlink()
    (tmp_path / "cost_alpha.png").mkdir()
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    with pytest.raises(IR3DEError, match=r"cost_alpha.png is a directory$"):
        _run(result, tmp_path, ["alpha"], decisions=True)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["cost_alpha.png"]


def test_a_move_cut_short_is_known_to_the_next_run(result: dict, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Files a failed run had moved in were "not written by ir3de eval" to the next one."""
    from ir3de.eval.report import previous_outputs

    _run(result, tmp_path, ["alpha"], decisions=False)
    real, moved = os.replace, []

    def cut(src: str | Path, dst: str | Path) -> None:
        staged = Path(src).parent.name.startswith(".ir3de-eval-staging-")
        if staged and Path(dst).parent == tmp_path:
            moved.append(Path(dst).name)
            if len(moved) == 2:
                raise OSError(28, "No space left on device")
        real(src, dst)

    monkeypatch.setattr(os, "replace", cut)
    with pytest.raises(IR3DEError, match=r"accuracy_vs_k_alpha.png: No space left on device"):
        _run(result, tmp_path, ["alpha"], decisions=True)
    monkeypatch.setattr(os, "replace", real)
    assert moved == ["decisions.jsonl", "accuracy_vs_k_alpha.png"]
    # The old results.json does not list decisions.jsonl; the pending list does.
    assert "decisions.jsonl" in previous_outputs(tmp_path)
    assert not [p for p in tmp_path.iterdir() if p.is_dir()]  # no staging folder left
    _run(result, tmp_path, ["alpha"], decisions=False)
    assert {p.name for p in tmp_path.iterdir()} == _plots("alpha") | {"results.json",
                                                                      "report.md"}


def test_a_link_to_nothing_named_as_an_output_is_refused(result: dict,
                                                        tmp_path: Path) -> None:
    """A broken symbolic link named like an output passed as absent: written through, it
    made its target (and folders) outside the output folder, without force; one to a
    place that cannot be made failed after the whole run, half the outputs moved in."""
    out = tmp_path / "out"
    out.mkdir()
    elsewhere = tmp_path / "elsewhere" / "deep" / "stolen.md"
    (out / "report.md").symlink_to(elsewhere)
    for force in (False, True):
        with pytest.raises(IR3DEError, match=rf"report.md is a symbolic link to "
                                             rf"{re.escape(str(elsewhere))}, which does not "
                                             r"exist: remove the link, or write elsewhere$"):
            _run(result, out, ["alpha"], decisions=False, force=force)
    assert not (tmp_path / "elsewhere").exists() and [p.name for p in out.iterdir()] == \
        ["report.md"]


def test_rendering_results_again_keeps_their_decisions(result: dict, tmp_path: Path) -> None:
    """results.json holds no decisions (they go to decisions.jsonl): rendered again into
    its folder, it removed decisions.jsonl as stale, the report still pointing there."""
    _run(result, tmp_path, ["alpha"], decisions=True)
    decisions = (tmp_path / "decisions.jsonl").read_bytes()
    report = (tmp_path / "report.md").read_text()
    assert "decisions.jsonl" in report
    write_report(json.loads((tmp_path / "results.json").read_text()), tmp_path)
    assert (tmp_path / "decisions.jsonl").read_bytes() == decisions
    assert (tmp_path / "report.md").read_text() == report
    assert "decisions.jsonl" in json.loads((tmp_path / "results.json").read_text())["outputs"]
    # with meta edited too (a note added to the command, the seed named): the same run
    results = json.loads((tmp_path / "results.json").read_text())
    results["meta"] = {**results["meta"], "command": "ir3de eval  # annotated"}
    write_report(results, tmp_path)
    assert (tmp_path / "decisions.jsonl").read_bytes() == decisions
    # another run's results, rendered into this folder, do not claim its decisions
    other = tmp_path / "other"
    _run(result, other, ["alpha"], decisions=True)
    results = json.loads((other / "results.json").read_text())
    for r in results["settings"]:  # (another run: its errors are others)
        r["error_terms"] = {name: {**info, "errors": info["errors"] + 1}
                            for name, info in r["error_terms"].items()}
    write_report(results, tmp_path)
    assert not (tmp_path / "decisions.jsonl").exists()
    assert "decisions.jsonl" not in json.loads((tmp_path / "results.json").read_text())[
        "outputs"]
    # and its report does not point to a decisions.jsonl beside it (it did)
    text = (tmp_path / "report.md").read_text()
    assert "terms were kept in the run's decisions.jsonl, which is not beside this report" \
        in text and "terms are in decisions.jsonl" not in text
    # a run without decisions still removes them
    _run(result, other, ["alpha"], decisions=False)
    assert not (other / "decisions.jsonl").exists()


def test_a_staging_folder_a_killed_run_left_is_removed(result: dict, tmp_path: Path) -> None:
    """A run killed outright (SIGKILL: no finally) left its hidden staging folder, half a
    run's plots in it, and no later run removed it. One still held, or just made, stays."""
    import fcntl

    dead, held, fresh = (tmp_path / f".ir3de-eval-staging-{n}" for n in ("dead", "held",
                                                                          "fresh"))
    for folder in (dead, held, fresh):
        folder.mkdir()
        (folder / "confusion_alpha.png").write_bytes(b"half")
    for folder in (dead, held):
        os.utime(folder, (0, 0))
    fd = os.open(held, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        _run(result, tmp_path, ["alpha"], decisions=False)
    finally:
        os.close(fd)
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == [fresh.name, held.name]


def test_a_router_result_lacking_a_field_is_named(result: dict, tmp_path: Path) -> None:
    """A router's result without route_us (results.json edited) was a bare KeyError."""
    bare = {k: v for k, v in result.items() if k != "decisions"}
    ir3de = next(r for r in bare["routers"] if r["family"] == "ir3de")
    routers = [{k: v for k, v in r.items() if r is not ir3de or k not in ("route_us", "k")}
               for r in bare["routers"]]
    with pytest.raises(IR3DEError, match=rf"^write_report: setting 'custom': router "
                                         rf"{re.escape(repr(ir3de['name']))} is not a result "
                                         r"of evaluate\(\): it lacks route_us, k$"):
        write_report({"settings": [{**bare, "routers": routers}]}, tmp_path / "out")
    with pytest.raises(IR3DEError, match=r"routers\[0\] must be a dict, got list"):
        write_report({"settings": [{**bare, "routers": [[]]}]}, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_write_report_checks_results_before_writing_and_defaults_meta(
        result: dict, tmp_path: Path) -> None:
    """The documented {"meta": {...}} crashed with KeyError 'command' after the plots."""
    out = tmp_path / "bad"
    bare = {k: v for k, v in result.items() if k != "decisions"}
    with pytest.raises(IR3DEError, match=r"^write_report: settings\[0\] is not a result of "
                                         r"evaluate\(\): it lacks description, leaks_test"):
        write_report({"meta": {}, "settings": [{"setting": "x", "domains": []}]}, out)
    with pytest.raises(IR3DEError, match=r"two settings are named 'custom'"):
        write_report({"settings": [bare, bare]}, out)
    with pytest.raises(IR3DEError, match=r"setting name 'a b': use letters"):
        write_report({"settings": [{**bare, "setting": "a b"}]}, out)
    assert not out.exists()
    text = write_report({"meta": {}, "settings": [bare]}, tmp_path / "ok",
                        plots=False).read_text()
    assert "Command:" not in text and re.search(r"^Date: \d{4}-\d\d-\d\d \d\d:\d\d UTC  $",
                                                text, re.M)
    assert re.search(r"^Machine: .*CPUs.*Python", text, re.M)
    meta = json.loads((tmp_path / "ok" / "results.json").read_text())["meta"]
    assert set(meta) == {"date", "machine"}


def test_text_that_is_not_utf8_fails_before_anything_is_written(result: dict,
                                                                 tmp_path: Path) -> None:
    """A domain from a file name that is not UTF-8 failed in matplotlib after the run."""
    odd = "caf\udce9"
    routers = [{**r, "per_domain": {odd if d == "law" else d: v
                                    for d, v in r["per_domain"].items()}}
               for r in result["routers"]]
    bad = {**result, "domains": [odd if d == "law" else d for d in result["domains"]],
           "routers": routers}
    with pytest.raises(IR3DEError, match=r"cannot write report.md: the results hold "
                                         r"'\\udce9', which is not UTF-8 text"):
        write_report({"meta": META, "settings": [bad]}, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def _many(n: int) -> dict:
    """A result with ``n`` domains, as much as the confusion plot reads."""
    import numpy as np

    confusion = np.eye(n, dtype=int).tolist()
    routers = [{"name": f"IR3DE geo [wordllama, {p}]", "family": "ir3de", "is_preset": True,
                "confusion": confusion, "balanced": 1.0} for p in ("default", "paper")]
    routers.append({"name": "random", "family": "random", "confusion": confusion,
                    "balanced": 1 / n})
    return {"setting": "many", "domains": [f"domain_{i:03d}" for i in range(n)],
            "routers": routers}


def test_confusion_figure_size_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    """120 domains drew a 24212 x 6057 pixel figure (3 GB), 340 one of 573 megapixels."""
    import struct

    import matplotlib

    matplotlib.use("Agg")
    from ir3de.eval import plots

    small = plots._confusions(_many(4), plots._Readable())
    assert tuple(small.get_size_inches()) == pytest.approx((3 * 2.8, 2.8))  # as before
    assert len(small.axes[0].get_xticklabels()) == 4
    big = plots._confusions(_many(120), plots._Readable())
    assert tuple(big.get_size_inches()) == pytest.approx((3 * 6.0, 6.0))
    assert not big.axes[0].get_xticklabels() and not big.axes[0].get_yticklabels()
    assert "120 domains in the order of results.json, unlabelled" in big._suptitle.get_text()
    width, height = struct.unpack(">II", plots.figure_png(big)[16:24])
    assert width * height < 4e6, (width, height)


def test_report_says_when_the_confusion_plot_is_unlabelled(result: dict) -> None:
    extra = [f"x{i}" for i in range(41)]
    routers = [{**r, "per_domain": {**r["per_domain"], **dict.fromkeys(extra)}}
               for r in result["routers"]]
    many = {**result, "domains": result["domains"] + extra, "routers": routers}
    plots = {"custom": [f"{k}_custom.png" for k in KINDS]}
    note = "The confusion plot's axes are not labelled: 45 domains are more than 40"
    assert note in render_markdown({"meta": META, "settings": [many]}, plots)
    assert "not labelled" not in render_markdown({"meta": META, "settings": [result]}, plots)


def test_the_plot_note_stays_with_normalized_performance(result: dict) -> None:
    """With --scores, the normalized-performance table's domains (the scored ones) took
    the place of the setting's, and the note of an unlabelled plot went."""
    extra = [f"x{i}" for i in range(41)]
    routers = [{**r, "per_domain": {**r["per_domain"], **dict.fromkeys(extra)}}
               for r in result["routers"]]
    table = {r["name"]: {"domains": {"math": 0.9, "coding": 0.8}, "average": 0.85}
             for r in result["routers"]}
    many = {**result, "domains": result["domains"] + extra, "routers": routers,
            "score_kind": "task", "normalized_performance": {"all": table}}
    markdown = render_markdown({"meta": META, "settings": [many]},
                               {"custom": [f"{k}_custom.png" for k in KINDS]})
    assert "| method | math | coding | average |" in markdown
    assert "The confusion plot's axes are not labelled: 45 domains are more than 40" \
        in markdown


def test_ties_as_shown_are_all_bold_and_levels_keep_their_digits(result: dict) -> None:
    """0.825 and 0.8250000000000001 both showed 82.5, one bold; a 99.9 % interval was
    headed "100 %"."""
    from ir3de.eval.report import summary_routers

    first, second = (r["name"] for r in summary_routers(result))  # the router, random
    value = {first: 0.825, second: 0.8250000000000001}
    tied = [{**r, "balanced": value.get(r["name"], 0.5)} for r in result["routers"]]
    comparison = {"baseline": "TF-IDF+LR", "level": 0.999, "resamples": 100,
                  "differences": {first: {"difference": 0.0, "low": 0.0, "high": 0.0}}}
    odd = {**result, "routers": tied, "comparison": comparison}
    markdown = render_markdown({"meta": META, "settings": [odd]}, {})
    summary = markdown[:markdown.index("## Preset routers")]
    assert f"| {first} | **82.5** |" in summary and f"| {second} | **82.5** |" in summary
    assert "(points, 99.9 % interval)" in markdown and "| balanced 99.9 % CI |" in markdown


def test_confusion_labels_are_cut_with_an_ellipsis_and_stay_distinct() -> None:
    """Labels were cut to 10 characters: two "customer_s", one "instructio"."""
    from ir3de.eval.plots import _Readable, _tick_labels

    domains = ["customer_support_tickets_en", "customer_support_tickets_fr",
               "instruction_following", "math", "a\nb", "a b"]
    labels = _tick_labels(domains, _Readable())
    assert labels == ["customer_support…kets_en", "customer_support…kets_fr",
                      "instruction_following", "math", "a b #5", "a b #6"]
    same = ["x" * 30 + "a" + "y" * 10, "x" * 30 + "b" + "y" * 10]
    assert _tick_labels(same, _Readable()) == ["xxxxxxxxxxxxxxxx…yyyyyyy #1",
                                               "xxxxxxxxxxxxxxxx…yyyyyyy #2"]


def test_characters_no_plot_font_has_are_shown_as_code_points() -> None:
    """DejaVu Sans, matplotlib's default, has no Chinese: every such character was drawn as
    the same box, so 数学 and 程序 looked alike."""
    import matplotlib

    from ir3de.eval.plots import _Readable, _tick_labels

    with matplotlib.rc_context({"font.family": ["DejaVu Sans"]}):
        readable = _Readable()
        assert readable("数学") == "U+6570 U+5B66"
        assert readable("x数 y\tz") == "x U+6570 y\tz"  # whitespace is never looked up
        assert readable("Ⓐ") == "U+24B6"  # a character of STIXGeneral, not of DejaVu Sans
        assert readable("Право, é, math") == "Право, é, math"  # what the font has, as it is
        assert list(readable.changed) == ["数学", "x数 y\tz", "Ⓐ"]
        # A long name is cut between code points, never within one.
        assert _tick_labels(["指令跟随任务", "指令遵循任务", "数学"], readable) == [
            "U+6307 U+4EE4 … U+52A1 #1", "U+6307 U+4EE4 … U+52A1 #2", "U+6570 U+5B66"]
    # A glyph missing from the first font of font.family is taken from the next, as
    # matplotlib draws it; a family that is not installed is skipped, as matplotlib does.
    with matplotlib.rc_context({"font.family": ["no such font", "DejaVu Sans", "STIXGeneral"]}):
        readable = _Readable()
        assert readable("Ⓐ数") == "Ⓐ U+6570" and list(readable.changed) == ["Ⓐ数"]
        assert readable.warning() == (
            "the plot font (DejaVu Sans, STIXGeneral) has no glyph for some characters of Ⓐ数: "
            "the plots show each such character as its code point (数 as U+6570); name a font "
            "that has them in matplotlib's font.family to see them drawn")


def test_seeds_line_says_what_each_setting_did_with_them(result: dict) -> None:
    """A custom setting with its own test data ran one split, not one per seed; where splits
    were repeated, the seed the seeded baselines were trained with is said too: each split's
    (kept per split), or one for all of them (a baseline that took no split seed, or results
    from before the harness kept it, whose one seed is the run's)."""
    def data_line(*settings: dict, meta: dict = META) -> str:
        meta = {**meta, "seeds": [0, 1, 2]}
        markdown = render_markdown({"meta": meta, "settings": list(settings)}, {})
        return next(line for line in markdown.splitlines() if line.startswith("Data: "))

    def with_split_seeds(setting: dict, seeds: list[int | None]) -> dict:
        """``setting`` with its one split run once per seed, the baselines' ``seed`` kept
        per split (None: not kept, as in results from before)."""
        def splits(r: dict) -> list[dict]:
            (split,) = r["splits"]
            return [{k: v for k, v in split.items() if k != "seed"}
                    | ({"seed": s} if s is not None and r["family"] == "random" else {})
                    for s in seeds]
        return {**setting, "routers": [{**r, "splits": splits(r)} for r in setting["routers"]]}

    fixed = {**result, "seeds": [0]}
    pooled = {**result, "setting": "domains", "seeds": [0, 1, 2]}
    assert data_line(fixed).endswith("seeds 0, 1, 2 (custom: one split, which the seed does "
                                     "not change, run with seed 0)")
    assert data_line(with_split_seeds(pooled, [0, 1, 2]), fixed).endswith(
        "seeds 0, 1, 2 (seeded splits repeated once per seed and pooled for domains; custom: "
        "one split, which the seed does not change, run with seed 0; random trained with "
        "each split's seed)")
    assert data_line(with_split_seeds(pooled, [5, 5, 5])).endswith(
        "seeds 0, 1, 2 (seeded splits repeated once per seed and pooled; random with seed 5 "
        "on every split)")
    # Results from before: no seed per split, the run's one seed (meta) on every split.
    assert data_line(with_split_seeds(pooled, [None] * 3), meta={**META, "seed": 7}).endswith(
        "seeds 0, 1, 2 (seeded splits repeated once per seed and pooled; random with seed 7 "
        "on every split)")
    # A setting run once says its seed itself: its baselines are not said to be pooled.
    assert data_line(with_split_seeds(fixed, [0]), with_split_seeds(pooled, [1, 1, 1]),
                     ).endswith("custom: one split, which the seed does not change, run "
                                "with seed 0; random with seed 1 on every split)")
    # No baseline seed recorded, or no baseline that takes one (kNN): nothing to say.
    unrecorded = {k: v for k, v in META.items() if k != "seed"}
    pooled = with_split_seeds(pooled, [None] * 3)
    unseeded = {**pooled, "routers": [{**r, "family": "knn"} if r["family"] == "random" else r
                                      for r in pooled["routers"]]}
    for line in (data_line(pooled, meta=unrecorded), data_line(unseeded)):
        assert line.endswith("seeds 0, 1, 2 (seeded splits repeated once per seed and pooled)")


def test_command_line_is_a_code_span_no_backtick_ends(result: dict) -> None:
    def command(line: str) -> str:
        markdown = render_markdown({"meta": {**META, "command": line}, "settings": [result]},
                                   {})
        return next(row for row in markdown.splitlines() if row.startswith("Command: "))

    assert command("ir3de eval --out x") == "Command: `ir3de eval --out x`  "
    assert command("ir3de eval --out 'a`b'") == "Command: ``ir3de eval --out 'a`b'``  "
    assert command("`x``") == "Command: ``` `x`` ```  "
    assert command("ir3de eval --fit 'a\nb'") == "Command: `ir3de eval --fit 'a b'`  "


def test_split_line_stays_one_line_with_a_line_break_in_a_domain(result: dict) -> None:
    (split,) = result["splits"]
    odd = {**result, "splits": [{**split, "fit": {"cod\ning": 3, **split["fit"]}}]}
    markdown = render_markdown({"meta": META, "settings": [odd]}, {})
    bullet = next(line for line in markdown.splitlines() if line.startswith("* split"))
    assert bullet.startswith("* split `all`: fit cod ing 3, ") and "; test " in bullet


def test_error_terms_are_named_as_code_spans() -> None:
    """The report names an error's term by its tokens: a pair's two (the start of the
    prompt as ``(start)``), a skip pair's with ``_`` for the token between, in a code span a
    backtick inside cannot end; the TF-IDF bias, which has no token, by name."""
    from ir3de.eval.report import _term

    assert _term({"kind": "token", "tokens": ["▁def"]}) == "`▁def`"
    assert _term({"kind": "pair", "tokens": [None, "▁def"]}) == "`(start) ▁def`"
    assert _term({"kind": "skip", "tokens": ["a", "`b"]}) == "``a _ `b``"
    assert _term({"kind": "bias", "tokens": []}) == "(TF-IDF bias)"

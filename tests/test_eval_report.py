"""write_report into a folder that already holds an earlier run: no stale outputs survive."""

from __future__ import annotations

import json
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
         plots: bool = True) -> Path:
    drop = () if decisions else ("decisions",)
    settings = [{**{k: v for k, v in result.items() if k not in drop}, "setting": n}
                for n in names]
    return write_report({"meta": META, "settings": settings}, out, plots=plots)


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
    """A domain named with ``|`` or a line break keeps every table's columns aligned."""
    names = {"math": "ma|th", "coding": "cod\ning"}
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


@pytest.mark.parametrize("panels", [3, 6])
def test_confusion_figure_text_does_not_overlap(result: dict, panels: int,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The suptitle clears the panel titles, and no panel's tick labels reach its neighbour."""
    import matplotlib

    matplotlib.use("Agg")
    from ir3de.eval import plots

    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig))
    baseline = next(r for r in result["routers"] if r["family"] == "random")
    shown = [r for r in result["routers"] if r["family"] == "ir3de" and r["is_preset"]]
    extra = [{**baseline, "name": f"baseline {i}"} for i in range(panels - len(shown))]
    plots._confusions({**result, "routers": shown + extra}, Path("unused.png"))
    fig, = figures
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


def test_plots_print_dollar_signs_in_names(result: dict, tmp_path: Path) -> None:
    """A domain named like mathtext was parsed as such and failed (ValueError) at savefig."""
    from ir3de.eval.plots import plot_setting

    names = {d: f"$\\{d}$" for d in result["domains"]}
    routers = [{**r, "per_domain": {names[d]: v for d, v in r["per_domain"].items()}}
               for r in result["routers"]]
    renamed = {**result, "domains": list(names.values()), "routers": routers}
    paths = plot_setting(renamed, tmp_path)
    assert all(p.stat().st_size > 0 for p in paths)


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
    assert "> **7 test prompts left out** (\"dropped\" above): the exact text is also a fit " \
           "prompt" in text
    assert "> **Too few test prompts to judge by**: math 3, coding 3, law 0, multilingual 2 " \
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


def _drawn(result: dict, monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """The figures plot_setting draws, by kind, drawn (so tick labels exist), not saved."""
    import matplotlib

    matplotlib.use("Agg")
    from ir3de.eval import plots

    figures: dict[str, object] = {}

    def keep(fig: object, path: Path) -> None:
        fig.canvas.draw()  # type: ignore[attr-defined]
        figures[path.name.split("_custom")[0]] = fig

    monkeypatch.setattr(plots, "_save", keep)
    plots.plot_setting({**result, "setting": "custom"}, Path("unused"))
    return figures


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
    labels = _tick_labels(cost_axis)
    assert labels and all(re.fullmatch(r"[0-9.e+-]+", t) for t in labels), labels
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

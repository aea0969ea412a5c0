"""PNG plots of evaluation results (matplotlib, headless).

* ``accuracy_vs_k_<setting>.png`` — balanced accuracy of IR3DE topk against k, one line
  per embedder and preset, the ``avg`` selector as a square at the axis' ``avg`` tick, and
  the baselines as horizontal lines (the paper's Figure 3).
* ``confusion_<setting>.png`` — row-normalised confusion matrices of the preset IR3DE
  routers and the baselines. Panels grow with the number of domains up to a cap (6 inches),
  so hundreds of domains make a figure of a few megapixels, not of hundreds; the cells hold
  their percentages up to 9 domains, the axes name the domains up to
  :data:`MAX_LABELLED_DOMAINS` (longer names cut in the middle with an ellipsis, names that
  would then look alike numbered by their place in the domain order), and beyond that the
  axes are unlabelled and the report says so.
* ``cost_<setting>.png`` — balanced accuracy against routing time per prompt (log scale)
  for every router; the preset IR3DE routers and the baselines have their own markers in
  the legend (no labels on the points, which overlapped), a router that took no
  measurable time sits at the axis' left end with a ``<`` marker.

User text (domain, router and setting names) is drawn as itself: math parsing is off, so a
``$`` prints as a dollar, and the log axes use plain-number tick labels (``1``, ``10``,
``100``), not matplotlib's mathtext ``10^{1}``. A character that no plot font has (Chinese
in matplotlib's default DejaVu Sans) is written as its code point instead, ``数学`` as
``U+6570 U+5B66``: matplotlib would draw every such character as the same box, so that
``数学`` and ``程序`` could not be told apart; one warning says so, instead of matplotlib's
own, one per character and figure. Legends sit beside the axes, never on the data.
:func:`render_plots` returns the PNG files' bytes; the report writes them
(:func:`ir3de.eval.report.write_report`).
"""

from __future__ import annotations

import io
import logging
import warnings
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import listed

if TYPE_CHECKING:  # matplotlib itself is imported where it draws (the eval extra)
    from matplotlib.artist import Artist
    from matplotlib.ft2font import FT2Font

__all__ = ["MAX_LABELLED_DOMAINS", "figure_png", "plot_names", "render_plots"]

# The confusion plot names its domains on the axes up to this many; beyond, 6-inch panels
# leave less than ~10 points per label and the labels overlap.
MAX_LABELLED_DOMAINS = 40
# Cells carry their percentage up to this many domains.
_ANNOTATED_DOMAINS = 9
# A confusion panel's side: 1 inch plus 0.45 per domain, at most this (figures of 120
# domains were 24212 x 6057 pixels and took 3 GB to draw).
_MAX_PANEL_INCHES = 6.0
# A tick label longer than this is cut in the middle: "customer_support_en" and
# "customer_support_fr" differ at the end, "legal_contracts" and "legal_opinions" early on.
_LABEL_CHARS = 24

# With no logging configured, Python prints a warning on stderr as it is, one line (ir3de
# eval, even with -q); a program that configures logging gets an "ir3de.eval.plots" record.
log = logging.getLogger(__name__)
# matplotlib's warning for a character its fonts lack ("Glyph 25968 (...) missing from
# font(s) DejaVu Sans.", "... missing from current font." before 3.6): one line per
# character and figure, silenced in ir3de's plots, whose own warning replaces them.
_GLYPH_WARNING = r"Glyph \d+ .*missing from"

_FAMILY_COLORS = {"ir3de": "tab:blue", "saved": "black", "random": "tab:gray",
                  "knn": "tab:green", "tfidf": "tab:orange", "modem": "tab:red"}
# IR3DE lines and points in colours no baseline family uses, one per (embedder, preset),
# the same in the accuracy-vs-k and the cost plot.
_IR3DE_COLORS = ["tab:blue", "tab:purple", "tab:brown", "tab:cyan", "tab:olive", "tab:pink"]
_MARKERS = ["o", "s", "D", "^", "v", "P", "X", "*", "h", "p", ">"]
# Beside the axes (the figure is saved with a tight bounding box): never over a line.
_LEGEND: dict[str, Any] = {"fontsize": 7, "loc": "upper left",
                           "bbox_to_anchor": (1.01, 1.0), "borderaxespad": 0.0}


def plot_names(setting: str) -> list[str]:
    """The file names of a setting's plots, as :func:`render_plots` names them."""
    return [f"{kind}_{setting}.png" for kind in ("accuracy_vs_k", "confusion", "cost")]


def figure_png(fig: Any) -> bytes:
    """``fig`` as PNG bytes, as every ir3de plot is saved; the figure is closed."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


class _Readable:
    """User text as the plot fonts can draw it (see the module docs): a character none of
    them has becomes its code point, ``U+6570``, set off from its neighbours by a space.
    The fonts are those text is drawn in under the rcParams in force when this is made;
    the names changed are kept (``changed``) for the one warning about them."""

    def __init__(self) -> None:
        from matplotlib.font_manager import FontProperties, findfont, get_font

        # As matplotlib (>= 3.6) picks them: the installed font of each family of
        # font.family, a glyph missing from one taken from the next; the default font
        # when none is installed.
        default = FontProperties()
        paths = []
        for family in default.get_family():
            prop = default.copy()
            prop.set_family(family)
            try:
                paths.append(findfont(prop, fallback_to_default=False))
            except ValueError:  # not installed: matplotlib skips it too
                continue
        self.fonts: list[FT2Font] = [get_font(p) for p in paths or [findfont(default)]]
        self.changed: dict[str, None] = {}  # an ordered set

    def _drawn(self, char: str) -> bool:
        # get_char_index is 0 for a character the font has no glyph of (FreeType's
        # FT_Get_Char_Index); whitespace needs none to be seen as a gap.
        return char.isspace() or any(font.get_char_index(ord(char)) for font in self.fonts)

    def parts(self, text: str) -> list[str]:
        """``text`` as the pieces it is drawn in: its characters, a code point (``U+6570``)
        for each the fonts lack, and a space between a code point and a neighbour that is
        not one; :func:`_tick_labels` cuts a long label between pieces, never within one."""
        out: list[str] = []
        was_code = False
        for char in text:
            is_code = not self._drawn(char)
            if out and (is_code or was_code) and not (char.isspace() or out[-1].isspace()):
                out.append(" ")
            out.append(f"U+{ord(char):04X}" if is_code else char)
            was_code = is_code
        if any(len(part) > 1 for part in out):
            self.changed[text] = None
        return out

    def __call__(self, text: str) -> str:
        return "".join(self.parts(text))

    def warning(self) -> str | None:
        """The one-line warning about the names shown with code points, if any."""
        if not self.changed:
            return None
        names = [" ".join(name.split()) for name in self.changed]
        char = next(c for c in "".join(self.changed) if not self._drawn(c))
        fonts = ", ".join(dict.fromkeys(font.family_name for font in self.fonts))
        return (f"the plot font ({fonts}) has no glyph for some characters of "
                f"{listed(names)}: the plots show each such character as its code point "
                f"({char} as U+{ord(char):04X}); name a font that has them in matplotlib's "
                "font.family to see them drawn")


def _tick_labels(domains: list[str], readable: _Readable) -> list[str]:
    """Axis labels of ``domains``: on one line, drawable (:class:`_Readable`), a long name
    cut in the middle with an ellipsis (the first 10 characters left no ellipsis and made
    ``customer_s`` of two domains), and labels that still coincide given their 1-based
    place in the domain order (``#2``), so no two domains ever share a label."""
    def cut(name: str) -> str:
        # One line (a line break would make a two-line label), cut between the pieces it
        # is drawn in: a code point is never cut in two.
        parts = readable.parts(" ".join(name.split()))
        if sum(map(len, parts)) <= _LABEL_CHARS:
            return "".join(parts)
        tail = (_LABEL_CHARS - 1) // 3
        return ("".join(_fitting(parts, _LABEL_CHARS - 1 - tail)) + "…"
                + "".join(reversed(_fitting(parts[::-1], tail))))

    labels = [cut(d) for d in domains]
    while len(set(labels)) < len(labels):  # a second pass only if "x #2" was a real name
        counts = Counter(labels)
        labels = [f"{label} #{i + 1}" if counts[label] > 1 else label
                  for i, label in enumerate(labels)]
    return labels


def _fitting(parts: list[str], width: int) -> list[str]:
    """The first of ``parts`` that fit in ``width`` characters together."""
    kept: list[str] = []
    used = 0
    for part in parts:
        if used + len(part) > width:
            break
        kept.append(part)
        used += len(part)
    return kept


def _short(name: str) -> str:
    return name.replace("IR3DE ", "").replace("[", "").replace("]", "")


def _ir3de_lines(routers: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return sorted({(r["embedder"], r["preset"]) for r in routers if r["family"] == "ir3de"})


def _plain_log_ticks(axis: Any) -> None:
    """Plain-number labels on a log axis (``10``, ``100``, ``10,000``, ``0.5``): matplotlib's
    own are mathtext (``$\\mathdefault{10^{1}}$``), which prints as raw TeX with math parsing
    off, and its LogFormatter mixes ``1000`` with ``1e4`` and ``1e+05``. Which ticks get a
    label is still LogFormatter's choice."""
    from matplotlib.ticker import LogFormatter

    class Plain(LogFormatter):
        def __call__(self, x: float, pos: int | None = None) -> str:
            if not super().__call__(x, pos):
                return ""
            return f"{x:,.0f}" if x >= 1 and float(x).is_integer() else f"{x:g}"

    axis.set_major_formatter(Plain())
    axis.set_minor_formatter(Plain(labelOnlyBase=False))


def _accuracy_vs_k(result: dict[str, Any], readable: _Readable) -> Any:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullLocator

    routers = result["routers"]
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    styles = ["-", "--", "-.", ":"]
    grid: set[int] = set()
    avg_at = 0.0  # where the avg squares go: right of every line's largest k
    for i, (emb, preset) in enumerate(_ir3de_lines(routers)):
        topk = sorted((r["k"], r["balanced"]) for r in routers if r["family"] == "ir3de"
                      and r["embedder"] == emb and r["preset"] == preset
                      and r["selector"] == "topk")
        ks, acc = zip(*topk, strict=True)
        grid.update(ks)
        avg_at = max(avg_at, ks[-1] * 1.6)
        line, = ax.plot(ks, 100 * np.array(acc), styles[i % 4], marker="o", ms=3,
                        color=_IR3DE_COLORS[i % len(_IR3DE_COLORS)],
                        label=readable(f"topk {emb}, {preset}"))
        for r in routers:
            if r["family"] == "ir3de" and r["embedder"] == emb and r["preset"] == preset \
                    and r["selector"] == "avg":
                ax.scatter([ks[-1] * 1.6], [100 * r["balanced"]], marker="s",
                           color=line.get_color(), zorder=3)
    for r in routers:
        if r["family"] != "ir3de":
            ax.axhline(100 * r["balanced"], color=_FAMILY_COLORS.get(r["family"], "k"),
                       lw=0.9, ls=":", label=readable(r["name"]))
    ax.set_xscale("log")
    if grid:  # one labelled tick per k of the grid, and "avg" under the squares
        ticks = sorted(grid)
        ax.set_xticks([*ticks, avg_at], [*map(str, ticks), "avg"])
        ax.xaxis.set_minor_locator(NullLocator())
    else:
        _plain_log_ticks(ax.xaxis)
    ax.set_xlabel("k (lowest-entropy tokens that vote); squares: avg selector")
    ax.set_ylabel("balanced routing accuracy (%)")
    ax.set_title(f"{result['setting']}: accuracy vs k")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**_LEGEND)
    return fig


def _confusions(result: dict[str, Any], readable: _Readable) -> Any:
    import matplotlib.pyplot as plt

    shown = [r for r in result["routers"]
             if (r["family"] == "ir3de" and r["is_preset"]) or r["family"] not in ("ir3de",)]
    domains = result["domains"]
    cols = min(4, len(shown))
    rows = -(-len(shown) // cols)
    size = min(1.0 + 0.45 * len(domains), _MAX_PANEL_INCHES)
    labels = _tick_labels(domains, readable) if len(domains) <= MAX_LABELLED_DOMAINS else None
    # Constrained layout makes room for the suptitle above the panels' two-line titles and
    # for each panel's y tick labels beside its left neighbour; fixed spacing overlapped both.
    fig, axes = plt.subplots(rows, cols, figsize=(cols * size, rows * size), squeeze=False,
                             layout="constrained")
    for ax in axes.flat[len(shown):]:
        ax.axis("off")
    for ax, r in zip(axes.flat, shown, strict=False):
        cm = np.asarray(r["confusion"], dtype=float)
        norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
        ax.set_title(f"{readable(_short(r['name']))}\nbalanced {100 * r['balanced']:.1f}%",
                     fontsize=7)
        if labels is None:  # too many to read: no ticks (the report says so)
            ax.set_xticks([])
            ax.set_yticks([])
        else:
            ax.set_xticks(range(len(domains)), labels, rotation=90, fontsize=6)
            ax.set_yticks(range(len(domains)), labels, fontsize=6)
        if len(domains) <= _ANNOTATED_DOMAINS:
            for (i, j), v in np.ndenumerate(norm):
                if v >= 0.005:
                    ax.text(j, i, f"{100 * v:.0f}", ha="center", va="center", fontsize=5,
                            color="white" if v > 0.5 else "black")
    order = "" if labels is not None else \
        f"; {len(domains)} domains in the order of results.json, unlabelled"
    fig.suptitle(f"{result['setting']}: confusion (rows: gold domain, columns: routed{order})",
                 fontsize=9)
    return fig


def _cost(result: dict[str, Any], readable: _Readable) -> Any:
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    routers = result["routers"]
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    # No measurable time (a random pick on a coarse clock): log scale cannot place 0, and
    # matplotlib would clip it to an arbitrary left edge, so it goes at a stated floor.
    positive = [r["route_us"] for r in routers if r["route_us"] > 0]
    floor = min(positive) / 2 if positive else 1.0
    colors = {line: _IR3DE_COLORS[i % len(_IR3DE_COLORS)]
              for i, line in enumerate(_ir3de_lines(routers))}

    def color(r: dict[str, Any]) -> str:
        if r["family"] == "ir3de":
            return colors[(r["embedder"], r["preset"])]
        return _FAMILY_COLORS.get(r["family"], "k")

    handles: list[Artist] = []
    others = [r for r in routers if r["family"] == "ir3de" and not r.get("is_preset", True)]
    if others:  # the rest of the selector grid: small dots, one (neutral) legend entry
        ax.scatter([max(r["route_us"], floor) for r in others],
                   [100 * r["balanced"] for r in others], s=9, alpha=0.45,
                   color=[color(r) for r in others], zorder=2)
        handles.append(Line2D([], [], ls="", marker="o", ms=3, color="0.55",
                              label="IR3DE, other selectors (colour of their preset)"))
    named = [r for r in routers if r["family"] != "ir3de" or r.get("is_preset", True)]
    for i, r in enumerate(named):  # each in the legend, with its own marker
        zero = r["route_us"] <= 0
        label = readable(_short(r["name"]) if r["family"] == "ir3de" else r["name"])
        ax.scatter([max(r["route_us"], floor)], [100 * r["balanced"]], s=40, alpha=0.85,
                   marker="<" if zero else _MARKERS[i % len(_MARKERS)], color=color(r),
                   edgecolors="black", linewidths=0.4, zorder=3,
                   label=f"{label} (0 µs: drawn at the left end)" if zero else label)
    ax.set_xscale("log")
    _plain_log_ticks(ax.xaxis)
    ax.set_xlabel("routing time per prompt (µs, batch call, log scale)")
    ax.set_ylabel("balanced routing accuracy (%)")
    ax.set_title(f"{result['setting']}: accuracy vs routing cost")
    ax.grid(alpha=0.3)
    handles += ax.get_legend_handles_labels()[0]
    if handles:
        ax.legend(handles=handles, **_LEGEND)
    return fig


_DRAW: tuple[Callable[[dict[str, Any], _Readable], Any], ...] = (_accuracy_vs_k, _confusions,
                                                                 _cost)


def render_plots(*results: dict[str, Any]) -> dict[str, bytes]:
    """The three plots of each setting's result: file name (:func:`plot_names`) -> PNG
    bytes. Nothing is written: the report writes every output once all are rendered.

    Names with characters the plot font lacks are drawn with their code points (see the
    module docs), and one warning (logged, ``ir3de.eval.plots``) names them for all
    ``results``; matplotlib's own warnings about missing glyphs are silenced."""
    import matplotlib

    matplotlib.use("Agg")  # headless: never needs a display
    # Domain and router names are the user's: a "$" in one must print as itself, not start
    # mathtext (or TeX) that fails to parse after the whole run. Nothing we draw needs math:
    # the log axes get plain-number tick labels (_plain_log_ticks), not mathtext ones.
    with matplotlib.rc_context({"text.parse_math": False, "text.usetex": False,
                                "axes.formatter.use_mathtext": False}), \
            warnings.catch_warnings():
        warnings.filterwarnings("ignore", _GLYPH_WARNING, UserWarning)
        readable = _Readable()
        pngs = {name: figure_png(draw(result, readable)) for result in results
                for name, draw in zip(plot_names(result["setting"]), _DRAW, strict=True)}
    note = readable.warning()
    if note is not None:
        log.warning("ir3de: warning: %s", note)
    return pngs

"""PNG plots of evaluation results (matplotlib, headless).

* ``accuracy_vs_k_<setting>.png`` — balanced accuracy of IR3DE topk against k, one line
  per embedder and preset, ``all``/``avg`` and the baselines as horizontal lines (the
  paper's Figure 3).
* ``confusion_<setting>.png`` — row-normalised confusion matrices of the preset IR3DE
  routers and the baselines.
* ``cost_<setting>.png`` — balanced accuracy against routing time per prompt (log scale)
  for every router.

Each figure is written atomically (temporary file, then rename).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from ..store import atomic_write_bytes

__all__ = ["plot_setting"]

_FAMILY_COLORS = {"ir3de": "tab:blue", "random": "tab:gray", "knn": "tab:green",
                  "tfidf": "tab:orange", "modem": "tab:red"}


def _save(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def _short(name: str) -> str:
    return name.replace("IR3DE ", "").replace("[", "").replace("]", "")


def _accuracy_vs_k(result: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    routers = result["routers"]
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    lines = sorted({(r["embedder"], r["preset"]) for r in routers if r["family"] == "ir3de"})
    styles = ["-", "--", "-.", ":"]
    # IR3DE lines in colours no baseline family uses, so a line never reads as a baseline.
    colors = ["tab:blue", "tab:purple", "tab:brown", "tab:cyan", "tab:olive", "tab:pink"]
    for i, (emb, preset) in enumerate(lines):
        topk = sorted((r["k"], r["balanced"]) for r in routers if r["family"] == "ir3de"
                      and r["embedder"] == emb and r["preset"] == preset
                      and r["selector"] == "topk")
        ks, acc = zip(*topk, strict=True)
        line, = ax.plot(ks, 100 * np.array(acc), styles[i % 4], marker="o", ms=3,
                        color=colors[i % len(colors)], label=f"topk {emb}, {preset}")
        for r in routers:
            if r["family"] == "ir3de" and r["embedder"] == emb and r["preset"] == preset \
                    and r["selector"] == "avg":
                ax.scatter([ks[-1] * 1.6], [100 * r["balanced"]], marker="s",
                           color=line.get_color(), zorder=3)
    for r in routers:
        if r["family"] != "ir3de":
            ax.axhline(100 * r["balanced"], color=_FAMILY_COLORS.get(r["family"], "k"),
                       lw=0.9, ls=":", label=r["name"])
    ax.set_xscale("log")
    ax.set_xlabel("k (lowest-entropy tokens that vote); squares: avg selector")
    ax.set_ylabel("balanced routing accuracy (%)")
    ax.set_title(f"{result['setting']}: accuracy vs k")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right", ncol=2)
    _save(fig, path)


def _confusions(result: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    shown = [r for r in result["routers"]
             if (r["family"] == "ir3de" and r["is_preset"]) or r["family"] not in ("ir3de",)]
    domains = result["domains"]
    cols = min(4, len(shown))
    rows = -(-len(shown) // cols)
    size = 1.0 + 0.45 * len(domains)
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
        ax.set_title(f"{_short(r['name'])}\nbalanced {100 * r['balanced']:.1f}%", fontsize=7)
        ticks = range(len(domains))
        ax.set_xticks(ticks, [d[:10] for d in domains], rotation=90, fontsize=6)
        ax.set_yticks(ticks, [d[:10] for d in domains], fontsize=6)
        if len(domains) <= 9:
            for (i, j), v in np.ndenumerate(norm):
                if v >= 0.005:
                    ax.text(j, i, f"{100 * v:.0f}", ha="center", va="center", fontsize=5,
                            color="white" if v > 0.5 else "black")
    fig.suptitle(f"{result['setting']}: confusion (rows: gold domain, columns: routed)",
                 fontsize=9)
    _save(fig, path)


def _cost(result: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for family in dict.fromkeys(r["family"] for r in result["routers"]):
        pts = [r for r in result["routers"] if r["family"] == family]
        ax.scatter([r["route_us"] for r in pts], [100 * r["balanced"] for r in pts],
                   s=[30 if r.get("is_preset", True) else 10 for r in pts],
                   color=_FAMILY_COLORS.get(family, "k"), label=family, alpha=0.8)
        for r in pts:
            if r.get("is_preset", True):
                ax.annotate(_short(r["name"]), (r["route_us"], 100 * r["balanced"]),
                            fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("routing time per prompt (µs, batch call, log scale)")
    ax.set_ylabel("balanced routing accuracy (%)")
    ax.set_title(f"{result['setting']}: accuracy vs routing cost")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    _save(fig, path)


def plot_setting(result: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """Write the three plots of one setting's result; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")  # headless: never needs a display
    out = Path(out_dir)
    name = result["setting"]
    paths = [out / f"accuracy_vs_k_{name}.png", out / f"confusion_{name}.png",
             out / f"cost_{name}.png"]
    # Domain and router names are the user's: a "$" in one must print as itself, not start
    # mathtext (or TeX) that fails to parse after the whole run.
    with matplotlib.rc_context({"text.parse_math": False, "text.usetex": False}):
        for draw, path in zip((_accuracy_vs_k, _confusions, _cost), paths, strict=True):
            draw(result, path)
    return paths

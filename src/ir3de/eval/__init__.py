"""The evaluation harness: reproduce the paper's experiments against baselines.

Modules: :mod:`~ir3de.eval.settings` (which prompts are fitted and tested on),
:mod:`~ir3de.eval.metrics` (routing accuracy, normalized performance),
:mod:`~ir3de.eval.harness` (running and timing routers), :mod:`~ir3de.eval.report`
and :mod:`~ir3de.eval.plots` (report.md, results.json, PNG figures).
The command line front end is ``ir3de eval``; in Python::

    from ir3de import load_embedder
    from ir3de.baselines import TfidfLogReg
    from ir3de.eval import evaluate, load_setting, write_report
    setting = load_setting("reasoning-xdata", max_fit=500, max_test=100)
    result = evaluate(setting, embedders=[load_embedder()],
                      baselines=[("tfidf", TfidfLogReg)])
    write_report({"meta": {"command": "my_script.py"}, "settings": [result]}, "results/")

Every ``meta`` key is optional (``write_report`` lists them; ``date`` and ``machine``
default to now and this machine); the results are checked before anything is written, and
a ``report.md`` (or another output) in the folder that no evaluation wrote is refused unless
``write_report(..., force=True)``, as ``ir3de eval`` refuses it without ``--force``.

Metrics need scikit-learn and plots matplotlib: ``pip install 'ir3de[eval]'``.
"""

from .harness import K_GRID, evaluate
from .metrics import (
    RoutingMetrics,
    normalized_performance,
    read_scores,
    routing_metrics,
    validate_scores,
)
from .report import render_markdown, write_report
from .settings import (
    SETTINGS,
    Setting,
    Split,
    custom_setting,
    load_setting,
    repeat_setting,
    test_setting,
)

__all__ = [
    "K_GRID",
    "SETTINGS",
    "RoutingMetrics",
    "Setting",
    "Split",
    "custom_setting",
    "evaluate",
    "load_setting",
    "normalized_performance",
    "read_scores",
    "render_markdown",
    "repeat_setting",
    "routing_metrics",
    "test_setting",
    "validate_scores",
    "write_report",
]

"""Root pytest configuration: which docstring examples (doctests) can run here.

``pytest`` collects the examples in ``src/ir3de`` (``--doctest-modules``). An example that
needs an optional extra is collected only where that extra is installed, so the README's
test command still passes after the quick start's ``pip install -e '.[test]'`` alone.
"""

from __future__ import annotations

import importlib.util

# module file -> the module its examples need (from an extra)
_NEEDS = {"src/ir3de/eval/metrics.py": "sklearn"}

collect_ignore = [path for path, module in _NEEDS.items()
                  if importlib.util.find_spec(module) is None]

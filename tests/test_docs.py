"""The examples in the docstrings of every ir3de module, run as doctests so they stay true."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import ir3de

MODULES = sorted(m.name for m in pkgutil.walk_packages(ir3de.__path__, "ir3de."))
# module -> what its examples need beyond the core install (an optional extra)
NEEDS = {"ir3de.eval.metrics": "sklearn"}


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    if name in NEEDS:
        pytest.importorskip(NEEDS[name])
    result = doctest.testmod(importlib.import_module(name))
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {name} failed"


def test_every_module_is_checked() -> None:
    # walk_packages finds subpackages only through __init__ files: eval must be there
    assert {"ir3de.router", "ir3de.eval.metrics", "ir3de.serve"} <= set(MODULES)

"""The examples in the docstrings of every ir3de module, run as doctests so they stay true."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import ir3de

MODULES = sorted(m.name for m in pkgutil.walk_packages(ir3de.__path__, "ir3de."))
# module -> what its examples need beyond the core install (an optional extra)
NEEDS = {"ir3de.eval.metrics": "sklearn", "ir3de.baselines": "sklearn"}


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    if name in NEEDS:
        pytest.importorskip(NEEDS[name])
    result = doctest.testmod(importlib.import_module(name))
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {name} failed"


def test_every_module_is_checked() -> None:
    # walk_packages finds subpackages only through __init__ files: eval must be there
    assert {"ir3de.router", "ir3de.eval.metrics", "ir3de.serve"} <= set(MODULES)


def _run_tour(code: str, where: str, tmp_path, monkeypatch) -> int:
    """Run ``code`` statement by statement in ``tmp_path`` (it saves files); where a line's
    comment is a quoted string (``... .expert  # 'math'``), its value must be that string.
    Returns the number of values checked."""
    import ast

    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    checked = 0
    for node in ast.parse(code).body:
        source = ast.get_source_segment(code, node)
        comment = code.splitlines()[node.end_lineno - 1].partition("#")[2].strip()
        if isinstance(node, ast.Expr) and comment[:1] == "'" and comment.count("'") == 2:
            value = eval(compile(ast.Expression(node.value), where, "eval"), namespace)
            assert value == comment.strip("'"), f"{where}: {source} is {value!r}, not {comment}"
            checked += 1
        else:
            exec(compile(ast.Module([node], []), where, "exec"), namespace)
    return checked


def test_the_readme_python_api_block_runs(tmp_path, monkeypatch) -> None:
    """The README's Python API block and the package docstring's tour run as written,
    and say what they give."""
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    block = readme.split("```python\n", 1)[1].split("```", 1)[0]
    assert _run_tour(block, "README.md", tmp_path, monkeypatch) >= 1
    tour = ir3de.__doc__.split("::\n\n", 1)[1]
    assert _run_tour("\n".join(line[4:] for line in tour.splitlines()), "ir3de.__doc__",
                     tmp_path, monkeypatch) >= 1

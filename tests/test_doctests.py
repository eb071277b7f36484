"""The examples in the docstrings of the pure geometry modules run, and show what they return."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "r3dp_core.geometry.compositing",
    "r3dp_core.geometry.framing",
    "r3dp_core.geometry.segmentation",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    examples = 0
    for test in finder.find(module, name, globs=vars(module).copy()):
        examples += len(test.examples)
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert examples > 0, f"{name} has no docstring examples to run"
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples of {name} failed (above)"

"""Every docstring example in probgen runs and prints what it claims (doctest)."""

import doctest
import importlib
import pkgutil

import pytest

import probgen


def _modules():
    names = [probgen.__name__]
    for info in pkgutil.walk_packages(probgen.__path__, prefix="probgen."):
        names.append(info.name)
    return sorted(names)


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(
        module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
    )
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"

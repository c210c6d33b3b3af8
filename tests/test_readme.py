"""The README's quick start runs and reaches the exact posterior."""

import pathlib
import re

import numpy as np

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_quick_start_runs_and_is_exact(capsys):
    text = README.read_text()
    section = text.split("## Quick start", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "README quick start", "exec"), namespace)
    params = namespace["result"].params["guide"]
    # conjugate posterior of z given x = (0.8, 1.2, 0.4, 1.6): variance 1/(1 + 4) = 0.2, mean 0.2 * 4.0 = 0.8
    assert np.isclose(float(params["mu"]), 0.8, atol=1e-3)
    assert np.isclose(float(np.exp(params["log_sigma"])), np.sqrt(0.2), atol=1e-3)


def test_readme_shows_the_two_commands_first():
    text = README.read_text()
    first_block = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    assert "make demo" in first_block and "make test" in first_block


def test_readme_validation_example_raises_what_it_says():
    import pytest

    import probgen as pg

    text = README.read_text()
    quick = re.search(r"```python\n(.*?)```", text.split("## Quick start", 1)[1], re.S).group(1)
    namespace: dict = {}
    exec(compile(quick.replace("steps=2000", "steps=1"), "README quick start", "exec"), namespace)
    block = re.search(r"```python\n(.*?)```", text.split("## Bad input and validation mode", 1)[1], re.S).group(1)
    setup, call = block.strip().splitlines()
    claimed = call.split("# pg.ValidationError: ", 1)[1]
    exec(setup, namespace)
    with pytest.raises(pg.ValidationError) as error:
        exec(call, namespace)
    assert str(error.value) == claimed

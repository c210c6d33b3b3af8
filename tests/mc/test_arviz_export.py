"""pg.mc.to_arviz: draws, sampler statistics and data survive the trip into ArviZ, under
ArviZ's names, and ArviZ's own diagnostics of the export agree with pg.mc.summary."""

import sys
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import probgen as pg


@pytest.fixture
def az():
    return pytest.importorskip("arviz")


class Info(NamedTuple):  # the names of pg.mc.HamiltonianInfo
    acceptance_rate: np.ndarray
    is_divergent: np.ndarray
    energy: np.ndarray
    num_integration_steps: np.ndarray


def _groups(data):
    return set(data.children) if hasattr(data, "children") else set(data.groups())  # DataTree / InferenceData


def _draws(num_chains=3, num_draws=400):
    rng = np.random.default_rng(0)
    return {
        "mu": (1.0 + rng.normal(size=(num_chains, num_draws))).astype(np.float32),
        "v": rng.standard_t(3, size=(num_chains, num_draws, 2)).cumsum(1) * 0.05,  # correlated, float64
    }


def test_posterior_sample_stats_and_data_round_trip(az):
    draws = _draws()
    rng = np.random.default_rng(1)
    info = Info(rng.uniform(size=(3, 400)), rng.uniform(size=(3, 400)) < 0.01, rng.normal(size=(3, 400)),
                rng.integers(1, 16, size=(3, 400)).astype(np.int32))
    step_size = np.array([0.5, 0.6, 0.7])
    data = pg.mc.to_arviz(draws, {**info._asdict(), "step_size": step_size}, {"y": np.array([0.5, -1.0, 0.25])})
    assert {"posterior", "sample_stats", "observed_data"} <= _groups(data)

    posterior = data["posterior"]
    assert set(posterior.data_vars) == {"mu", "v"}
    assert posterior["mu"].dims == ("chain", "draw") and posterior["v"].dims[:2] == ("chain", "draw")
    for name, value in draws.items():
        assert posterior[name].dtype == value.dtype
        np.testing.assert_array_equal(posterior[name].values, value)

    stats = data["sample_stats"]
    assert set(stats.data_vars) == {"acceptance_rate", "diverging", "energy", "n_steps", "step_size"}
    np.testing.assert_array_equal(stats["diverging"].values, info.is_divergent)
    assert stats["diverging"].dtype == bool
    np.testing.assert_array_equal(stats["n_steps"].values, info.num_integration_steps)
    np.testing.assert_array_equal(stats["acceptance_rate"].values, info.acceptance_rate)
    np.testing.assert_array_equal(stats["energy"].values, info.energy)
    np.testing.assert_array_equal(stats["step_size"].values, np.repeat(step_size[:, None], 400, axis=1))
    np.testing.assert_array_equal(data["observed_data"]["y"].values, [0.5, -1.0, 0.25])


def test_arviz_diagnostics_of_the_export_equal_pg_summary(az):
    # In float64: ArviZ folds float32 draws in float32, whose rounding ties ranks differently.
    draws = {name: value.astype(np.float64) for name, value in _draws().items()}
    table = pg.mc.summary(draws)
    data = pg.mc.to_arviz(draws)
    theirs = az.summary(data, round_to="none")
    tail = az.ess(data, method="tail", prob=(0.05, 0.95))
    for name, label, index in [("mu", "mu", ()), ("v", "v[0]", (0,)), ("v", "v[1]", (1,))]:
        np.testing.assert_allclose(table[name]["mean"][index], theirs.loc[label, "mean"], rtol=1e-6)
        np.testing.assert_allclose(table[name]["sd"][index], theirs.loc[label, "sd"], rtol=1e-6)
        np.testing.assert_allclose(table[name]["bulk_ess"][index], theirs.loc[label, "ess_bulk"], rtol=1e-9)
        np.testing.assert_allclose(table[name]["r_hat"][index], theirs.loc[label, "r_hat"], rtol=1e-9)
        np.testing.assert_allclose(table[name]["tail_ess"][index], np.asarray(tail[name])[index], rtol=1e-9)


def test_a_run_mcmc_result_exports_with_its_infos(az):
    # NUTS on N(mean, diag(scale^2)): the export carries the draws and NUTS's statistics, and
    # ArviZ reads the same ESS / R-hat / divergence count off it as pg.mc.summary.
    mean, scale = jnp.array([1.0, -2.0]), jnp.array([0.5, 2.0])
    result = pg.mc.run_mcmc(lambda x: -0.5 * jnp.sum(((x - mean) / scale) ** 2), jax.random.key(0), 300,
                            num_warmup=300, num_chains=2, init_positions=jnp.zeros((2, 2)))
    data = pg.mc.to_arviz(result)
    np.testing.assert_array_equal(data["posterior"]["x"].values, np.asarray(result.samples))
    stats = data["sample_stats"]
    assert {"diverging", "acceptance_rate", "energy", "n_steps", "step_size"} <= set(stats.data_vars)
    np.testing.assert_array_equal(stats["step_size"].values[:, 0], np.asarray(result.step_size))
    table = pg.mc.summary(result)
    assert table.num_divergences == int(stats["diverging"].values.sum())
    theirs = az.summary(data, round_to="none")
    np.testing.assert_allclose(table["x"]["bulk_ess"], theirs["ess_bulk"].to_numpy(dtype=float), rtol=1e-9)
    # ArviZ computes R-hat of float32 draws in float32 (ours in float64): agreement to float32 rounding.
    np.testing.assert_allclose(table["x"]["r_hat"], theirs["r_hat"].to_numpy(dtype=float), rtol=1e-4)
    # Ground truth: the posterior mean, within 5 Monte Carlo standard errors sd / sqrt(ESS).
    se = np.asarray(scale) / np.sqrt(table["x"]["bulk_ess"])
    assert np.all(np.abs(table["x"]["mean"] - np.asarray(mean)) < 5 * se)


def test_nested_addresses_and_a_single_array(az):
    rng = np.random.default_rng(2)
    data = pg.mc.to_arviz({("layer", "w"): rng.normal(size=(2, 10)), "outer": {"b": rng.normal(size=(2, 10))}})
    assert set(data["posterior"].data_vars) == {"layer.w", "outer.b"}
    data = pg.mc.to_arviz(jnp.asarray(rng.normal(size=(2, 10, 3))), dims={"x": ["coef"]},
                          coords={"coef": ["a", "b", "c"]})
    assert data["posterior"]["x"].dims == ("chain", "draw", "coef")
    assert list(data["posterior"]["coef"].values) == ["a", "b", "c"]


def test_bad_input_names_the_argument(az):
    draws = {"mu": np.zeros((2, 10))}
    with pytest.raises(pg.SettingError, match="to_arviz: sample_stats entry 'diverging' must have leading shape"):
        pg.mc.to_arviz(draws, {"is_divergent": np.zeros((2, 9), bool)})
    with pytest.raises(pg.SettingError, match="to_arviz: sample_stats has both 'is_divergent'"):
        pg.mc.to_arviz(draws, {"diverging": np.zeros((2, 10)), "is_divergent": np.zeros((2, 10))})
    with pytest.raises(pg.SettingError, match="to_arviz: every posterior array needs the same"):
        pg.mc.to_arviz({"mu": np.zeros((2, 10)), "tau": np.zeros((3, 10))})
    with pytest.raises(pg.SettingError, match="to_arviz: observed_data must be a mapping"):
        pg.mc.to_arviz(draws, observed_data=np.zeros(3))
    with pytest.raises(pg.SettingError, match="to_arviz: sample_stats must be a mapping"):
        pg.mc.to_arviz(draws, sample_stats=np.zeros((2, 10)))


def test_without_arviz_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "arviz", None)  # makes `import arviz` raise ImportError
    with pytest.raises(ImportError, match=r"pip install \"probgen\[arviz\]\""):
        pg.mc.to_arviz({"mu": np.zeros((2, 10))})

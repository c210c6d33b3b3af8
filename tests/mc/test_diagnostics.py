"""MCMC diagnostics against ground truth: AR(1) chains have a known effective sample size,
R-hat must see chains that differ in location or only in scale, and the numbers are the
reference implementation's (ArviZ, the same estimators as Stan's ``posterior``)."""

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
import pytest
from numpyro import diagnostics as numpyro_diagnostics

import probgen as pg
from probgen.mc import diagnostics


def _ar1(rng, rho, num_chains, num_draws, shape=()):
    """Stationary AR(1) chains with unit marginal variance."""
    x = np.empty((num_chains, num_draws) + shape)
    x[:, 0] = rng.normal(size=(num_chains,) + shape)
    noise = rng.normal(size=(num_chains, num_draws) + shape) * np.sqrt(1 - rho**2)
    for i in range(1, num_draws):
        x[:, i] = rho * x[:, i - 1] + noise[:, i]
    return x


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.9])
def test_bulk_ess_matches_the_ar1_closed_form(rho):
    # ESS of an AR(1) chain: N (1 - rho) / (1 + rho). Over 4 x 5000 draws the estimate's
    # relative error is a few percent; 12% bounds it at every rho here.
    x = _ar1(np.random.default_rng(0), rho, 4, 5000)
    exact = x.shape[0] * x.shape[1] * (1 - rho) / (1 + rho)
    np.testing.assert_allclose(pg.mc.bulk_ess(x), exact, rtol=0.12)
    # For Gaussian draws rank normalization changes little, and NumPyro's (Stan 2.18) raw
    # ESS differs from the 2021 estimator only by its antithetic refinement: within 5%.
    np.testing.assert_allclose(pg.mc.bulk_ess(x), numpyro_diagnostics.effective_sample_size(x), rtol=0.05)


def test_tail_ess_of_independent_draws_is_near_the_draw_count():
    x = np.random.default_rng(1).standard_cauchy(size=(4, 2000))
    assert 0.75 * 8000 < float(pg.mc.tail_ess(x)) < 1.25 * 8000
    assert 0.75 * 8000 < float(pg.mc.bulk_ess(x)) < 1.25 * 8000  # heavy tails do not upset the bulk ESS


def test_rhat_sees_location_and_scale_differences():
    rng = np.random.default_rng(2)
    same = rng.normal(size=(4, 2000))
    assert float(pg.mc.rank_normalized_rhat(same)) < 1.01
    np.testing.assert_allclose(pg.mc.rank_normalized_rhat(same), numpyro_diagnostics.split_gelman_rubin(same),
                               atol=0.005)
    shifted = same + np.array([0.0, 0.0, 0.0, 1.0])[:, None]
    assert float(pg.mc.rank_normalized_rhat(shifted)) > 1.1
    # Same location, one chain four times wider: the classic statistic barely moves; the
    # folded (scale) statistic catches it.
    wider = same * np.array([1.0, 1.0, 1.0, 4.0])[:, None]
    assert float(numpyro_diagnostics.split_gelman_rubin(wider)) < 1.01
    assert float(pg.mc.rank_normalized_rhat(wider)) > 1.05


@pytest.mark.parametrize("num_draws", [1000, 1001])
def test_plain_split_rhat_is_numpyros(num_draws):
    # The split convention (an odd chain's middle draw dropped) is NumPyro's and ArviZ's:
    # the plain split R-hat under it is NumPyro's split_gelman_rubin, to rounding.
    x = _ar1(np.random.default_rng(3), 0.7, 3, num_draws, (2,)) ** 3
    np.testing.assert_allclose(numpyro_diagnostics.gelman_rubin(diagnostics._split(x)),
                               numpyro_diagnostics.split_gelman_rubin(x), rtol=1e-12)


def _arviz_cases():
    rng = np.random.default_rng(4)
    cases = []
    for rho, num_chains, num_draws in [(0.0, 4, 1000), (0.5, 4, 1001), (0.95, 2, 400), (-0.6, 3, 37),
                                       (0.3, 2, 5), (0.9, 1, 500)]:
        x = _ar1(rng, rho, num_chains, num_draws) ** 3 + 0.1 * np.arange(num_chains)[:, None]
        cases.append(pytest.param(x, id=f"rho{rho}-{num_chains}x{num_draws}"))
    cases.append(pytest.param(rng.standard_cauchy(size=(4, 300)), id="cauchy"))
    return cases


@pytest.mark.parametrize("x", _arviz_cases())
def test_rank_normalized_statistics_equal_arviz(x):
    az = pytest.importorskip("arviz")
    # The same estimators as ArviZ (and Stan's posterior package), so equal to rounding:
    # antithetic, strongly correlated, very short, odd-length and single chains, heavy tails.
    np.testing.assert_allclose(pg.mc.bulk_ess(x), az.ess(x, method="bulk"), rtol=1e-10)
    np.testing.assert_allclose(pg.mc.tail_ess(x), az.ess(x, method="tail", prob=(0.05, 0.95)), rtol=1e-10)
    np.testing.assert_allclose(diagnostics._ess(diagnostics._split(x)), az.ess(x, method="mean"), rtol=1e-10)
    if x.shape[0] > 1:  # ArviZ returns NaN for a single chain's rank R-hat
        np.testing.assert_allclose(pg.mc.rank_normalized_rhat(x), az.rhat(x, method="rank"), rtol=1e-12)
        np.testing.assert_allclose(numpyro_diagnostics.split_gelman_rubin(x), az.rhat(x, method="split"),
                                   rtol=1e-12)


def test_diagnostics_are_per_parameter_and_handle_constants():
    x = _ar1(np.random.default_rng(5), 0.5, 4, 200, (3, 2))
    per_parameter = np.array([[pg.mc.bulk_ess(x[:, :, i, j]) for j in range(2)] for i in range(3)])
    np.testing.assert_allclose(pg.mc.bulk_ess(x), per_parameter, rtol=1e-12)
    assert pg.mc.tail_ess(x).shape == pg.mc.rank_normalized_rhat(x).shape == (3, 2)
    # A constant parameter: every draw is informative (ArviZ's convention), R-hat undefined.
    assert float(pg.mc.bulk_ess(np.ones((2, 10)))) == 20.0
    assert np.isnan(pg.mc.rank_normalized_rhat(np.ones((2, 10))))


def test_summary_table():
    rng = np.random.default_rng(3)
    draws = {"mu": 2.0 + rng.normal(size=(4, 1000)), "v": rng.normal(size=(4, 1000, 3))}
    table = pg.mc.summary(draws, prob=0.8)
    pooled = draws["v"].reshape(-1, 3)
    np.testing.assert_allclose(table["v"]["mean"], pooled.mean(0))
    np.testing.assert_allclose(table["v"]["sd"], pooled.std(0, ddof=1))
    np.testing.assert_allclose(table["v"]["q10"], np.quantile(pooled, 0.1, axis=0))
    np.testing.assert_allclose(table["v"]["bulk_ess"], pg.mc.bulk_ess(draws["v"]))
    np.testing.assert_allclose(table["v"]["tail_ess"], pg.mc.tail_ess(draws["v"], prob=0.8))
    np.testing.assert_allclose(table["mu"]["r_hat"], pg.mc.rank_normalized_rhat(draws["mu"]))
    # NumPyro's summary on the same arrays: the same mean, sd and median.
    reference = numpyro_diagnostics.summary(draws, prob=0.8)
    for name in draws:
        for ours, theirs in (("mean", "mean"), ("sd", "std"), ("median", "median")):
            np.testing.assert_allclose(table[name][ours], reference[name][theirs], rtol=1e-12)
    text = str(table)
    assert repr(table) == text
    assert "q10" in text and "q90" in text and "v[2]" in text and text.count("\n") == 4
    assert table.num_divergences is None and "divergences" not in text


def test_summary_counts_divergences_and_reads_a_run_result():
    rng = np.random.default_rng(6)
    draws = rng.normal(size=(2, 50)).astype(np.float32)
    flags = np.zeros((2, 50), bool)
    flags[0, [3, 7]] = flags[1, 11] = True
    table = pg.mc.summary(jnp.asarray(draws), divergences=jnp.asarray(flags))
    assert list(table) == ["x"] and table.num_divergences == 3
    assert str(table).splitlines()[-1] == "Number of divergences: 3 (of 2 chains x 50 draws)"

    class Info(NamedTuple):
        acceptance_rate: np.ndarray
        is_divergent: np.ndarray

    class Result(NamedTuple):  # the fields of pg.mc.run_mcmc's result that summary reads
        samples: dict
        infos: Info

    result = Result({"mu": draws, ("layer", "w"): np.stack([draws, -draws], -1)}, Info(np.ones((2, 50)), flags))
    table = pg.mc.summary(result)
    assert list(table) == ["mu", "layer/w"] and table.num_divergences == 3
    np.testing.assert_allclose(table["layer/w"]["mean"], [draws.mean(dtype=np.float64), -draws.mean(dtype=np.float64)],
                               rtol=1e-6)
    nested = pg.mc.summary({"layer": {"w": draws}})
    assert list(nested) == ["layer/w"]


def test_bad_input_names_the_argument():
    with pytest.raises(pg.SettingError, match="bulk_ess: samples must have shape"):
        pg.mc.bulk_ess(np.zeros(10))
    with pytest.raises(pg.SettingError, match="summary: 'mu'"):
        pg.mc.summary({"mu": np.zeros((2, 2))})
    with pytest.raises(pg.SettingError, match="prob"):
        pg.mc.tail_ess(np.zeros((2, 10)), prob=1.5)
    with pytest.raises(pg.SettingError, match="summary: prob"):
        pg.mc.summary(np.zeros((2, 10)), prob=0.0)
    with pytest.raises(pg.SettingError, match="summary: every parameter needs the same"):
        pg.mc.summary({"a": np.zeros((2, 10)), "b": np.zeros((2, 12))})
    with pytest.raises(pg.SettingError, match=r"summary: divergences must be a boolean array of shape"):
        pg.mc.summary(np.zeros((2, 10)), divergences=np.zeros((2, 9), bool))
    with pytest.raises(pg.SettingError, match="summary: samples holds no arrays"):
        pg.mc.summary({})

"""MCMC diagnostics against ground truth: AR(1) chains have a known effective sample size,
and R-hat must see chains that differ in location or only in scale."""

import numpy as np
import pytest
from numpyro import diagnostics as numpyro_diagnostics

import probgen as pg


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
    # For Gaussian draws rank normalization changes little: numpyro's raw ESS agrees.
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


def test_summary_table():
    rng = np.random.default_rng(3)
    draws = {"mu": 2.0 + rng.normal(size=(4, 1000)), "v": rng.normal(size=(4, 1000, 3))}
    table = pg.mc.mcmc_summary(draws, prob=0.8)
    pooled = draws["v"].reshape(-1, 3)
    np.testing.assert_allclose(table["v"]["mean"], pooled.mean(0))
    np.testing.assert_allclose(table["v"]["sd"], pooled.std(0, ddof=1))
    np.testing.assert_allclose(table["v"]["q10"], np.quantile(pooled, 0.1, axis=0))
    assert table["v"]["bulk_ess"].shape == (3,)
    text = str(table)
    assert "q10" in text and "q90" in text and "v[2]" in text and text.count("\n") == 4


def test_bad_input_names_the_argument():
    with pytest.raises(pg.SettingError, match="bulk_ess: samples must have shape"):
        pg.mc.bulk_ess(np.zeros(10))
    with pytest.raises(pg.SettingError, match="mcmc_summary: 'mu'"):
        pg.mc.mcmc_summary({"mu": np.zeros((2, 2))})
    with pytest.raises(pg.SettingError, match="prob"):
        pg.mc.tail_ess(np.zeros((2, 10)), prob=1.5)

"""replay_generate: the full joint as score, the non-replayed sites' log density as weight."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats as st

import probgen as pg


@pg.gen
def model():
    z = pg.sample("z", pg.Normal(0.0, 1.0))
    pg.sample("x", pg.Normal(z, 0.5))


@pg.gen
def point(mean):
    z = pg.sample("z", pg.Normal(mean, 1.0))
    pg.sample("x", pg.Normal(z, 0.5))


def test_weight_is_the_log_density_of_the_other_sites_and_score_the_joint():
    choices = pg.ChoiceMap({"z": 0.3, "x": -0.4})
    trace, log_lik = pg.mc.replay_generate(model, choices, pg.select("z"))
    assert float(log_lik) == pytest.approx(st.norm(0.3, 0.5).logpdf(-0.4), rel=1e-5)
    joint = st.norm(0.0, 1.0).logpdf(0.3) + st.norm(0.3, 0.5).logpdf(-0.4)
    assert float(trace.score) == pytest.approx(joint, rel=1e-5)
    assert float(trace["z"]) == pytest.approx(0.3)


def test_sites_inside_a_vmap_and_gradients_through_the_replayed_values():
    zs, xs = jnp.array([0.1, -0.2, 0.5]), jnp.array([0.0, 1.0, -1.0])
    plate = pg.vmap(point)

    def log_lik(z):
        return pg.mc.replay_generate(plate, pg.ChoiceMap({"z": z, "x": xs}), pg.select("z"), jnp.zeros(3))[1]

    expected = st.norm(np.asarray(zs), 0.5).logpdf(np.asarray(xs)).sum()
    assert float(jax.jit(log_lik)(zs)) == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(jax.grad(log_lik)(zs), (xs - zs) / 0.25, rtol=1e-5)

"""Unconstrained coordinates (core/unconstrained.py): round trips and Jacobians, by hand."""

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import expit, logit

import probgen as pg
from probgen.core.unconstrained import assess_unconstrained, to_unconstrained


@pg.gen
def dependent_support():
    tau = pg.sample("tau", pg.HalfNormal(1.0))
    return pg.sample("z", pg.Uniform(0.0, tau))


def test_a_support_bounded_by_another_latent_maps_with_that_latents_constrained_value():
    # z in (0, tau): its unconstrained coordinate is logit(z / tau) with tau's own value (2.0),
    # not tau's unconstrained coordinate log 2 (which gave z = nan before).
    u = to_unconstrained(dependent_support, {"tau": 2.0, "z": 0.5}, (), pg.select("tau", "z"))
    np.testing.assert_allclose(u["tau"], np.log(2.0), rtol=1e-6)
    np.testing.assert_allclose(u["z"], logit(0.25), rtol=1e-6)
    trace = assess_unconstrained(dependent_support, u, (), pg.select("tau", "z"))
    np.testing.assert_allclose([trace["tau"], trace["z"]], [2.0, 0.5], rtol=1e-6)
    # log density of (log tau, logit(z / tau)): p(tau) p(z | tau) |d tau/du| |d z/dv|
    v = u["z"]
    expected = (jax.scipy.stats.norm.logpdf(2.0) + np.log(2.0) - np.log(2.0) + np.log(2.0)
                + np.log(2.0 * expit(v) * (1 - expit(v))))
    np.testing.assert_allclose(trace.score, expected, rtol=1e-5)


def test_posterior_unconstrain_round_trips_a_dependent_support():
    post = pg.mc.posterior(dependent_support, {})
    position = post.unconstrain({"tau": jnp.asarray(3.0), "z": jnp.asarray(1.0)})
    values = post.constrain(position)
    np.testing.assert_allclose([values["tau"], values["z"]], [3.0, 1.0], rtol=1e-6)

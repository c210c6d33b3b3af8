"""The opt-in validation mode (pg.validate): run-time checks that name the culprit (issue 13)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import probgen as pg


@pg.gen
def scaled(scale):
    return pg.sample("x", pg.Normal(0.0, scale))


@pg.gen
def categorical(probs):
    return pg.sample("k", pg.Categorical(probs=probs))


def test_negative_scale_is_named_under_validation_and_nan_without():
    log_p, _ = jax.jit(scaled.assess)({"x": 0.0}, -1.0)
    assert np.isnan(float(log_p))          # unchecked: a NaN, with no word of why
    checked = pg.validate(lambda s: scaled.assess({"x": 0.0}, s)[0])
    assert np.isclose(float(checked(2.0)), -0.5 * np.log(2 * np.pi) - np.log(2.0), atol=1e-6)
    with pytest.raises(pg.ValidationError, match=r"sample site 'x': Normal parameter 'scale' .*positive"):
        checked(-1.0)


def test_probabilities_not_summing_to_one_are_named():
    checked = pg.validate(lambda p: categorical.simulate(jax.random.key(0), p).score)
    assert np.isfinite(float(checked(jnp.asarray([0.2, 0.8]))))
    with pytest.raises(pg.ValidationError, match=r"sample site 'k': Categorical.*'probs'.*simplex"):
        checked(jnp.asarray([0.5, 0.8]))


def test_value_outside_the_support_is_named_under_vmap_and_scan():
    @pg.gen
    def positive(rate):
        return pg.sample("s", pg.dist.Exponential(rate))

    checked = pg.validate(jax.vmap(lambda v: positive.assess({"s": v}, 1.0)[0]))
    assert np.all(np.isfinite(np.asarray(checked(jnp.asarray([0.5, 1.0])))))
    with pytest.raises(pg.ValidationError, match=r"sample site 's': value .*-2.* outside the support"):
        checked(jnp.asarray([0.5, -2.0]))

    @pg.gen
    def step(carry, _):
        return pg.sample("s", pg.dist.Exponential(carry)), None

    model = pg.scan(step, length=3)
    run = pg.validate(lambda rate: model.simulate(jax.random.key(0), rate, None).score)
    with pytest.raises(pg.ValidationError, match="'s'.*Exponential parameter 'rate'"):
        run(-1.0)


def test_validation_costs_nothing_when_off():
    fn = lambda s: scaled.assess({"x": 0.0}, s)[0]  # noqa: E731
    plain = jax.make_jaxpr(fn)(1.0)
    assert "check" not in str(plain)

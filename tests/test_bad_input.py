"""The bad-input suite: each bad input raises a probgen error that names the culprit.

One row per bad input: a callable that must raise, the error class, and a pattern the
message must contain (the address, argument or shape at fault). Rows marked ``validate``
are run-time checks that only :func:`pg.validate` performs.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import probgen as pg


@pg.gen
def model(scale):
    z = pg.sample("z", pg.Normal(0.0, scale))
    pg.sample("x", pg.Normal(z, 1.0))


@pg.gen
def guide(mu):
    pg.sample("z", pg.Normal(mu, 1.0))


@pg.gen
def greedy_guide(mu):
    pg.sample("z", pg.Normal(mu, 1.0))
    pg.sample("x", pg.Normal(mu, 1.0))


@pg.gen
def left():
    return pg.sample("a", pg.Normal(0.0, 1.0))


@pg.gen
def right():
    return pg.sample("b", pg.Normal(0.0, 1.0))


@pg.gen
def twice():
    pg.sample("z", pg.Normal(0.0, 1.0))
    pg.sample("z", pg.Normal(0.0, 1.0))


@pg.gen
def step(z, _):
    z = pg.sample("z", pg.Normal(z, 1.0))
    return z, None


KEY = jax.random.key(0)
OBS = pg.ChoiceMap({"x": 1.0})


def _switch_index(index):
    return pg.validate(lambda i: pg.switch(left, right).simulate(KEY, i).score)(jnp.int32(index))


def _trace_of(gf, *args):
    return gf.simulate(KEY, *args)


ROWS = {
    # -- modeling language ----------------------------------------------------------------
    "duplicate address": (lambda: twice.simulate(KEY), pg.AddressError, "'z'"),
    "unused constraint": (lambda: model.generate(KEY, {"y": 1.0}, 1.0), pg.ConstraintError, "'y'"),
    "constraint shape": (lambda: model.generate(KEY, {"x": jnp.zeros(3)}, 1.0), pg.ConstraintError, "'x'.*shape"),
    "missing choice in assess": (lambda: model.assess({"x": 1.0}, 1.0), pg.MissingChoiceError, "'z'"),
    "non-array argument": (lambda: model.simulate(KEY, "wide"), pg.ArgumentError, "argument 0"),
    "scan constraint length": (lambda: pg.scan(step, length=4).generate(KEY, {"z": jnp.zeros(3)}, 0.0, None),
                               pg.ConstraintError, "'z'.*size 4"),
    "mix logits vs components": (lambda: pg.mix(left, right).simulate(KEY, jnp.zeros(3)),
                                 pg.ConstraintError, "2 components"),
    "switch index not an integer": (lambda: pg.switch(left, right).simulate(KEY, 0.5), pg.ConstraintError,
                                    "integer"),
    "switch index out of range": (lambda: _switch_index(5), pg.ValidationError, "index 5 is out of range"),
    "switch index negative": (lambda: _switch_index(-1), pg.ValidationError, "index -1 is out of range"),
    "update with another GF's trace": (lambda: right.update(KEY, _trace_of(left), {}), pg.ArgumentError,
                                       "trace of 'left'"),
    "repeat count": (lambda: pg.repeat(left, 0), pg.SettingError, "num_repeats"),
    "negative scale": (lambda: pg.validate(lambda s: model.assess({"z": 0.0, "x": 1.0}, s)[0])(-1.0),
                       pg.ValidationError, "'z'.*'scale'"),
    "probabilities off the simplex": (
        lambda: pg.validate(lambda p: pg.gen(lambda: pg.sample("k", pg.Categorical(probs=p))).simulate(KEY).score)(
            jnp.asarray([0.4, 0.4])), pg.ValidationError, "'k'.*'probs'"),
    "value outside the support": (
        lambda: pg.validate(lambda v: pg.gen(lambda: pg.sample("s", pg.dist.Exponential(1.0))).assess({"s": v})[0])(
            -1.0), pg.ValidationError, "'s'.*support"),
    # -- variational inference ----------------------------------------------------------------
    "guide proposes an observation": (lambda: pg.vi.elbo(model, greedy_guide).loss(KEY, OBS, (1.0,), (0.0,)),
                                      pg.vi.EstimatorError, "'x'"),
    "num_particles zero": (lambda: pg.vi.iwae(model, guide, 0), pg.SettingError, "num_particles"),
    "num_particles float": (lambda: pg.vi.iwae(model, guide, 2.5), pg.SettingError, "num_particles"),
    "vimco with one particle": (lambda: pg.vi.vimco(model, guide, 1), pg.SettingError, "num_particles"),
    "renyi alpha = 1": (lambda: pg.vi.renyi(model, guide, 1.0, 4), pg.SettingError, "alpha"),
    "ENUM under jax.vmap": (
        lambda: pg.vi.expectation(lambda k: jnp.sum(jax.vmap(
            lambda kk: pg.gen(lambda: pg.sample("b", pg.Bernoulli(probs=0.3), strategy=pg.ENUM)).simulate(kk).retval
        )(jax.random.split(k, 3)))).estimate(KEY), pg.StrategyError, "'b'"),
    # -- Monte Carlo ------------------------------------------------------------------------------
    "hmc leapfrog steps": (lambda: pg.mc.hmc(pg.select("z"), 0.1, 0), pg.SettingError, "num_leapfrog_steps"),
    "kernel num_steps": (lambda: pg.run(pg.mc.mh(pg.select("z")), KEY, _trace_of(model, 1.0), 0),
                         pg.SettingError, "num_steps"),
}


@pytest.mark.parametrize("name", sorted(ROWS))
def test_bad_input_raises_a_clear_error(name):
    fn, error, pattern = ROWS[name]
    with pytest.raises(error, match=pattern):
        fn()
    assert issubclass(error, pg.ProbgenError)


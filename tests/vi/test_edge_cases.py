"""Regression tests for silent wrong answers at the edges of pg.vi (issue 13)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.scipy.stats import norm

import probgen as pg

X = 1.0
OBS = pg.ChoiceMap({"x": X})


@pg.gen
def model():
    z = pg.sample("z", pg.Normal(0.0, 1.0))
    pg.sample("x", pg.Normal(z, 1.0))


@pg.gen
def path_guide(params):
    pg.sample("z", pg.Normal(params["mu"], jnp.exp(params["log_sigma"])), strategy=pg.PATH)


@pg.gen
def reparam_guide(params):
    pg.sample("z", pg.Normal(params["mu"], jnp.exp(params["log_sigma"])))


PARAMS = {"mu": 0.2, "log_sigma": math.log(0.9)}


# -- 1. PATH sites keep the gradient of given values --------------------------------------

def test_path_site_given_value_keeps_parameter_gradient():
    def log_q(params, z):
        return path_guide.assess({"z": z}, params)[0]

    grad = jax.grad(log_q)(PARAMS, 0.7)
    sigma = 0.9
    assert np.isclose(float(grad["mu"]), (0.7 - 0.2) / sigma**2, rtol=1e-5)
    assert np.isclose(float(grad["log_sigma"]), (0.7 - 0.2) ** 2 / sigma**2 - 1.0, rtol=1e-5)
    # generate and update of a PATH site at a given value: the same gradient.
    grad_generate = jax.grad(lambda p: path_guide.generate(jax.random.key(0), {"z": 0.7}, p)[1])(PARAMS)
    assert np.isclose(float(grad_generate["mu"]), float(grad["mu"]), rtol=1e-5)


def test_rws_trains_a_path_guide_like_a_reparam_guide():
    """Wake-q with a PATH guide equals wake-q with a REPARAM guide (same key, same particles)."""
    key = jax.random.key(3)
    g_path = jax.grad(pg.vi.rws(model, path_guide, 8).loss, argnums=3)(key, OBS, (), (PARAMS,))[0]
    g_reparam = jax.grad(pg.vi.rws(model, reparam_guide, 8).loss, argnums=3)(key, OBS, (), (PARAMS,))[0]
    assert abs(float(g_path["mu"])) > 1e-3
    np.testing.assert_allclose(float(g_path["mu"]), float(g_reparam["mu"]), rtol=1e-5)
    np.testing.assert_allclose(float(g_path["log_sigma"]), float(g_reparam["log_sigma"]), rtol=1e-5)


def test_readme_guide_trains_under_rws():
    objective = pg.vi.rws(model, path_guide, 16)

    def loss(params, key, batch):
        return objective.loss(key, OBS, (), (params,))

    result = pg.fit(loss, {"mu": 0.0, "log_sigma": 0.0}, optax.adam(optax.cosine_decay_schedule(0.05, 2000)),
                    jax.random.key(0), steps=2000, progress=False)
    # exact posterior N(0.5, 0.5): mean 0.5, sd 0.707 (RWS fits the posterior by wake-q).
    assert abs(float(result.params["mu"]) - 0.5) < 0.05
    assert abs(float(jnp.exp(result.params["log_sigma"])) - math.sqrt(0.5)) < 0.05


@pytest.mark.parametrize("make", [
    lambda m, g: pg.vi.iwae(m, g, 4), lambda m, g: pg.vi.vimco(m, g, 4),
    lambda m, g: pg.vi.renyi(m, g, 0.5, 4), lambda m, g: pg.vi.cubo(m, g, 4),
])
def test_path_in_multi_sample_bounds_warns_of_bias(make):
    objective = make(model, path_guide)
    with pytest.warns(pg.vi.PathBiasWarning, match="'z'"):
        jax.grad(objective.loss, argnums=3)(jax.random.key(0), OBS, (), (PARAMS,))


def test_stl_iwae_gradient_is_biased_where_reparam_is_not():
    """The documented bias is real: at K=2 the PATH (STL) IWAE gradient differs from the exact one."""
    keys = jax.random.split(jax.random.key(1), 20000)

    def grads(guide):
        objective = pg.vi.iwae(model, guide, 2)
        g = jax.vmap(lambda k: jax.grad(objective.loss, argnums=3)(k, OBS, (), (PARAMS,))[0]["log_sigma"])(keys)
        return np.asarray(g, np.float64)

    with pytest.warns(pg.vi.PathBiasWarning):
        stl = grads(path_guide)
    rep = grads(reparam_guide)
    se = math.sqrt(stl.var() / stl.size + rep.var() / rep.size)
    assert abs(stl.mean() - rep.mean()) > 4 * se


# -- 4. ENUM / MVD under the program's own jax.vmap or lax.scan -----------------------------

@pg.gen
def coin(p):
    return pg.sample("b", pg.Bernoulli(probs=p), strategy=pg.ENUM)


@pytest.mark.parametrize("strategy", [pg.ENUM, pg.MVD])
def test_enum_and_mvd_under_jax_vmap_are_refused(strategy):
    @pg.gen
    def flip(p):
        return pg.sample("b", pg.Bernoulli(probs=p), strategy=strategy)

    def program(key, p):
        values = jax.vmap(lambda k: flip.simulate(k, p).retval)(jax.random.split(key, 3))
        return jnp.prod(values)

    with pytest.raises(pg.StrategyError, match="'b'.*JAX transformation"):
        pg.vi.expectation(program).estimate(jax.random.key(0), 0.3)


def test_enum_under_lax_scan_is_refused_clearly():
    def program(key, p):
        def body(total, k):
            return total + coin.simulate(k, p).retval, None

        total, _ = jax.lax.scan(body, 0.0, jax.random.split(key, 3))
        return total

    with pytest.raises(pg.StrategyError, match="'b'"):
        pg.vi.expectation(program).estimate(jax.random.key(0), 0.3)


def test_enum_product_of_three_coins_written_as_sites_is_exact():
    @pg.gen
    def three(p):
        return [pg.sample(f"b{i}", pg.Bernoulli(probs=p), strategy=pg.ENUM) for i in range(3)]

    def program(key, p):
        b = three.simulate(key, p).retval
        return b[0] * b[1] * b[2]

    value, grad = jax.value_and_grad(pg.vi.expectation(program).estimate, argnums=1)(jax.random.key(0), 0.3)
    assert np.isclose(float(value), 0.027, atol=1e-6)
    assert np.isclose(float(grad), 3 * 0.3**2, atol=1e-5)


# -- 7. a guide that proposes an observed address --------------------------------------------

@pg.gen
def greedy_guide(params):
    pg.sample("z", pg.Normal(params["mu"], 1.0))
    pg.sample("x", pg.Normal(0.0, 1.0))


@pytest.mark.parametrize("make", [
    lambda: pg.vi.elbo(model, greedy_guide), lambda: pg.vi.iwae(model, greedy_guide, 2),
    lambda: pg.vi.rws(model, greedy_guide, 2),
])
def test_guide_proposing_an_observed_address_is_an_error(make):
    with pytest.raises(pg.vi.EstimatorError, match="observed address.*'x'"):
        make().loss(jax.random.key(0), OBS, (), ({"mu": 0.0},))


# -- 8. NaN, underflow -----------------------------------------------------------------------

@pg.gen
def bounded_model():
    z = pg.sample("z", pg.Uniform(0.0, 1.0))
    pg.sample("x", pg.Normal(z, 0.3))


@pg.gen
def wide_guide(mu):
    pg.sample("z", pg.Normal(mu, 0.5))


def test_vimco_is_finite_when_some_particles_have_zero_weight():
    objective = pg.vi.vimco(bounded_model, wide_guide, 6)
    keys = jax.random.split(jax.random.key(0), 400)
    obs = pg.ChoiceMap({"x": 0.6})

    def one(k):
        log_w = jax.vmap(lambda kk: pg.vi.log_weight(bounded_model, wide_guide, kk, obs, (), (0.5,))[0])(
            jax.random.split(k, 6))
        value, grad = jax.value_and_grad(objective.loss, argnums=3)(k, obs, (), (0.5,))
        return log_w, value, grad[0]

    log_w, values, grads = jax.jit(jax.vmap(one))(keys)
    some_dead = np.any(np.isinf(np.asarray(log_w)), axis=1) & np.any(np.isfinite(np.asarray(log_w)), axis=1)
    assert some_dead.sum() > 100          # the case the fix is about occurs often here
    iwae = jax.vmap(lambda k: pg.vi.iwae(bounded_model, wide_guide, 6).loss(k, obs, (), (0.5,)))(keys)
    np.testing.assert_allclose(np.asarray(values), np.asarray(iwae), rtol=1e-5, atol=1e-5)
    assert np.all(np.isfinite(np.asarray(grads)[some_dead]))


@pytest.mark.parametrize("strategy", [pg.ENUM, pg.MVD])
def test_enum_and_mvd_with_a_zero_probability_outcome_are_not_nan(strategy):
    @pg.gen
    def guide(theta):
        pg.sample("b", pg.Categorical(probs=jnp.stack([theta, 1.0 - theta, 0.0])), strategy=strategy)

    @pg.gen
    def cmodel():
        pg.sample("b", pg.Categorical(probs=jnp.asarray([0.3, 0.7, 0.0])))

    def program(key, theta):
        tr = guide.simulate(key, theta)
        return cmodel.assess(tr.choices)[0] - tr.score

    estimate = jax.jit(jax.vmap(jax.value_and_grad(pg.vi.expectation(program).estimate, argnums=1),
                                in_axes=(0, None)))
    values, grads = (np.asarray(a, np.float64) for a in estimate(jax.random.split(jax.random.key(0), 4000), 0.4))

    def neg_kl(t):  # exact: -KL(q || p) over the two possible outcomes
        return t * jnp.log(0.3 / t) + (1 - t) * jnp.log(0.7 / (1 - t))

    assert np.all(np.isfinite(values)) and np.all(np.isfinite(grads))
    exact_grad = float(jax.grad(neg_kl)(0.4))
    if strategy is pg.ENUM:      # exact: no Monte Carlo error
        assert np.allclose(values, float(neg_kl(0.4)), atol=1e-5)
        assert np.allclose(grads, exact_grad, atol=1e-4)
    else:                        # unbiased: within 4 standard errors
        for sample, truth in ((values, float(neg_kl(0.4))), (grads, exact_grad)):
            assert abs(sample.mean() - truth) < 4 * sample.std() / np.sqrt(sample.size) + 1e-6


@pg.gen
def far_model():
    z = pg.sample("z", pg.Normal(0.0, 1.0))
    pg.sample("x", pg.Normal(z, 1.0))


def test_cubo_does_not_underflow_far_from_the_data():
    obs = pg.ChoiceMap({"x": 20.0})                 # log p(x) ≈ -101.3: (p/q)^2 underflows in float32
    objective = pg.vi.cubo(far_model, reparam_guide, 4)
    key = jax.random.key(0)
    value, grad = jax.value_and_grad(objective.loss, argnums=3)(key, obs, (), (PARAMS,))
    def by_hand(params):
        log_w = jax.vmap(lambda k: pg.vi.log_weight(far_model, reparam_guide, k, obs, (), (params,))[0])(
            pg.particle_keys(key, 4))
        return (jax.nn.logsumexp(2.0 * log_w) - math.log(4)) / 2.0, log_w

    (expected, log_w), expected_grad = jax.value_and_grad(by_hand, has_aux=True)(PARAMS)
    assert float(jnp.max(2.0 * log_w)) < -104.0      # exp(2 log w) is 0 in float32
    assert np.isfinite(float(value)) and np.isclose(float(value), float(expected), rtol=1e-5)
    # A finite, nonzero gradient: the self-normalized one, sum_k wbar_k d log w_k.
    assert abs(float(grad[0]["mu"])) > 1.0
    np.testing.assert_allclose(float(grad[0]["mu"]), float(expected_grad["mu"]), rtol=1e-4)


# -- 9. float64 -------------------------------------------------------------------------------

def test_objectives_keep_float64():
    with jax.enable_x64(True):
        params = {"mu": jnp.float64(0.2), "log_sigma": jnp.float64(-0.1)}
        obs = pg.ChoiceMap({"x": jnp.float64(1.0)})
        for objective in (pg.vi.elbo(model, reparam_guide), pg.vi.iwae(model, reparam_guide, 3),
                          pg.vi.vimco(model, reparam_guide, 3), pg.vi.cubo(model, reparam_guide, 3)):
            value, grad = jax.value_and_grad(objective.loss, argnums=3)(jax.random.key(0), obs, (), (params,))
            assert value.dtype == jnp.float64
            assert grad[0]["mu"].dtype == jnp.float64
        # ELBO of the exact posterior is log p(x) exactly, to float64 precision.
        exact = {"mu": jnp.float64(0.5), "log_sigma": jnp.float64(0.5 * math.log(0.5))}
        value = pg.vi.elbo(model, reparam_guide).estimate(jax.random.key(1), obs, (), (exact,))
        assert abs(float(value) - float(norm.logpdf(1.0, 0.0, math.sqrt(2.0)))) < 1e-12


# -- 17. integer scalars -------------------------------------------------------------------------

def test_numpy_integer_particle_counts_are_accepted():
    value = pg.vi.iwae(model, reparam_guide, np.int64(10)).estimate(jax.random.key(0), OBS, (), (PARAMS,))
    assert np.isfinite(float(value))
    for bad in (0, -1, 2.5, True, jnp.asarray(3)):
        with pytest.raises(pg.SettingError, match="num_particles"):
            pg.vi.iwae(model, reparam_guide, bad)

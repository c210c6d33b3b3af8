"""Objectives vs closed forms on a conjugate Gaussian model and exact discrete examples."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.scipy.stats import norm

import probgen as pg

X = 1.0
OBS = {"x": X}
LOG_EVIDENCE = float(norm.logpdf(X, 0.0, math.sqrt(2.0)))
NUM = 2000


@pg.gen
def model():
    z = pg.sample("z", pg.Normal(0.0, 1.0))
    pg.sample("x", pg.Normal(z, 1.0))


@pg.gen
def guide(m, log_s):
    pg.sample("z", pg.Normal(m, jnp.exp(log_s)))


def closed_elbo(m, log_s, beta=1.0):
    s2 = jnp.exp(2 * log_s)
    log_lik = -0.5 * jnp.log(2 * jnp.pi) - 0.5 * ((X - m) ** 2 + s2)
    neg_kl = -0.5 * jnp.log(2 * jnp.pi) - 0.5 * (m**2 + s2) + 0.5 * jnp.log(2 * jnp.pi * jnp.e * s2)
    return log_lik + beta * neg_kl


def _samples(fn, num=NUM, seed=0):
    return np.asarray(jax.jit(jax.vmap(fn))(jax.random.split(jax.random.key(seed), num)))


def _within(samples, target, axis=0):
    mean = samples.mean(axis)
    se = samples.std(axis) / np.sqrt(samples.shape[axis])
    assert np.all(np.abs(mean - target) <= 4 * se + 1e-5), (mean, target, se)


GUIDE = (0.2, jnp.log(0.9))


@pytest.mark.parametrize("beta", [1.0, 0.5])
def test_elbo_value_and_gradient_match_closed_form(beta):
    obj = pg.vi.elbo(model, guide, beta=beta)
    values = _samples(lambda k: obj.estimate(k, OBS, (), GUIDE))
    _within(values, float(closed_elbo(*GUIDE, beta)))
    grads = _samples(lambda k: jnp.stack(jax.grad(obj.loss, argnums=3)(k, OBS, (), GUIDE)))
    exact = -np.asarray(jax.grad(lambda m, s: closed_elbo(m, s, beta), argnums=(0, 1))(*GUIDE))
    _within(grads, exact)


def test_iwae_increases_with_particles_toward_log_evidence():
    means, ses = [], []
    for num_particles in (1, 8, 64):
        obj = pg.vi.iwae(model, guide, num_particles)
        values = _samples(lambda k: obj.estimate(k, OBS, (), (0.0, 0.0)), num=1000)
        means.append(values.mean())
        ses.append(values.std() / np.sqrt(values.size))
    assert abs(means[0] - float(closed_elbo(0.0, 0.0))) < 4 * ses[0]
    for a, b, sa, sb in zip(means, means[1:], ses, ses[1:]):
        assert b > a - 4 * np.hypot(sa, sb)
    assert means[-1] < LOG_EVIDENCE + 4 * ses[-1]
    assert LOG_EVIDENCE - means[-1] < 0.1 * (LOG_EVIDENCE - means[0])


def _fit(objective, init, steps=400, learning_rate=0.05, seed=0, batch=16):
    optimizer = optax.adam(optax.cosine_decay_schedule(learning_rate, steps))

    def batch_loss(params, key):
        keys = jax.random.split(key, batch)
        return jnp.mean(jax.vmap(objective.loss, in_axes=(0, None, None, None))(keys, OBS, (), params))

    def step(carry, key):
        params, state = carry
        grads = jax.grad(batch_loss)(params, key)
        updates, state = optimizer.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), None

    (params, _), _ = jax.jit(lambda p, keys: jax.lax.scan(step, (p, optimizer.init(p)), keys))(
        init, jax.random.split(jax.random.key(seed), steps))
    return params


def test_mean_field_fit_recovers_exact_posterior():
    m, log_s = _fit(pg.vi.elbo(model, guide), (jnp.asarray(-1.0), jnp.asarray(0.5)), steps=400, learning_rate=0.05)
    assert abs(float(m) - 0.5) < 0.05
    assert abs(float(jnp.exp(log_s)) - math.sqrt(0.5)) < 0.05


EXACT = (X / 2, jnp.log(math.sqrt(0.5)))


def test_renyi_and_cubo_are_tight_at_the_exact_posterior():
    for obj in (pg.vi.renyi(model, guide, 0.5, 4), pg.vi.cubo(model, guide, 4), pg.vi.iwae(model, guide, 2)):
        value = float(jax.jit(obj.estimate)(jax.random.key(0), OBS, (), EXACT))
        assert abs(value - LOG_EVIDENCE) < 1e-4


def test_renyi_lies_between_elbo_and_log_evidence():
    values = _samples(lambda k: pg.vi.renyi(model, guide, 0.5, 8).estimate(k, OBS, (), GUIDE))
    se = values.std() / np.sqrt(values.size)
    assert float(closed_elbo(*GUIDE)) < values.mean() < LOG_EVIDENCE + 4 * se


def test_cubo_loss_is_unbiased_for_exponentiated_bound():
    grid = np.linspace(-12, 12, 20001)
    m, log_s = GUIDE
    log_q = norm.logpdf(grid, m, np.exp(log_s))
    log_p = norm.logpdf(grid, 0, 1) + norm.logpdf(X, grid, 1)
    exact = np.trapezoid(np.exp(2 * log_p - log_q), grid)
    # The loss is (1/n) log of the K-sample average of w^n: exp(n * loss) is that average,
    # an unbiased estimate of E[w^n].
    losses = _samples(lambda k: pg.vi.cubo(model, guide, 4).loss(k, OBS, (), GUIDE))
    _within(np.exp(2.0 * losses.astype(np.float64)), exact)
    assert 0.5 * np.log(exact) > LOG_EVIDENCE


# discrete model: b ~ Bernoulli(0.3), x ~ N(2b, 1); guide b ~ Bernoulli(sigmoid(theta)) with REINFORCE


@pg.gen
def coin_model():
    b = pg.sample("b", pg.Bernoulli(probs=0.3))
    pg.sample("x", pg.Normal(2.0 * b, 1.0))


@pg.gen
def coin_guide(theta):
    pg.sample("b", pg.Bernoulli(logits=theta))


def _coin_log_w(b, theta):
    log_p = jnp.where(b == 1, jnp.log(0.3), jnp.log(0.7)) + norm.logpdf(X, 2.0 * b, 1.0)
    log_q = jnp.where(b == 1, jax.nn.log_sigmoid(theta), jax.nn.log_sigmoid(-theta))
    return log_p - log_q


def _exact_iwae(theta, num_particles):
    total = 0.0
    for combo in itertools.product((0, 1), repeat=num_particles):
        bs = jnp.array(combo)
        prob = jnp.prod(jnp.where(bs == 1, jax.nn.sigmoid(theta), jax.nn.sigmoid(-theta)))
        total = total + prob * (jax.nn.logsumexp(_coin_log_w(bs, theta)) - jnp.log(num_particles))
    return total


@pytest.mark.parametrize("name", ["iwae", "vimco"])
def test_score_function_iwae_gradients_are_unbiased(name):
    num_particles, theta = 3, 0.4
    obj = getattr(pg.vi, name)(coin_model, coin_guide, num_particles)
    exact = -jax.grad(_exact_iwae)(theta, num_particles)
    def value_and_grad(key):
        value, (grad,) = jax.value_and_grad(obj.loss, argnums=3)(key, OBS, (), (theta,))
        return jnp.stack([value, grad])

    loss, grads = _samples(value_and_grad, num=4000).T
    _within(grads, float(exact))
    _within(-loss, float(_exact_iwae(theta, num_particles)))


def test_vimco_has_lower_variance_than_plain_score_function():
    def spread(obj):
        return _samples(lambda k: jax.grad(obj.loss, argnums=3)(k, OBS, (), (0.4,))[0], num=2000).std()

    assert spread(pg.vi.vimco(coin_model, coin_guide, 8)) < 0.7 * spread(pg.vi.iwae(coin_model, coin_guide, 8))


def _coin_posterior():
    joint = np.array([0.7 * norm.pdf(X, 0.0, 1.0), 0.3 * norm.pdf(X, 2.0, 1.0)])
    return joint[1] / joint.sum()


@pytest.mark.parametrize("name", ["rws", "forward_chi2"])
def test_self_normalized_objectives_fit_the_posterior(name):
    obj = getattr(pg.vi, name)(coin_model, coin_guide, 16)
    optimizer = optax.adam(0.05)

    def step(carry, key):
        params, state = carry
        grads = jax.grad(obj.loss, argnums=3)(key, OBS, (), params)
        updates, state = optimizer.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), None

    init = (jnp.asarray(-2.0),)
    (params, _), _ = jax.jit(lambda keys: jax.lax.scan(step, (init, optimizer.init(init)), keys))(
        jax.random.split(jax.random.key(7), 400))
    assert abs(float(jax.nn.sigmoid(params[0])) - _coin_posterior()) < 0.05


# hierarchical guide: a ~ N(0, 1) auxiliary, z ~ N(m + c a, s): marginal q(z) = N(m, sqrt(c^2 + s^2))


@pg.gen
def hier_guide(m, c, s):
    a = pg.sample("a", pg.Normal(0.0, 1.0))
    pg.sample("z", pg.Normal(m + c * a, s))


@pg.gen
def reverse(kept, m, c, s):
    pg.sample("a", pg.Normal(0.5 * (kept["z"] - m), 0.9))


HIER = (0.2, 0.6, 0.5)


def test_hvi_family_bounds_are_ordered():
    m, c, s = HIER
    marginal_elbo = float(closed_elbo(m, jnp.log(jnp.sqrt(c**2 + s**2))))

    def mean_se(obj, num=1000):
        values = _samples(lambda k: obj.estimate(k, OBS, (), HIER), num=num)
        return values.mean(), values.std() / np.sqrt(values.size)

    hvi, hvi_se = mean_se(pg.vi.hvi(model, hier_guide, "z", reverse))
    iw, iw_se = mean_se(pg.vi.iwhvi(model, hier_guide, "z", reverse, 16))
    diw, diw_se = mean_se(pg.vi.diwhvi(model, hier_guide, "z", reverse, 8, 16), num=200)
    assert hvi < iw + 4 * np.hypot(hvi_se, iw_se)
    assert iw < marginal_elbo + 4 * iw_se
    assert marginal_elbo - iw < 0.5 * (marginal_elbo - hvi)
    assert iw < diw < LOG_EVIDENCE + 4 * diw_se
    grads = jax.grad(pg.vi.iwhvi(model, hier_guide, "z", reverse, 4).loss, argnums=3)(jax.random.key(0), OBS, (), HIER)
    assert all(np.isfinite(float(g)) for g in grads)


def test_user_objective_in_a_notebook_cell():
    """A new objective (the χ²-style E[w] evidence estimate) from public pieces only."""

    def evidence(key, observations, model_args, guide_args):
        log_w, _ = pg.vi.log_weight(model, guide, key, observations, model_args, guide_args)
        return jnp.exp(log_w)

    est = pg.vi.expectation(evidence)
    values = _samples(lambda k: est.estimate(k, OBS, (), GUIDE))
    _within(values, math.exp(LOG_EVIDENCE))


def test_guide_missing_a_latent_is_a_clear_error():
    @pg.gen
    def empty_guide():
        return None

    with pytest.raises(pg.vi.EstimatorError, match="'z'"):
        pg.vi.elbo(model, empty_guide).loss(jax.random.key(0), OBS, (), ())


@pytest.mark.parametrize("beta", [1.0, 0.5])
def test_multi_particle_elbo_is_unbiased_with_smaller_variance(beta):
    single = pg.vi.elbo(model, guide, beta=beta)
    multi = pg.vi.elbo(model, guide, beta=beta, num_particles=8)
    values = _samples(lambda k: multi.estimate(k, OBS, (), GUIDE))
    _within(values, float(closed_elbo(*GUIDE, beta)))
    grads = _samples(lambda k: jnp.stack(jax.grad(multi.loss, argnums=3)(k, OBS, (), GUIDE)))
    exact = -np.asarray(jax.grad(lambda m, s: closed_elbo(m, s, beta), argnums=(0, 1))(*GUIDE))
    _within(grads, exact)
    single_values = _samples(lambda k: single.estimate(k, OBS, (), GUIDE), seed=1)
    ratio = single_values.var() / values.var()
    assert 8 / 1.5 < ratio < 8 * 1.5, ratio  # variance / K, up to sampling error of variances


def test_multi_particle_elbo_score_function_gradient_is_unbiased():
    theta = 0.4
    obj = pg.vi.elbo(coin_model, coin_guide, num_particles=4)
    grads = _samples(lambda k: jax.grad(obj.loss, argnums=3)(k, OBS, (), (theta,))[0], num=4000)
    _within(grads, -float(jax.grad(_exact_iwae)(theta, 1)))  # IWAE with K = 1 is the ELBO


def test_elbo_rejects_bad_particle_count():
    with pytest.raises(ValueError, match="num_particles"):
        pg.vi.elbo(model, guide, num_particles=0)


# the direct form: objective(params, key, batch), params {"model", "guide"}, batch obs or (obs, *args)


@pg.gen
def shifted_model(mu0, shift):
    z = pg.sample("z", pg.Normal(mu0 + shift, 1.0))
    pg.sample("x", pg.Normal(z, 1.0))


@pg.gen
def shifted_guide(m, shift):
    pg.sample("z", pg.Normal(m + shift, 1.0))


@pg.gen
def shifted_hier_guide(m, shift):
    a = pg.sample("a", pg.Normal(0.0, 1.0))
    pg.sample("z", pg.Normal(m + shift + 0.5 * a, 0.5))


@pg.gen
def shifted_reverse(kept, m, shift):
    pg.sample("a", pg.Normal(kept["z"] - m - shift, 1.0))


DIRECT = {
    "elbo": lambda: pg.vi.elbo(shifted_model, shifted_guide, beta=0.5, num_particles=2),
    "iwae": lambda: pg.vi.iwae(shifted_model, shifted_guide, 3),
    "vimco": lambda: pg.vi.vimco(shifted_model, shifted_guide, 3),
    "hvi": lambda: pg.vi.hvi(shifted_model, shifted_hier_guide, "z", shifted_reverse),
    "iwhvi": lambda: pg.vi.iwhvi(shifted_model, shifted_hier_guide, "z", shifted_reverse, 3),
    "diwhvi": lambda: pg.vi.diwhvi(shifted_model, shifted_hier_guide, "z", shifted_reverse, 2, 3),
    "rws": lambda: pg.vi.rws(shifted_model, shifted_guide, 3),
    "cubo": lambda: pg.vi.cubo(shifted_model, shifted_guide, 3),
    "renyi": lambda: pg.vi.renyi(shifted_model, shifted_guide, 0.5, 3),
    "forward_chi2": lambda: pg.vi.forward_chi2(shifted_model, shifted_guide, 3),
}


@pytest.mark.parametrize("name", list(DIRECT))
def test_direct_form_is_the_rich_loss_under_the_one_rule(name):
    objective = DIRECT[name]()
    key, params = jax.random.key(0), {"model": 0.3, "guide": 0.1}
    value, grads = jax.value_and_grad(objective)(params, key, (pg.ChoiceMap(OBS), 0.5))
    rich_value, (model_grads, guide_grads) = jax.value_and_grad(objective.loss, argnums=(2, 3))(
        key, OBS, (0.3, 0.5), (0.1, 0.5))
    assert float(value) == float(rich_value)
    assert float(grads["model"]) == float(model_grads[0]) and float(grads["guide"]) == float(guide_grads[0])
    # Entries are optional: without "model" the model gets the batch's args only.
    observations, model_args, guide_args = objective.arguments({"guide": 0.1}, (OBS, 0.5))
    assert (observations, model_args, guide_args) == (OBS, (0.5,), (0.1, 0.5))


@pg.gen
def prior_guide():
    pg.sample("z", pg.Normal(0.0, 1.0))


def test_direct_form_with_observations_only_and_no_params():
    objective = pg.vi.elbo(model, prior_guide)  # no parameters anywhere
    value = objective(None, jax.random.key(1), {"x": X})
    assert float(value) == float(objective.loss(jax.random.key(1), {"x": X}, (), ()))


def test_direct_form_errors_name_the_argument():
    objective = pg.vi.elbo(shifted_model, shifted_guide)
    key = jax.random.key(0)
    with pytest.raises(pg.SettingError, match="params has the entry 'decoder'"):
        objective({"guide": 0.1, "decoder": 1.0}, key, (OBS, 0.5))
    with pytest.raises(pg.SettingError, match="params must be a mapping"):
        objective((0.1,), key, OBS)
    with pytest.raises(pg.SettingError, match="batch is an empty tuple"):
        objective({"guide": 0.1}, key, ())

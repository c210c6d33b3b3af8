"""Each MCMC move leaves a conjugate posterior invariant (long-run moments match exactly)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import probgen as pg

SIGMA_X = 0.5
X_OBS = jnp.array([1.0, -0.6])
POST_VAR = 1.0 / (1.0 + 1.0 / SIGMA_X**2)           # 0.2
POST_MEAN = np.asarray(POST_VAR * X_OBS / SIGMA_X**2)  # 0.8 x


@pg.gen
def normal_normal():
    z = pg.sample("z", pg.Normal(jnp.zeros(2), 1.0))
    pg.sample("x", pg.Normal(z, SIGMA_X))
    return z


SEEDS = {"mh": 1, "mala": 2, "hmc": 3, "regenerate": 4}
NUM_CHAINS, NUM_STEPS, BURN_IN = 32, 600, 100

MOVES = {
    "mh": pg.mc.mh(pg.select("z"), scale=0.6),
    "mala": pg.mc.mala(pg.select("z"), step_size=0.15),
    "hmc": pg.mc.hmc(pg.select("z"), step_size=0.1, num_leapfrog_steps=10),
    "regenerate": pg.mc.regenerate(pg.select("z")),
}


@functools.lru_cache(maxsize=None)
def run_chains(name):
    kernel, seed = MOVES[name], SEEDS[name]

    def chain(key):
        k_init, k_run = jax.random.split(key)
        trace, _ = normal_normal.generate(k_init, {"x": X_OBS})
        _, (traces, infos) = pg.run(kernel, k_run, kernel.init(trace), NUM_STEPS, keep="all")
        return traces["z"], infos.acceptance_rate

    keys = jax.random.split(jax.random.key(seed), NUM_CHAINS)
    return jax.jit(jax.vmap(chain))(keys)


@pytest.mark.parametrize("name", sorted(MOVES))
def test_move_leaves_conjugate_posterior_invariant(name):
    zs, acceptance = run_chains(name)
    zs = np.asarray(zs[:, BURN_IN:], np.float64)                 # (chains, steps, 2)
    chain_means = zs.mean(axis=1)
    chain_vars = zs.var(axis=1)
    mean_se = chain_means.std(axis=0, ddof=1) / np.sqrt(NUM_CHAINS)
    assert np.all(np.abs(chain_means.mean(0) - POST_MEAN) <= 4 * mean_se), (chain_means.mean(0), POST_MEAN, mean_se)
    var_se = chain_vars.std(axis=0, ddof=1) / np.sqrt(NUM_CHAINS)
    # A chain's sample variance is biased low by about var * tau / n; allow for it.
    assert np.all(np.abs(chain_vars.mean(0) - POST_VAR) <= 4 * var_se + 0.01), (chain_vars.mean(0), var_se)
    assert 0.1 < float(acceptance.mean()) <= 1.0


def test_hmc_with_ten_leapfrog_steps_has_high_acceptance_on_a_gaussian():
    _, acceptance = run_chains("hmc")
    assert float(acceptance.mean()) > 0.95


@pg.gen
def bernoulli_mixture():
    z = pg.sample("z", pg.Bernoulli(probs=0.3))
    pg.sample("x", pg.Normal(2.0 * z, 1.0))
    return z


def test_regenerate_uses_mh_ratio_on_a_discrete_latent():
    # P(z=1 | x) = 0.3 N(x; 2, 1) / (0.3 N(x; 2, 1) + 0.7 N(x; 0, 1)); the joint ratio would be wrong.
    x = 1.5
    like1, like0 = np.exp(-0.5 * (x - 2.0) ** 2), np.exp(-0.5 * x**2)
    truth = 0.3 * like1 / (0.3 * like1 + 0.7 * like0)
    kernel = pg.mc.regenerate(pg.select("z"))

    def chain(key):
        k_init, k_run = jax.random.split(key)
        trace, _ = bernoulli_mixture.generate(k_init, {"x": x})
        _, (traces, _) = pg.run(kernel, k_run, trace, 400, keep="all")
        return traces["z"]

    zs = np.asarray(jax.jit(jax.vmap(chain))(jax.random.split(jax.random.key(3), 64)), np.float64)[:, 50:]
    chain_means = zs.mean(1)
    se = chain_means.std(ddof=1) / np.sqrt(chain_means.size)
    assert abs(chain_means.mean() - truth) <= 4 * se, (chain_means.mean(), truth, se)


def test_regenerate_acceptance_is_likelihood_ratio():
    # For z ~ N(0,1), x ~ N(z,1) regeneration accepts with min(1, p(x|z')/p(x|z)).
    @pg.gen
    def model():
        z = pg.sample("z", pg.Normal(0.0, 1.0))
        pg.sample("x", pg.Normal(z, 1.0))

    trace, _ = model.generate(jax.random.key(0), {"x": 2.0, "z": -1.0})
    key = jax.random.key(11)
    new_trace, info = pg.mc.regenerate(pg.select("z")).step(key, trace)
    k_gen, _ = jax.random.split(key)
    proposed, _ = model.generate(k_gen, {"x": 2.0})
    z_new = float(proposed["z"])
    expected = min(1.0, np.exp(-0.5 * (2.0 - z_new) ** 2 + 0.5 * (2.0 + 1.0) ** 2))
    assert float(info.acceptance_rate) == pytest.approx(expected, rel=1e-4)


def test_bad_selection_and_discrete_gradient_moves():
    trace, _ = normal_normal.generate(jax.random.key(0), {"x": X_OBS})
    with pytest.raises(ValueError, match="picks no choice"):
        pg.mc.mh(pg.select("nope")).step(jax.random.key(0), trace)
    tr, _ = bernoulli_mixture.generate(jax.random.key(0), {"x": 1.0})
    with pytest.raises(TypeError, match="continuous"):
        pg.mc.hmc(pg.select("z"), 0.1).step(jax.random.key(0), tr)
    with pytest.raises(ValueError, match="step_size must be positive"):
        pg.mc.mala("z", step_size=0.0)


# --- the one accept step (shared with tempered SMC) ---

def test_mh_accept_accepts_with_probability_min_one_exp_log_alpha():
    from probgen.mc.mcmc import mh_accept

    log_alpha = jnp.log(0.3)
    keys = jax.random.split(jax.random.key(12), 20000)
    states, infos = jax.vmap(lambda k: mh_accept(k, log_alpha, jnp.ones(2), jnp.zeros(2)))(keys)
    rate = float(infos.accepted.mean())
    assert abs(rate - 0.3) <= 4 * np.sqrt(0.3 * 0.7 / keys.shape[0]), rate
    np.testing.assert_allclose(infos.acceptance_rate, 0.3, rtol=1e-6)
    # the state follows the decision leaf by leaf
    np.testing.assert_array_equal(states[:, 0], infos.accepted.astype(states.dtype))
    # log_alpha >= 0 always accepts; NaN always rejects
    _, up = mh_accept(jax.random.key(0), jnp.asarray(2.0), 1.0, 0.0)
    state, nan = mh_accept(jax.random.key(0), jnp.asarray(jnp.nan), 1.0, 0.0)
    assert bool(up.accepted) and float(up.acceptance_rate) == 1.0
    assert not bool(nan.accepted) and float(nan.acceptance_rate) == 0.0 and float(state) == 0.0


def test_a_state_that_is_not_a_trace_is_an_argument_error():
    with pytest.raises(pg.ArgumentError, match="mh.init: the starting position must be a pg.Trace"):
        pg.mc.mh(pg.select("z")).init(jnp.zeros(2))
    with pytest.raises(pg.ArgumentError, match="hmc: the state must be a pg.Trace"):
        pg.mc.hmc(pg.select("z"), 0.1).step(jax.random.key(0), jnp.zeros(2))

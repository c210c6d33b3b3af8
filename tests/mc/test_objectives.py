"""SMC as an objective: exact proposal gives log p(x); the bound tightens with N; gradients train."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.stats as st

import probgen as pg

T = 5
YS = jnp.array([0.5, -1.0, 1.5, 0.2, -0.3])
LOG_P = float(st.norm(0.0, np.sqrt(1.25)).logpdf(np.asarray(YS)).sum())  # iid z_t ~ N(0,1), y_t ~ N(z_t, .5)


def model_fn(params):
    @pg.gen
    def step(carry, _):
        z = pg.sample("z", pg.Normal(0.0, 1.0))
        pg.sample("y", pg.Normal(z, 0.5))
        return carry, None

    return pg.scan(step, length=T), 0.0, None


def proposal_fn(params):
    @pg.gen
    def proposal(carry, _, obs):
        pg.sample("z", pg.Normal(params["scale"] * obs["y"], jnp.exp(params["log_sd"])))

    return proposal, ()


EXACT = {"scale": jnp.asarray(0.8), "log_sd": jnp.asarray(0.5 * np.log(0.2))}


def test_exact_proposal_bound_equals_log_p():
    loss = pg.mc.smc_objective(model_fn, {"y": YS}, num_particles=4, proposal_fn=proposal_fn)
    assert abs(float(loss(EXACT, jax.random.key(0))) + LOG_P) < 1e-3


def test_float64_exact_proposal_bound_equals_log_p_to_float64_precision():
    # Each incremental weight is p(y_t) exactly: float64 must give log p(x) to ~1e-15 (not float32's 1e-7).
    with jax.enable_x64(True):
        exact = {"scale": jnp.asarray(0.8, jnp.float64), "log_sd": jnp.asarray(0.5 * np.log(0.2), jnp.float64)}
        loss = pg.mc.smc_objective(model_fn, {"y": jnp.asarray(YS, jnp.float64)}, num_particles=4,
                                   proposal_fn=proposal_fn)
        value = jax.jit(loss)(exact, jax.random.key(0))
        assert value.dtype == jnp.float64
        assert abs(float(value) + LOG_P) < 1e-10
        assert jax.grad(loss)(exact, jax.random.key(0))["scale"].dtype == jnp.float64


@pytest.mark.slow  # a long statistical run: the float64 pass skips it
def test_bound_tightens_with_particles_and_trains():
    means = []
    for n in (1, 8, 64):
        loss = pg.mc.smc_objective(model_fn, {"y": YS}, num_particles=n)
        vals = jax.vmap(lambda k: -loss(None, k))(jax.random.split(jax.random.key(n), 200))
        means.append(float(vals.mean()))
    assert means[0] < means[1] < means[2] <= LOG_P + 0.01, means
    loss = pg.mc.smc_objective(model_fn, {"y": YS}, num_particles=4, proposal_fn=proposal_fn)
    params = {"scale": jnp.asarray(0.0), "log_sd": jnp.asarray(0.0)}
    opt = optax.adam(0.05)

    @jax.jit
    def update(params, state, key):
        g = jax.grad(lambda p: jnp.mean(jax.vmap(lambda k: loss(p, k))(jax.random.split(key, 16))))(params)
        u, state = opt.update(g, state)
        return optax.apply_updates(params, u), state

    state = opt.init(params)
    for i in range(150):
        params, state = update(params, state, jax.random.key(100 + i))
    assert abs(float(params["scale"]) - 0.8) < 0.15, params


@pytest.mark.slow  # a long statistical run: the float64 pass skips it
def test_batch_gives_the_observations_of_the_step():
    params, key = {"scale": jnp.asarray(0.5), "log_sd": jnp.asarray(0.0)}, jax.random.key(3)
    direct = pg.mc.smc_objective(model_fn, num_particles=4, proposal_fn=proposal_fn)
    for ys in (YS, 2.0 * YS):
        fixed = pg.mc.smc_objective(model_fn, {"y": ys}, num_particles=4, proposal_fn=proposal_fn)
        assert float(direct(params, key, {"y": ys})) == float(fixed(params, key))
    # A batch replaces the observations given to the constructor.
    fixed = pg.mc.smc_objective(model_fn, {"y": YS}, num_particles=4, proposal_fn=proposal_fn)
    assert float(fixed(params, key, {"y": 2.0 * YS})) == float(direct(params, key, {"y": 2.0 * YS}))
    with pytest.raises(pg.SettingError, match="smc_objective: no observations"):
        direct(params, key)

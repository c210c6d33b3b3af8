"""SVDD and twisted SMC guidance against exact reward-tilted targets.

Continuous case: a 1-D Gaussian mixture with its exact noised score, the reward
``r(x) = -(x - 2)^2`` and ``alpha = 1``. Since ``exp(r / alpha) = sqrt(pi alpha) N(x; 2, alpha / 2)``, the
tilted target ``p(x) exp(r(x) / alpha) / Z`` is again a mixture (``mixture_product``) and
``Z = sqrt(pi alpha) sum_k w_k N(2; m_k, c_k + alpha / 2)``. The exact soft value follows from Bayes:
``p_t(x_t) exp(v(x_t, t) / alpha) = int p(x_0) q(x_t | x_0) exp(r(x_0) / alpha) dx_0 = Z p~_t(x_t)``, so
``v(x_t, t) = alpha (log Z + log p~_t(x_t) - log p_t(x_t))`` with ``p~_t`` the tilted mixture noised to ``t``.
Everything is taken at the sampler's final time ``t_min`` (the law it ends at), noised from there.

Discrete case (the int-token path another sampler will use): ``L`` binary tokens; each step of a
toy kernel redraws each token uniformly with probability ``rho``. Uniform tokens stay uniform, the
reward ``b * sum(x)`` tilts each token to ``Bernoulli(sigmoid(b / alpha))``,
``Z = ((1 + e^lambda) / 2)^L`` with ``lambda = b / alpha``, and with ``q = (1 - rho)^m`` the chance
a token survives the ``m`` remaining steps, ``v = alpha sum_i log(q e^{lambda x_i} + (1 - q)(1 + e^lambda) / 2)``.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.stats import norm

import probgen as pg

D = pg.diffusion
SDE = D.vp()
T_MIN = 1e-3
NUM_STEPS = 50
ALPHA = 1.0
MIXTURE = D.gaussian_mixture([0.5, 0.5], [[-2.0], [2.0]], 0.5)
P_END = MIXTURE.noised(SDE, T_MIN)  # the law of the exact sampler at t_min
TILTED = D.mixture_product(P_END, D.gaussian_mixture([1.0], [[2.0]], math.sqrt(ALPHA / 2)))
LOG_Z = float(0.5 * math.log(math.pi * ALPHA) + D.GaussianMixture(
    P_END.log_weights, P_END.means, P_END.covs + ALPHA / 2).log_prob(jnp.array([2.0])))
SAMPLER = D.euler_maruyama(SDE, D.gmm_score(MIXTURE, SDE), NUM_STEPS, T_MIN)


def reward(x):
    return -jnp.sum((x - 2.0) ** 2, axis=-1)


def exact_value(x, t):
    ratio = SDE.alpha(t) / SDE.alpha(T_MIN)
    extra = SDE.sigma(t) ** 2 - ratio**2 * SDE.sigma(T_MIN) ** 2  # variance of x_t | x_{t_min}

    def push(g):  # a mixture at t_min pushed forward to time t
        return D.GaussianMixture(g.log_weights, ratio * g.means, ratio**2 * g.covs + extra * jnp.eye(1))

    return ALPHA * (LOG_Z + push(TILTED).log_prob(x) - push(P_END).log_prob(x))


def tilted_cdf(x):
    w = jnp.exp(TILTED.log_weights)
    return jnp.sum(w * norm.cdf((x[:, None] - TILTED.means[:, 0]) / jnp.sqrt(TILTED.covs[:, 0, 0])), axis=-1)


def ks_distance(x, weights=None):
    """Kolmogorov–Smirnov distance of the (weighted) empirical law of ``x`` to the tilted target."""
    order = jnp.argsort(x)
    x = x[order]
    w = jnp.full(x.shape, 1.0 / x.shape[0]) if weights is None else weights[order]
    upper = jnp.cumsum(w)
    exact = tilted_cdf(x)
    return jnp.max(jnp.maximum(upper - exact, exact - (upper - w)))


def _se(values):
    return float(np.std(values, ddof=1) / np.sqrt(len(values)))


def test_exact_value_is_the_reward_at_the_end_and_a_martingale():
    x = jnp.linspace(-3.0, 3.0, 7)[:, None]
    np.testing.assert_allclose(exact_value(x, T_MIN), reward(x), atol=1e-4)
    # exp(v(x_t, t) / alpha) = E[exp(r / alpha) | x_t] has mean Z under p_t at every t.
    tilt_at = jax.jit(lambda key, t: jnp.exp(exact_value(MIXTURE.noised(SDE, t).sample(key, 20_000), t) / ALPHA))
    for t in (0.3, 1.0):
        tilt = np.asarray(tilt_at(jax.random.key(0), t))
        assert abs(tilt.mean() - math.exp(LOG_Z)) < 4 * _se(tilt), (t, tilt.mean(), math.exp(LOG_Z))


@pytest.mark.slow  # a long statistical run: the float64 pass skips it
def test_svdd_with_exact_value_approaches_tilted_target_as_candidates_grow():
    # SVDD particles are independent (no resampling across particles), so binomial and KS errors apply.
    num_particles = 4000
    exact_left = float(jnp.exp(TILTED.log_weights) @ norm.cdf(-TILTED.means[:, 0] / jnp.sqrt(TILTED.covs[:, 0, 0])))

    def run(num_candidates):
        kernel = D.svdd(SAMPLER, exact_value, num_candidates, ALPHA)

        def go(key):
            x_T = SDE.prior_sample(key, (num_particles, 1))
            final, info = pg.run(kernel, jax.random.fold_in(key, 1), kernel.init(x_T), NUM_STEPS)
            return final.x[:, 0], info.values

        x, values = jax.jit(go)(jax.random.key(num_candidates))
        left = float(jnp.mean(x < 0))
        # Distance: the mass on the wrong (left) mode, a lower bound on the total-variation distance.
        return x, values, abs(left - exact_left), math.sqrt(left * (1 - left) / num_particles)

    (x1, _, d1, se1), (x4, _, d4, se4), (x32, values, d32, se32) = run(1), run(4), run(32)
    # Monotone beyond Monte Carlo error (4 binomial standard errors of the difference);
    # measured: about 0.5, 0.03 and 0.0005 (exact 2e-5).
    assert d1 - d4 > 4 * math.hypot(se1, se4), (d1, d4)
    assert d4 - d32 > 4 * math.hypot(se4, se32), (d4, d32)
    # M = 1 is the pretrained sampler, at KS distance about 0.5 from the tilt; 32 candidates pass a
    # KS test at the 1% level (critical value 1.63 / sqrt(n)) and match the tilted mean.
    assert abs(float(ks_distance(x1)) - 0.5) < 0.05
    assert float(ks_distance(x32)) < 1.63 / math.sqrt(num_particles)
    assert abs(float(x32.mean()) - float(TILTED.mean()[0])) < 4 * float(x32.std()) / math.sqrt(num_particles) + 0.01
    # The last step's value is the exact value at t_min: the reward of the selected particle.
    np.testing.assert_allclose(values, reward(x32[:, None]), rtol=1e-3, atol=1e-3)


def test_svdd_alpha_zero_is_greedy_and_alpha_may_be_traced():
    # One Euler–Maruyama step from x = 0 (score -x, so no drift there) with the value v = x: each
    # candidate is N(0, s^2) with s^2 = g(t_max)^2 |dt|, and alpha = 0 selects the maximum of 16
    # normals, whose mean and sd are s times those of the maximum of 16 N(0, 1) (by quadrature).
    num_candidates, num_particles, num_steps = 16, 512, 4
    kernel = D.euler_maruyama(SDE, lambda x, t: -x, num_steps, T_MIN)
    state = kernel.init(jnp.zeros((num_particles, 1)))
    s = math.sqrt(float(SDE.g2(SDE.t_max)) * (SDE.t_max - T_MIN) / num_steps)
    grid = np.linspace(-8.0, 8.0, 20001)
    density = num_candidates * norm.pdf(grid) * norm.cdf(grid) ** (num_candidates - 1)
    max_mean = np.trapezoid(grid * density, grid)
    max_sd = np.sqrt(np.trapezoid(grid**2 * density, grid) - max_mean**2)

    def after(alpha):
        chosen, info = D.svdd(kernel, lambda x, t: x[:, 0], num_candidates, alpha).step(jax.random.key(3), state)
        return chosen.x[:, 0], info.values, chosen.t

    # alpha = 0 and a hot alpha = 100, traced under vmap.
    x, values, t = jax.jit(jax.vmap(after))(jnp.array([0.0, 100.0]))
    np.testing.assert_allclose(values, x)
    np.testing.assert_allclose(t, SDE.t_max - (SDE.t_max - T_MIN) / num_steps, rtol=1e-6)
    assert abs(float(x[0].mean()) - s * max_mean) < 4 * s * max_sd / math.sqrt(num_particles)
    # Nearly uniform selection: the mean of a random candidate, 0 (the tilt moves it by s^2 / 100).
    assert abs(float(x[1].mean())) < 4 * s / math.sqrt(num_particles)


@pytest.mark.slow  # a long statistical run: the float64 pass skips it
def test_smc_guidance_matches_tilted_target_and_z_is_unbiased():
    num_seeds, num_particles = 16, 1000
    smc = D.smc_guidance(SAMPLER, exact_value, ALPHA, reward_fn=reward)

    def one(key):
        x_T = SDE.prior_sample(key, (num_particles, 1))
        final, (_, info) = pg.run(smc, jax.random.fold_in(key, 1), smc.init(x_T), NUM_STEPS, keep="all")
        w = pg.mc.normalize_weights(final.log_weights)
        x = final.x[:, 0]
        mean = w @ x
        return mean, w @ (x - mean) ** 2, ks_distance(x, w), final.log_evidence, info.resampled.sum()

    mean, var, ks, log_z, resamples = map(np.asarray, jax.jit(jax.vmap(one))(
        jax.random.split(jax.random.key(0), num_seeds)))
    assert resamples.sum() > 0  # the adaptive resampling did fire
    exact_mean, exact_var = float(TILTED.mean()[0]), float(TILTED.cov()[0, 0])
    # 4 standard errors over seeds plus the sampler's own discretization error (EM with 50 steps
    # moves the plain sampler's moments by < 0.01 on this mixture; measured with 2e5 draws).
    assert abs(mean.mean() - exact_mean) < 4 * _se(mean) + 0.01, (mean, exact_mean)
    assert abs(var.mean() - exact_var) < 4 * _se(var) + 0.01, (var, exact_var)
    assert ks.mean() < 0.043, ks
    # Unbiased Z: the mean of Z_hat over independent runs (not of log Z_hat, which is biased low).
    z_hat = np.exp(log_z)
    assert abs(z_hat.mean() - math.exp(LOG_Z)) < 4 * _se(z_hat) + 0.01 * math.exp(LOG_Z), (z_hat, LOG_Z)


# --- discrete tokens: exact answers, no discretization error ---------------------------------

NUM_TOKENS, FLIP, TOKEN_STEPS, REWARD_SCALE = 6, 0.3, 8, 1.0
LAMBDA = REWARD_SCALE / ALPHA


def _token_kernel():
    """Each step, each token is redrawn uniformly from {0, 1} with probability FLIP (time 1 -> 0).

    Written by hand: ``pg.dynamics.grid_kernel`` keeps time in the dtype of ``x``, an int here.
    """

    def init(x):
        return pg.dynamics.IntegratorState(jnp.asarray(x), jnp.ones(()), jnp.zeros((), jnp.int32))

    def step(key, state):
        k_flip, k_draw = jax.random.split(key)
        x = state.x
        redraw = jax.random.bernoulli(k_flip, FLIP, x.shape)
        x = jnp.where(redraw, jax.random.bernoulli(k_draw, 0.5, x.shape).astype(x.dtype), x)
        t_next = 1.0 - (state.step + 1) / TOKEN_STEPS
        return pg.dynamics.IntegratorState(x, t_next.astype(state.t.dtype), state.step + 1), None

    return pg.Kernel(init, step, horizon=TOKEN_STEPS)


def token_value(x, t):
    remaining = jnp.round(t * TOKEN_STEPS)
    survive = (1.0 - FLIP) ** remaining
    per = jnp.log(survive * jnp.exp(LAMBDA * x) + (1.0 - survive) * (1.0 + math.exp(LAMBDA)) / 2.0)
    return ALPHA * jnp.sum(per, axis=-1)


def token_reward(x):
    return REWARD_SCALE * jnp.sum(x, axis=-1).astype(jnp.result_type(float))


def test_guidance_on_int_tokens_hits_the_exact_tilt_and_evidence():
    kernel = _token_kernel()
    num_seeds, num_particles = 32, 256
    smc = D.smc_guidance(kernel, token_value, ALPHA, reward_fn=token_reward, ess_threshold=0.5)
    svdd = D.svdd(kernel, token_value, 64, ALPHA)

    def one(key):
        x_T = jax.random.bernoulli(key, 0.5, (num_particles, NUM_TOKENS)).astype(jnp.int32)
        final, _ = pg.run(smc, jax.random.fold_in(key, 1), smc.init(x_T), TOKEN_STEPS)
        w = pg.mc.normalize_weights(final.log_weights)
        return final.log_evidence, w @ final.x.mean(-1)

    def guided(key):  # SVDD particles are independent: one run, the spread over particles is the error
        x_T = jax.random.bernoulli(key, 0.5, (4096, NUM_TOKENS)).astype(jnp.int32)
        return pg.run(svdd, jax.random.fold_in(key, 2), svdd.init(x_T), TOKEN_STEPS)[0].x

    log_z, smc_mean = map(np.asarray, jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(1), num_seeds)))
    tokens = jax.jit(guided)(jax.random.key(2))
    assert tokens.dtype == jnp.int32
    svdd_mean = np.asarray(tokens.mean(-1))
    exact_z = ((1.0 + math.exp(LAMBDA)) / 2.0) ** NUM_TOKENS
    tilted_mean = 1.0 / (1.0 + math.exp(-LAMBDA))
    z_hat = np.exp(log_z)
    assert abs(z_hat.mean() - exact_z) < 4 * _se(z_hat), (z_hat.mean(), exact_z)
    assert abs(smc_mean.mean() - tilted_mean) < 4 * _se(smc_mean), (smc_mean.mean(), tilted_mean)
    # SVDD with 64 candidates and the exact value: per-step importance resampling, bias O(1/M).
    assert abs(svdd_mean.mean() - tilted_mean) < 4 * _se(svdd_mean) + 0.01, (svdd_mean.mean(), tilted_mean)


def test_errors_name_the_argument():
    with pytest.raises(pg.SettingError, match="num_candidates"):
        D.svdd(SAMPLER, exact_value, 0, ALPHA)
    with pytest.raises(pg.SettingError, match="alpha"):
        D.svdd(SAMPLER, exact_value, 4, -1.0)
    with pytest.raises(pg.SettingError, match="alpha"):
        D.smc_guidance(SAMPLER, exact_value, 0.0)
    with pytest.raises(pg.ArgumentError, match="kernel"):
        D.svdd(lambda key, s: s, exact_value, 4, 1.0)
    no_x = pg.Kernel(init=lambda y: {"y": y}, step=lambda key, s: (s, None))
    with pytest.raises(pg.ArgumentError, match="'x'"):
        D.svdd(no_x, exact_value, 4, 1.0).init(jnp.zeros((3, 1)))
    with pytest.raises(pg.ArgumentError, match="'x'"):
        D.smc_guidance(no_x, exact_value, 1.0).init(jnp.zeros((3, 1)))
    with pytest.raises(pg.SettingError, match="value_fn"):
        kernel = D.svdd(SAMPLER, lambda x, t: x, 2, 1.0)  # returns (N, 1), not (N,)
        kernel.step(jax.random.key(0), kernel.init(jnp.zeros((3, 1))))
    with pytest.raises(pg.SettingError, match="horizon"):
        D.smc_guidance(no_x, exact_value, 1.0, reward_fn=reward)
    with pytest.raises(pg.SettingError, match="ess_threshold"):
        D.smc_guidance(SAMPLER, exact_value, 1.0, ess_threshold=2.0)

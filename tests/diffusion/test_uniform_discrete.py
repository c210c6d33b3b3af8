"""Uniform-noise discrete diffusion against exact enumeration on the 27-sequence target.

Ground truths: the target (chi-square tests of the ancestral sampler with the exact,
t-dependent denoiser), the sampler's exact law (its one-step law chained over the 27
states), ``log p(x_0)`` (the continuous-time ELBO of the exact denoiser, by quadrature over
t with x_t enumerated) and the discrete-time ELBO computed from ``q`` by enumeration,
independently of the library's code. The wrong denoiser is the exact one of another law;
the law is a traced argument, so one compiled function serves both.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import probgen as pg
from probgen.kernels import grid_time
from tests.diffusion.discrete_target import (
    K,
    L,
    LOG_P,
    OTHER_LOG_P,
    PROBS,
    SEQS,
    chain_law,
    chi_square_pvalue,
    exact_uniform_denoiser,
    quadrature,
    total_variation,
)

D = pg.diffusion
NUM_SAMPLES = 20000
LINEAR, COSINE = D.linear_schedule(), D.cosine_schedule()
EXACT = exact_uniform_denoiser(LINEAR)
UNIFORM_START = jnp.full(len(SEQS), 1.0 / len(SEQS))


@functools.lru_cache(maxsize=None)
def _law_fn(schedule):
    def law(num_steps, log_p):
        def transition(x_t, x_s, t, s):
            return D.uniform_transition_log_prob(exact_uniform_denoiser(schedule, log_p), x_t, x_s, t, s, K, schedule)

        return chain_law(transition, SEQS, UNIFORM_START, num_steps)

    return jax.jit(law)


def _law(schedule, num_steps, log_p=LOG_P):
    return np.asarray(_law_fn(schedule)(num_steps, log_p), np.float64)


def _draw(kernel, num_steps, key):
    """Samples from uniform x_1, as two vmapped halves under jit."""

    def half(k):
        k_start, k_run = jax.random.split(k)
        final = pg.run(kernel, k_run, kernel.init(jax.random.randint(k_start, (NUM_SAMPLES // 2, L), 0, K)),
                       num_steps)[0]
        return final.x, final.t

    x, t = jax.jit(jax.vmap(half))(jax.random.split(key, 2))
    assert t.dtype == jnp.result_type(float) and bool(jnp.all(t == 0))
    return np.asarray(x).reshape(NUM_SAMPLES, L)


def test_ancestral_sampler_with_the_exact_denoiser_reproduces_the_target():
    num_steps = 128
    # Exact bias of the per-position draws: TV = 0.35 (T=1), 0.146 (T=4), 0.038 (T=16),
    # 0.0094 (T=64), 0.0047 (T=128), 0.0023 (T=256).
    assert total_variation(_law(LINEAR, num_steps), PROBS) < 0.006
    x = _draw(D.uniform_ancestral(EXACT, K, num_steps), num_steps, jax.random.key(0))
    assert chi_square_pvalue(x, PROBS) > 1e-3


def test_ancestral_sampler_law_is_its_transition_log_prob():
    law = _law(COSINE, 3)
    assert abs(law.sum() - 1) < 1e-4 and total_variation(law, PROBS) > 0.1
    x = _draw(D.uniform_ancestral(exact_uniform_denoiser(COSINE), K, 3, COSINE), 3, jax.random.key(1))
    assert chi_square_pvalue(x, law / law.sum()) > 1e-3
    assert chi_square_pvalue(x, PROBS) < 1e-6


@functools.lru_cache(maxsize=None)
def _elbo_replicates_fn(num_steps, copies=64, replicates=16):
    @jax.jit
    def run(key, log_p):
        x = jnp.tile(SEQS, (copies, 1))

        def one(k):
            elbo = D.uniform_diffusion_elbo(k, exact_uniform_denoiser(LINEAR, log_p), x, K, LINEAR, num_steps)
            return elbo.reshape(copies, len(SEQS)).mean(0)

        return jax.vmap(one)(jax.random.split(key, replicates))

    return run


def _elbo_replicates(num_steps, key, log_p=LOG_P):
    draws = np.asarray(_elbo_replicates_fn(num_steps)(key, log_p), np.float64)
    return draws.mean(0), draws.std(0, ddof=1) / np.sqrt(draws.shape[0])


_X0, _XT = jnp.repeat(SEQS, len(SEQS), 0), jnp.tile(SEQS, (len(SEQS), 1))


@jax.jit
def _quadrature_elbo(log_p):
    """The continuous-time ELBO of the 27 sequences: ``x_t`` enumerated (27 states, weights from q),
    ``t`` by Gauss-Legendre quadrature of ``uniform_elbo_integrand``."""
    def expected(t):
        log_q = jnp.sum(jnp.log(LINEAR.alpha(t) * (_X0 == _XT) + LINEAR.noise_level(t) / K), -1)
        value = D.uniform_elbo_integrand(exact_uniform_denoiser(LINEAR, log_p), _X0, _XT, t, K, LINEAR)
        return jnp.sum((jnp.exp(log_q) * value).reshape(len(SEQS), len(SEQS)), -1)

    return quadrature(expected, 48)


def test_continuous_elbo_of_the_exact_denoiser_is_the_log_likelihood():
    """With the exact posterior the reverse jump process is the exact time reversal: ELBO = log p
    (measured to 1e-6 by quadrature)."""
    np.testing.assert_allclose(_quadrature_elbo(LOG_P), LOG_P, atol=1e-3)
    # The Monte Carlo estimate is heavy-tailed (see uniform_elbo_integrand): check the p-weighted mean.
    mean, se = _elbo_replicates(None, jax.random.key(2))
    assert abs(np.sum(PROBS * (mean - np.asarray(LOG_P)))) < 4 * np.sqrt(np.sum((PROBS * se) ** 2))


_SAME = np.asarray(SEQS[:, None, :] == SEQS[None, :, :])  # (27, 27, L): position-wise equality


@jax.jit
def _exact_discrete_elbo(num_steps, log_p):
    """ELBO_T of the 27 sequences: the sum over steps of
    ``E_{q(x_t|x_0) q(x_s|x_t,x_0)}[log p(x_s|x_t) - log q(x_s|x_t,x_0)]`` by enumeration, with q
    written here from its definition (Bayes' rule on the uniform transition kernels)."""
    dtype = jnp.result_type(float)
    same = jnp.asarray(_SAME, dtype)
    from_states, to_states = jnp.repeat(SEQS, len(SEQS), 0), jnp.tile(SEQS, (len(SEQS), 1))
    denoiser = exact_uniform_denoiser(LINEAR, log_p)

    def log_kernel(keep, move):  # log prod_l (keep [a_l = b_l] + move / K), (27, 27)
        return jnp.sum(jnp.log(keep * same + move / K), -1)

    def step(i, total):
        t, s = grid_time(i, num_steps, 1.0, 0.0, dtype), grid_time(i + 1, num_steps, 1.0, 0.0, dtype)
        a_t, a_s = LINEAR.alpha(t), LINEAR.alpha(s)
        q_t = log_kernel(a_t, 1 - a_t)  # [x_0, x_t]
        q_s = log_kernel(a_s, 1 - a_s)  # [x_0, x_s]
        q_ts = log_kernel(a_t / a_s, 1 - a_t / a_s)  # [x_s, x_t]
        post = q_ts.T[None, :, :] + q_s[:, None, :] - q_t[:, :, None]  # [x_0, x_t, x_s]
        log_p_step = D.uniform_transition_log_prob(denoiser, from_states, to_states, t, s, K, LINEAR)
        log_p_step = log_p_step.reshape(len(SEQS), len(SEQS))  # [x_t, x_s]
        weight = jnp.exp(q_t[:, :, None] + post)
        term = jnp.where(weight > 0, weight * (log_p_step[None] - post), 0.0)
        return total + term.sum((1, 2))

    return jax.lax.fori_loop(0, num_steps, step, jnp.zeros(len(SEQS), dtype))


@pytest.mark.parametrize("log_p", [LOG_P, OTHER_LOG_P], ids=["exact", "wrong"])
def test_discrete_time_elbo_is_exact_and_bounds_the_sampler_likelihood(log_p):
    num_steps = 4
    exact = np.asarray(_exact_discrete_elbo(num_steps, log_p), np.float64)
    mean, se = _elbo_replicates(num_steps, jax.random.key(3), log_p)
    np.testing.assert_array_less(np.abs(mean - exact), 4 * se + 1e-5)
    np.testing.assert_array_less(exact, np.log(_law(LINEAR, num_steps, log_p)) + 1e-4)
    assert np.sum(PROBS * exact) < np.sum(PROBS * np.asarray(LOG_P))
    if log_p is OTHER_LOG_P:  # the wrong denoiser's bound is strictly lower than the exact one's
        exact_denoiser_elbo = np.asarray(_exact_discrete_elbo(num_steps, LOG_P), np.float64)
        assert np.sum(PROBS * exact) < np.sum(PROBS * exact_denoiser_elbo) - 0.05


def test_continuous_elbo_is_the_limit_of_the_discrete_time_elbo():
    """The path-KL integrand is the T -> oo limit of the exact discrete-time ELBO, for a wrong denoiser:
    the gap halves with T (0.196, 0.100, 0.051 at T = 128, 256, 512) and the Richardson extrapolation
    of T = 256, 512 lands on the quadrature (measured: 9e-4)."""
    fine, finer = (np.asarray(_exact_discrete_elbo(n, OTHER_LOG_P), np.float64) for n in (256, 512))
    continuous = np.asarray(_quadrature_elbo(OTHER_LOG_P), np.float64)
    assert np.max(np.abs(finer - continuous)) < np.max(np.abs(fine - continuous))
    np.testing.assert_allclose(2 * finer - fine, continuous, atol=5e-3)


def test_bad_input_is_refused():
    kernel = D.uniform_ancestral(EXACT, K, 4)
    with pytest.raises(pg.ValidationError, match=r"x must hold token ids in \[0, 2\] .*no mask id"):
        kernel.init(jnp.array([[0, 3, 1]]))
    with pytest.raises(pg.SettingError, match="per-token-class"):
        D.uniform_ancestral(EXACT, K, 4, D.polynomial_schedule(jnp.ones(K)))
    with pytest.raises(pg.SettingError, match="num_steps must be a positive int"):
        D.uniform_ancestral(EXACT, K, 0)
    with pytest.raises(pg.SettingError, match="logits of shape"):
        D.uniform_transition_log_prob(lambda x, t: jnp.zeros(x.shape + (2,)), SEQS, SEQS, 1.0, 0.5, K)
    with pytest.raises(pg.ValidationError, match=r"t must lie in \[0, 1\]"):
        pg.validate(lambda t: D.randomize_tokens(jax.random.key(0), SEQS, t, K))(1.5)
    loss = pg.validate(D.uniform_diffusion_loss(lambda p, x, t: p * EXACT(x, t), K))
    value = loss(jnp.ones(()), jax.random.key(0), SEQS)
    assert np.isfinite(value) and value.dtype == jnp.result_type(float)
    with pytest.raises(pg.ValidationError, match=r"batch must hold token ids in \[0, 2\]"):
        loss(jnp.ones(()), jax.random.key(0), SEQS.at[0, 0].set(-1))

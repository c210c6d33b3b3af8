"""Masked diffusion against exact enumeration on a 27-sequence target (vocabulary 3, length 3).

Ground truths: the target law itself (chi-square tests of samplers driven by the exact
denoiser), the exact law of a sampler (its one-step law ``masked_transition_log_prob``
chained over the 64 partially masked states), ``log p(x_0)`` (the continuous-time ELBO of
the exact denoiser, by quadrature over t with x_t enumerated), and the discrete-time ELBO
computed by enumerating the masking patterns from ``q`` and the transition law,
independently of the library's ELBO code. The exact denoisers are passed their law as a
traced argument, so one compiled function serves the right and the wrong denoiser.
"""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import probgen as pg
from probgen.kernels import grid_time
from tests.diffusion.discrete_target import (
    ALL_MASKED_INDEX,
    K,
    L,
    LOG_P,
    MASKED_STATES,
    PROBS,
    PRODUCT_LOG_P,
    SEQS,
    chain_law,
    chi_square_pvalue,
    clean_part,
    exact_masked_denoiser,
    masked_posterior,
    quadrature,
    total_variation,
)

D = pg.diffusion
NUM_SAMPLES = 20000
LINEAR = D.linear_schedule()
PER_CLASS = D.polynomial_schedule(jnp.array([1.0, 2.0, 3.0]))  # GenMD4: one exponent per token class
PATTERNS = jnp.array(list(itertools.product([False, True], repeat=L)))  # the 8 masking patterns


@functools.lru_cache(maxsize=None)
def _law_fn(schedule):
    """``(num_steps, log_p) -> law over MASKED_STATES`` of masked_ancestral with the exact denoiser of log_p."""

    def law(num_steps, log_p):
        def transition(x_t, x_s, t, s):
            return D.masked_transition_log_prob(masked_posterior(log_p), x_t, x_s, t, s, K, schedule)

        return chain_law(transition, MASKED_STATES, ALL_MASKED_INDEX, num_steps)

    return jax.jit(law)


def _law(schedule, num_steps, log_p=LOG_P):
    return clean_part(_law_fn(schedule)(num_steps, log_p))


def _draw(kernel, num_steps, key):
    """Samples of ``kernel`` from all-masked, as two vmapped halves under jit (the state's t ends at 0)."""

    def half(k):
        final = pg.run(kernel, k, kernel.init(D.all_masked(NUM_SAMPLES // 2, L, K)), num_steps)[0]
        return final.x, final.t

    x, t = jax.jit(jax.vmap(half))(jax.random.split(key, 2))
    assert t.dtype == jnp.result_type(float) and bool(jnp.all(t == 0)) and jnp.issubdtype(x.dtype, jnp.integer)
    return np.asarray(x).reshape(NUM_SAMPLES, L)


def test_ancestral_sampler_with_the_exact_denoiser_reproduces_the_target():
    num_steps = 128
    # The bias of drawing several tokens independently in one step, measured exactly:
    # TV = 0.35 (T=1), 0.051 (T=8), 0.013 (T=32), 0.0033 (T=128), 0.0016 (T=256). At T=128 the
    # chi-square test's noncentrality is 1.7 (rejection probability 0.25% at level 1e-3).
    assert total_variation(_law(LINEAR, num_steps), PROBS) < 0.005
    x = _draw(D.masked_ancestral(exact_masked_denoiser, K, num_steps), num_steps, jax.random.key(0))
    assert chi_square_pvalue(x, PROBS) > 1e-3


def test_ancestral_sampler_law_is_its_transition_log_prob():
    """With 2 steps and a per-class schedule the sampler is biased; samples follow the enumerated law."""
    law = _law(PER_CLASS, 2)
    assert abs(law.sum() - 1) < 1e-4
    assert total_variation(law, PROBS) > 0.1  # the factorization bias is real at 2 steps (0.23) ...
    x = _draw(D.masked_ancestral(exact_masked_denoiser, K, 2, PER_CLASS), 2, jax.random.key(1))
    assert chi_square_pvalue(x, law / law.sum()) > 1e-3
    assert chi_square_pvalue(x, PROBS) < 1e-6  # ... and the chi-square test sees it


@pytest.mark.parametrize("order", ["random", "confidence"])
def test_topk_unmasking_one_token_per_step_is_exact(order):
    kernel = D.masked_topk_unmasking(exact_masked_denoiser, K, num_steps=L, order=order)
    assert chi_square_pvalue(_draw(kernel, L, jax.random.key(2)), PROBS) > 1e-3


@functools.lru_cache(maxsize=None)
def _elbo_replicates_fn(schedule, num_steps, copies=64, replicates=16):
    @jax.jit
    def run(key, log_p):
        x = jnp.tile(SEQS, (copies, 1))  # row r*27 + i: sequence i, its times spread by stratification

        def one(k):
            elbo = D.masked_diffusion_elbo(k, masked_posterior(log_p), x, K, schedule, num_steps)
            return elbo.reshape(copies, len(SEQS)).mean(0)

        return jax.vmap(one)(jax.random.split(key, replicates))

    return run


def _elbo_replicates(schedule, num_steps, key, log_p=LOG_P):
    """Per-sequence Monte Carlo ELBO estimates: mean and standard error over independent replicates."""
    draws = np.asarray(_elbo_replicates_fn(schedule, num_steps)(key, log_p), np.float64)
    return draws.mean(0), draws.std(0, ddof=1) / np.sqrt(draws.shape[0])


_X0 = jnp.repeat(SEQS, len(PATTERNS), 0)
_MASKED = jnp.tile(PATTERNS, (len(SEQS), 1))


@functools.lru_cache(maxsize=None)
def _quadrature_fn(schedule):
    """``log_p ->`` the continuous-time ELBO of the 27 sequences: ``x_t`` enumerated (8 masking patterns,
    weights from q), ``t`` by Gauss-Legendre quadrature of ``masked_elbo_integrand``."""
    x_t = jnp.where(_MASKED, K, _X0)

    def elbo(log_p):
        def expected(t):
            noise = jnp.broadcast_to(jnp.asarray(schedule.noise_level(t)), (K,))[_X0]
            log_q = jnp.sum(jnp.where(_MASKED, jnp.log(noise), jnp.log1p(-noise)), -1)
            value = D.masked_elbo_integrand(masked_posterior(log_p), _X0, x_t, t, K, schedule)
            return jnp.sum(jnp.where(log_q > -jnp.inf, jnp.exp(log_q) * value, 0.0).reshape(len(SEQS), -1), -1)

        return quadrature(expected, 32)

    return jax.jit(elbo)


def _quadrature_elbo(schedule, log_p=LOG_P):
    return np.asarray(_quadrature_fn(schedule)(log_p), np.float64)


@pytest.mark.parametrize("schedule", [LINEAR, D.cosine_schedule()], ids=["linear", "cosine"])
def test_continuous_elbo_of_the_exact_denoiser_is_the_log_likelihood(schedule):
    """MD4's claim holds, for every schedule: averaged over t the ELBO of the exact denoiser is the
    any-order autoregressive log-likelihood, log p(x_0) (measured to 1e-6 by quadrature)."""
    np.testing.assert_allclose(_quadrature_elbo(schedule), np.asarray(LOG_P), atol=1e-3)
    if schedule is LINEAR:  # and the library's Monte Carlo estimate of it is unbiased
        mean, se = _elbo_replicates(schedule, None, jax.random.key(3))
        np.testing.assert_array_less(np.abs(mean - np.asarray(LOG_P)), 4 * se)


def test_a_wrong_denoiser_has_a_strictly_lower_elbo():
    gap = np.sum(PROBS * (np.asarray(LOG_P) - _quadrature_elbo(LINEAR, PRODUCT_LOG_P)))
    assert gap > 0.2  # measured: E_p[log p] - E_p[ELBO] = 0.30 nats for the context-free denoiser


@functools.lru_cache(maxsize=None)
def _exact_discrete_elbo_fn(schedule):
    """``(num_steps, log_p) -> ELBO_T`` for the 27 sequences: sum over steps of
    ``E_{q(x_t|x_0) q(x_s|x_t,x_0)}[log p(x_s|x_t) - log q(x_s|x_t,x_0)]``, enumerating masking patterns."""
    dtype = jnp.result_type(float)
    pattern_t, pattern_s = jnp.repeat(PATTERNS, 8, 0), jnp.tile(PATTERNS, (8, 1))
    nested = jnp.tile(jnp.all(~pattern_s | pattern_t, -1), len(SEQS))  # masked at s => masked at t
    x0 = jnp.repeat(SEQS, 64, 0)
    masked_t, masked_s = jnp.tile(pattern_t, (len(SEQS), 1)), jnp.tile(pattern_s, (len(SEQS), 1))
    x_t, x_s = jnp.where(masked_t, K, x0), jnp.where(masked_s, K, x0)  # pairs not nested get weight 0

    def noise(t):  # 1 - alpha_t of each token's class
        return jnp.broadcast_to(jnp.asarray(schedule.noise_level(t)), (K,))[x0]

    def elbo(num_steps, log_p):
        def step(i, total):
            t, s = grid_time(i, num_steps, 1.0, 0.0, dtype), grid_time(i + 1, num_steps, 1.0, 0.0, dtype)
            noise_t, keep = noise(t), noise(s) / noise(t)
            log_q_t = jnp.sum(jnp.where(masked_t, jnp.log(noise_t), jnp.log1p(-noise_t)), -1)
            log_q_s = jnp.sum(jnp.where(masked_t, jnp.where(masked_s, jnp.log(keep), jnp.log1p(-keep)), 0.0), -1)
            weight = jnp.where(nested, jnp.exp(log_q_t + log_q_s), 0.0)
            log_p_step = D.masked_transition_log_prob(masked_posterior(log_p), x_t, x_s, t, s, K, schedule)
            term = jnp.where(weight > 0, weight * (log_p_step - log_q_s), 0.0)
            return total + term.reshape(len(SEQS), 64).sum(-1)

        return jax.lax.fori_loop(0, num_steps, step, jnp.zeros(len(SEQS), dtype))

    return jax.jit(elbo)


def _exact_discrete_elbo(schedule, num_steps, log_p=LOG_P):
    return np.asarray(_exact_discrete_elbo_fn(schedule)(num_steps, log_p), np.float64)


@pytest.mark.parametrize("log_p,schedule", [(LOG_P, LINEAR), (PRODUCT_LOG_P, PER_CLASS)],
                         ids=["exact-linear", "marginal-per_class"])
def test_discrete_time_elbo_is_exact_and_bounds_the_sampler_likelihood(log_p, schedule):
    num_steps = 8
    exact = _exact_discrete_elbo(schedule, num_steps, log_p)
    # The library's estimator (T times one random step's KL) is unbiased for it.
    mean, se = _elbo_replicates(schedule, num_steps, jax.random.key(5), log_p)
    np.testing.assert_array_less(np.abs(mean - exact), 4 * se + 1e-5)
    # ELBO_T(x) <= log p_T(x), the likelihood of the T-step sampler, for every sequence.
    np.testing.assert_array_less(exact, np.log(_law(schedule, num_steps, log_p)) + 1e-4)
    if log_p is LOG_P:
        # Finer steps tighten it toward E_p[log p]: -2.898 (T=2), -2.780 (8), -2.738 (512); -2.737.
        coarse = _exact_discrete_elbo(schedule, 2, log_p)
        assert np.sum(PROBS * coarse) < np.sum(PROBS * exact) < np.sum(PROBS * np.asarray(LOG_P))


def test_per_class_continuous_elbo_is_the_limit_of_the_discrete_time_elbo():
    """The GenMD4 integrand (with its sum_j mu_j lam_j - lam_k term) is the T -> oo limit of the exact
    discrete-time ELBO: the gaps shrink geometrically (ratio ~1.75 per doubling) toward it, and the
    Aitken extrapolation of T = 128, 256, 512 lands on it (measured: 0.0023; raw gap at 512: 0.035)."""
    coarse, fine, finer = (_exact_discrete_elbo(PER_CLASS, n, PRODUCT_LOG_P) for n in (128, 256, 512))
    continuous = _quadrature_elbo(PER_CLASS, PRODUCT_LOG_P)
    gaps = [np.max(np.abs(v - continuous)) for v in (coarse, fine, finer)]
    assert gaps[0] > gaps[1] > gaps[2]
    d1, d2 = fine - coarse, finer - fine
    np.testing.assert_allclose(finer - d2**2 / (d2 - d1), continuous, atol=0.01)


def _net(params, x, t):
    features = jnp.concatenate([jax.nn.one_hot(x, K + 1).reshape(x.shape[0], -1), t[:, None]], axis=-1)
    return pg.flows.mlp(params, features).reshape(x.shape + (K,))


@pytest.mark.slow  # a long statistical run: the float64 pass skips it
def test_training_the_elbo_with_an_mlp_reaches_the_target():
    data = SEQS[jax.random.categorical(jax.random.key(7), LOG_P, shape=(4096,))]
    params = pg.flows.init_mlp(jax.random.key(8), [L * (K + 1) + 1, 32, 32, L * K], final_scale=0.1)
    loss = D.masked_diffusion_loss(_net, K)
    result = pg.fit(loss, params, optax.adam(5e-3), jax.random.key(9), data=data, steps=500, batch_size=256,
                    progress=False)
    trained = result.params

    def transition(x_t, x_s, t, s):
        return D.masked_transition_log_prob(lambda x, u: _net(trained, x, u), x_t, x_s, t, s, K)

    law = clean_part(jax.jit(lambda: chain_law(transition, MASKED_STATES, ALL_MASKED_INDEX, 32))())
    # Measured: TV(law of the 32-step sampler with the trained net, target) ~ 0.06 (the exact
    # denoiser's own 32-step bias is 0.013; the 4096 training points are at TV 0.032 from the target).
    assert total_variation(law, PROBS) < 0.1


def test_learned_per_class_schedule_gets_gradients():
    schedule = lambda p: D.polynomial_schedule(jnp.exp(p["log_w"]))  # noqa: E731
    loss = D.masked_diffusion_loss(lambda p, x, t: exact_masked_denoiser(x, t), K, schedule)
    grads = jax.jit(jax.grad(loss))({"log_w": jnp.zeros(K)}, jax.random.key(10), jnp.tile(SEQS, (4, 1)))
    assert np.all(np.isfinite(grads["log_w"])) and np.any(grads["log_w"] != 0)


def test_bad_input_is_refused():
    kernel = D.masked_ancestral(exact_masked_denoiser, K, 4)
    with pytest.raises(pg.ValidationError, match=r"masked_ancestral.init: x must hold token ids in \[0, 3\]"):
        kernel.init(jnp.array([[0, 4, 1]]))
    with pytest.raises(pg.ValidationError, match="got 7"):
        pg.validate(kernel.init)(jnp.array([[0, 7, 3]]))
    with pytest.raises(pg.ArgumentError, match="integer token ids"):
        kernel.init(jnp.zeros((2, L)))
    wrong_vocab = D.masked_ancestral(lambda x, t: jnp.zeros(x.shape + (K + 1,)), K, 4)
    with pytest.raises(pg.SettingError, match=r"logits of shape .* = \(2, 3, 3\)"):
        jax.eval_shape(wrong_vocab.step, jax.random.key(0), wrong_vocab.init(D.all_masked(2, L, K)))
    for bad in (0, -1, 2.5, None):
        with pytest.raises(pg.SettingError, match="num_steps must be a positive int"):
            D.masked_ancestral(exact_masked_denoiser, K, bad)
    with pytest.raises(pg.SettingError, match="num_steps"):
        D.masked_diffusion_loss(exact_masked_denoiser, K, num_steps=0)
    with pytest.raises(pg.ValidationError, match=r"t must lie in \[0, 1\]"):
        D.mask_tokens(jax.random.key(0), SEQS, 1.5, K)
    with pytest.raises(pg.ValidationError, match=r"t must lie in \[0, 1\]"):
        pg.validate(lambda t: D.mask_tokens(jax.random.key(0), SEQS, t, K))(-0.5)
    loss = pg.validate(D.masked_diffusion_loss(lambda p, x, t: exact_masked_denoiser(x, t), K))
    assert np.isfinite(loss(None, jax.random.key(0), SEQS))
    with pytest.raises(pg.ValidationError, match=r"batch must hold token ids in \[0, 2\]"):
        loss(None, jax.random.key(0), SEQS.at[0, 1].set(3))
    with pytest.raises(pg.ValidationError, match="earlier time s < t"):
        D.masked_transition_log_prob(exact_masked_denoiser, SEQS, SEQS, 0.5, 0.7, K)
    with pytest.raises(pg.SettingError, match="exponent must be positive"):
        D.polynomial_schedule(jnp.array([1.0, 0.0, 2.0]))
    with pytest.raises(pg.SettingError, match="per-token-class"):
        D.masked_topk_unmasking(exact_masked_denoiser, K, 3, PER_CLASS)
    with pytest.raises(pg.SettingError, match="order must be one of"):
        D.masked_topk_unmasking(exact_masked_denoiser, K, 3, order="greedy")

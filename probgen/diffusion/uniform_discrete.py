"""Uniform-noise discrete diffusion: forward resampling, ELBOs, the ancestral sampler and its law.

The forward process (D3PM with a uniform transition matrix, Austin et al. 2021, in
continuous time) keeps each token with probability ``alpha_t`` and otherwise replaces it by
a uniform draw from the ``K`` tokens: ``q(x_t | x_0) = alpha_t delta_{x_0} + (1 - alpha_t)/K``,
and between ``s < t``: ``q(x_t | x_s) = (alpha_t/alpha_s) delta_{x_s} + (1 - alpha_t/alpha_s)/K``.
At ``t = 1`` (``alpha_1 = 0``) the tokens are uniform, the prior. The reverse step is the
posterior ``q(x_s | x_t, x_0)`` averaged over the denoiser's ``p_theta(x_0 | x_t)``, per position:

``p(x_s = j | x_t = i) = q(i | j)_{t|s} sum_k mu_k q_s(j | k) / q_t(i | k)``.

The continuous-time ELBO is the path KL of the reverse jump process (Campbell et al. 2022):
with ``lam = -alpha'_t/alpha_t`` the forward rate, the true and the model reverse rates
from ``i = x_t^l`` to ``j != i`` are ``lam/K f_j`` and ``lam/K f_hat_j``, where
``f_j = q_t(j | x_0)/q_t(i | x_0)`` and ``f_hat_j = sum_k mu_k q_t(j | k)/q_t(i | k)``, and

``ELBO(x_0) = -int_0^1 E_{q(x_t|x_0)} sum_l lam/K sum_{j != i} [f_hat_j - f_j + f_j log(f_j / f_hat_j)] dt``.

With the exact denoiser (``mu`` the posterior marginal of ``x_0^l`` given ``x_t``, which
depends on ``t``) the model's reverse process is the exact time reversal and the ELBO
equals ``log p(x_0)``.

Example:
    >>> import jax, jax.numpy as jnp, probgen as pg
    >>> kernel = pg.diffusion.uniform_ancestral(lambda x, t: jnp.zeros(x.shape + (4,)), vocab_size=4, num_steps=10)
    >>> x_1 = jax.random.randint(jax.random.key(0), (5, 6), 0, 4)
    >>> pg.run(kernel, jax.random.key(1), kernel.init(x_1), 10)[0].x.shape
    (5, 6)
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jax.scipy.special import xlogy

from probgen.core.errors import SettingError
from probgen.diffusion.discrete import (
    DiscreteSchedule,
    averaged_elbo,
    check_num_steps,
    check_schedule,
    check_transition,
    check_time,
    check_tokens,
    check_vocab_size,
    denoised_log_probs,
    elbo_estimate,
    gather_class,
    per_sequence_time,
    refuse_per_class,
    token_kernel,
)
from probgen.kernels import Kernel

Denoiser = Callable[[jax.Array, jax.Array], jax.Array]


def _meaning(vocab_size: int) -> str:
    return f"tokens of a vocabulary of {vocab_size}; uniform diffusion has no mask id"


def _column(value: jax.Array, ndim: int) -> jax.Array:
    """A per-sequence ``(N,)`` (or scalar) value shaped to broadcast over ``ndim - 1`` trailing axes."""
    value = jnp.asarray(value)
    return value.reshape(value.shape + (1,) * (ndim - 1)) if value.ndim else value


def _randomize(key, tokens, t, schedule, vocab_size):
    k_which, k_value = jax.random.split(key)
    noise = _column(schedule.noise_level(t), 2)
    resample = jax.random.uniform(k_which, tokens.shape, noise.dtype) < noise
    return jnp.where(resample, jax.random.randint(k_value, tokens.shape, 0, vocab_size, tokens.dtype), tokens)


def randomize_tokens(key: jax.Array, tokens: jax.Array, t, vocab_size: int,
                     schedule: DiscreteSchedule | None = None) -> jax.Array:
    """Draw ``x_t ~ q(x_t | x_0)``: each token is replaced, with probability ``1 - alpha_t``, by a uniform token.

    Args:
      key: PRNG key.
      tokens: clean tokens ``(N, L)`` in ``[0, K)``.
      t: a time in ``[0, 1]``, scalar or ``(N,)``.
      vocab_size: ``K``.
      schedule: a shared :class:`DiscreteSchedule` (default: linear).

    Returns:
      ``x_t``, int tokens ``(N, L)``.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> x_t = pg.diffusion.randomize_tokens(jax.random.key(0), jnp.zeros((2000, 2), int), 1.0, vocab_size=4)
        >>> round(float(jnp.mean(x_t == 0)), 1)  # uniform at t = 1
        0.2
    """
    where = "randomize_tokens"
    vocab_size = check_vocab_size(vocab_size, where)
    schedule = check_schedule(schedule, where)
    refuse_per_class(schedule, vocab_size, where)
    tokens = check_tokens(tokens, vocab_size - 1, where, "tokens", _meaning(vocab_size))
    t = per_sequence_time(check_time(t, where), tokens.shape[0], where)
    return _randomize(key, tokens, t, schedule, vocab_size)


def _reverse_probs(schedule, x_t, mu, t, s, vocab_size):
    """``p(x_s = j | x_t)`` per position, shape ``(N, L, K)``, for a law ``mu`` of ``x_0`` (``(N, L, K)``).

    ``t, s`` are per sequence ``(N,)``. With ``mu`` one-hot at ``x_0`` this is the forward
    posterior ``q(x_s | x_t, x_0)``.
    """
    alpha_t, alpha_s = _column(schedule.alpha(t), 3), _column(schedule.alpha(s), 3)
    noise_t, noise_s = _column(schedule.noise_level(t), 3), _column(schedule.noise_level(s), 3)
    current = jax.nn.one_hot(x_t, vocab_size, dtype=mu.dtype)  # [i = k]
    likelihood_t = alpha_t * current + noise_t / vocab_size  # q_t(i | k) over k
    v = mu / likelihood_t
    through_s = alpha_s * v + noise_s / vocab_size * jnp.sum(v, -1, keepdims=True)  # sum_k v_k q_s(j | k)
    keep_ts = alpha_t / alpha_s  # alpha_{t|s}; alpha_s > 0 since s < t <= 1
    move_ts = (noise_t - noise_s) / alpha_s  # 1 - alpha_{t|s} without cancellation
    probs = (keep_ts * current + move_ts / vocab_size) * through_s
    return probs / jnp.sum(probs, -1, keepdims=True)  # sums to 1 up to rounding


def _step_loss(schedule, vocab_size):
    def loss(tokens, x_t, log_probs, t, s):
        clean = jax.nn.one_hot(tokens, vocab_size, dtype=log_probs.dtype)
        true = _reverse_probs(schedule, x_t, clean, t, s, vocab_size)
        model = _reverse_probs(schedule, x_t, jnp.exp(log_probs), t, s, vocab_size)
        return jnp.sum(xlogy(true, true) - xlogy(true, model), axis=(-2, -1))

    return loss


def _continuous_loss(schedule, vocab_size):
    def loss(tokens, x_t, log_probs, t):
        alpha = _column(schedule.alpha(t), 3)
        noise = _column(schedule.noise_level(t), 3) / vocab_size  # beta_t
        alive = alpha > 0  # at alpha = 0 (t = 1) the integrand's limit is 0
        rate = jnp.where(alive, -_column(schedule.alpha_derivative(t), 3) / jnp.where(alive, alpha, 1.0), 0.0)
        mu = jnp.exp(log_probs)
        current = jax.nn.one_hot(x_t, vocab_size, dtype=mu.dtype)
        clean = jax.nn.one_hot(tokens, vocab_size, dtype=mu.dtype)
        stay = noise / (alpha + noise)  # q_t(j | i) / q_t(i | i) for j != i
        boost = alpha / noise  # q_t(j | j) / q_t(j | k) - 1, for k != j
        mu_current = jnp.sum(mu * current, -1, keepdims=True)
        clean_current = jnp.sum(clean * current, -1, keepdims=True)
        ratio_model = mu_current * stay + (1.0 - mu_current) + mu * boost
        ratio_true = clean_current * stay + (1.0 - clean_current) + clean * boost
        term = ratio_model - ratio_true + ratio_true * (jnp.log(ratio_true) - jnp.log(ratio_model))
        term = jnp.where(current > 0, 0.0, term)  # only jumps j != i
        return jnp.sum(rate / vocab_size * jnp.where(alive, term, 0.0), axis=(-2, -1))

    return loss


def _elbo_parts(schedule, vocab_size, where):
    refuse_per_class(schedule, vocab_size, where)

    def noise(key, tokens, t):
        return _randomize(key, tokens, t, schedule, vocab_size)

    return noise, _continuous_loss(schedule, vocab_size), _step_loss(schedule, vocab_size)


def uniform_diffusion_elbo(key: jax.Array, denoiser: Denoiser, tokens: jax.Array, vocab_size: int,
                           schedule: DiscreteSchedule | None = None, num_steps: int | None = None,
                           num_samples: int = 1, stratified: bool = True) -> jax.Array:
    """Unbiased estimate of each sequence's uniform-diffusion ELBO, a lower bound on ``log p(x_0)``.

    Continuous time (``num_steps=None``): the path-KL integrand of the module docstring at
    ``t ~ U(0, 1]``. Discrete time (``num_steps=T``): ``T`` times the exact KL between
    ``q(x_s | x_t, x_0)`` and the model's reverse step at a uniformly drawn step of the grid
    ``t_i = 1 - i/T`` (the prior term is 0 as ``q(x_1 | x_0)`` is uniform; the last step's
    KL is the reconstruction term ``-log mu(x_0)``). The continuous-time estimate is
    heavy-tailed (see :func:`uniform_elbo_integrand`): prefer many draws, or ``num_steps``.

    Args:
      key, denoiser, tokens, vocab_size, num_steps, num_samples, stratified: as in
        :func:`masked_diffusion_elbo` (tokens in ``[0, K)``).
      schedule: a shared :class:`DiscreteSchedule` (default: linear).

    Returns:
      The ELBO estimates, shape ``(N,)``.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> uniform = lambda x, t: jnp.zeros(x.shape + (2,))
        >>> elbo = jax.jit(lambda key: pg.diffusion.uniform_diffusion_elbo(
        ...     key, uniform, jnp.zeros((3, 4), int), 2, num_steps=10, num_samples=20))
        >>> bool(jnp.all(elbo(jax.random.key(0)) < 4 * jnp.log(0.5)))  # below the uniform model's log p
        True
    """
    where = "uniform_diffusion_elbo"
    vocab_size = check_vocab_size(vocab_size, where)
    num_steps = check_num_steps(num_steps, where)
    tokens = check_tokens(tokens, vocab_size - 1, where, "tokens", _meaning(vocab_size))
    schedule = check_schedule(schedule, where)
    noise, continuous, step = _elbo_parts(schedule, vocab_size, where)

    def one_draw(k, x):
        return elbo_estimate(k, x, denoiser, vocab_size, noise, continuous, step, num_steps, stratified, where)

    return averaged_elbo(key, tokens, num_samples, one_draw, where)


def uniform_elbo_integrand(denoiser: Denoiser, tokens: jax.Array, x_t: jax.Array, t, vocab_size: int,
                           schedule: DiscreteSchedule | None = None) -> jax.Array:
    """The continuous-time ELBO's integrand at ``(x_0, x_t, t)``: ``ELBO = int_0^1 E_{q(x_t|x_0)}[this] dt``.

    Minus ``sum_l lam/K sum_{j != x_t^l} [f_hat_j - f_j + f_j log(f_j / f_hat_j)]`` (module
    docstring). :func:`uniform_diffusion_elbo` averages it at random ``(t, x_t)``. That
    estimator is heavy-tailed: at small ``t`` a token that the forward process changed
    (probability ``~t``) contributes ``~(1/t) log(1/t)``, so its variance grows without
    bound (slowly, logarithmically) with the number of draws; on a small problem, enumerate
    ``x_t`` with this integrand and integrate ``t`` by quadrature instead, or use the
    discrete-time ELBO (``num_steps``), whose last step handles small ``t`` exactly.

    Args:
      denoiser: ``denoiser(x_t, t) -> logits (N, L, K)``.
      tokens: clean sequences ``x_0``, ``(N, L)``.
      x_t: noised sequences ``(N, L)``.
      t: times in ``(0, 1]``, scalar or ``(N,)``.
      vocab_size: ``K``.
      schedule: a shared :class:`DiscreteSchedule` (default: linear).

    Returns:
      The integrand, shape ``(N,)`` (``<= 0``).

    Example:
        >>> import jax.numpy as jnp, probgen as pg
        >>> uniform = lambda x, t: jnp.zeros(x.shape + (2,))
        >>> value = pg.diffusion.uniform_elbo_integrand(uniform, jnp.array([[0, 1]]), jnp.array([[0, 1]]), 1.0, 2)
        >>> float(value[0]) == 0.0  # at t = 1 the tokens are uniform whatever x_0: nothing to lose
        True
    """
    where = "uniform_elbo_integrand"
    vocab_size = check_vocab_size(vocab_size, where)
    schedule = check_schedule(schedule, where)
    tokens = check_tokens(tokens, vocab_size - 1, where, "tokens", _meaning(vocab_size))
    x_t = check_tokens(x_t, vocab_size - 1, where, "x_t", _meaning(vocab_size))
    if x_t.shape != tokens.shape:
        raise SettingError(f"{where}: tokens and x_t must have the same shape, got {tokens.shape} and {x_t.shape}")
    t = per_sequence_time(check_time(t, where), tokens.shape[0], where)
    _, continuous, _ = _elbo_parts(schedule, vocab_size, where)
    return -continuous(tokens, x_t, denoised_log_probs(denoiser, x_t, t, vocab_size, where), t)


def uniform_diffusion_loss(net: Callable, vocab_size: int, schedule: DiscreteSchedule | None = None,
                           num_steps: int | None = None, stratified: bool = True) -> Callable:
    """Uniform diffusion's negative ELBO as a training loss ``loss(params, key, batch)``.

    The batch mean of minus :func:`uniform_diffusion_elbo` with one draw per sequence.

    Args:
      net: ``net(params, x_t, t) -> logits (N, L, K)``.
      vocab_size, schedule, num_steps, stratified: as in :func:`uniform_diffusion_elbo`
        (``schedule`` may also be a function ``params -> DiscreteSchedule``).

    Returns:
      ``loss(params, key, batch) -> scalar`` with ``batch`` tokens ``(B, L)``.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> net = lambda p, x, t: jnp.broadcast_to(p, x.shape + (3,))
        >>> loss = pg.diffusion.uniform_diffusion_loss(net, vocab_size=3)
        >>> jax.jit(jax.grad(loss))(jnp.zeros(3), jax.random.key(0), jnp.zeros((8, 4), int)).shape
        (3,)
    """
    where = "uniform_diffusion_loss"
    vocab_size = check_vocab_size(vocab_size, where)
    num_steps = check_num_steps(num_steps, where)
    if schedule is not None and not isinstance(schedule, DiscreteSchedule) and not callable(schedule):
        check_schedule(schedule, where)  # raises

    def loss(params, key, batch):
        tokens = check_tokens(batch, vocab_size - 1, where, "batch", _meaning(vocab_size))
        sched = check_schedule(schedule, where, params)
        noise, continuous, step = _elbo_parts(sched, vocab_size, where)
        denoiser = lambda x, t: net(params, x, t)  # noqa: E731
        elbo = elbo_estimate(key, tokens, denoiser, vocab_size, noise, continuous, step, num_steps, stratified, where)
        return -jnp.mean(elbo)

    return loss


def uniform_ancestral(denoiser: Denoiser, vocab_size: int, num_steps: int,
                      schedule: DiscreteSchedule | None = None) -> Kernel:
    """Ancestral sampling of uniform diffusion: ``x_s ~ sum_{x_0} p_theta(x_0 | x_t) q(x_s | x_t, x_0)``.

    Each position is drawn independently from the posterior of the module docstring,
    averaged over ``mu = softmax(denoiser(x_t, t))`` (D3PM's x0-parameterization). The last
    step (to ``t = 0``) draws ``x_0`` from ``mu``. The law of one step is
    :func:`uniform_transition_log_prob`; with the exact denoiser the sampler is exact as
    the steps get fine (the positions of one step are drawn independently).

    Args:
      denoiser: ``denoiser(x_t, t) -> logits (N, L, K)``.
      vocab_size: ``K``.
      num_steps: grid steps from ``t = 1`` to ``t = 0``.
      schedule: a shared :class:`DiscreteSchedule` (default: linear).

    Returns:
      A :class:`probgen.Kernel` with ``init(x_1) -> IntegratorState(x_1, t=1, step=0)``; draw
      ``x_1`` uniformly (``jax.random.randint(key, (N, L), 0, K)``).

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> only_one = lambda x, t: jnp.where(jnp.arange(3) == 1, 0.0, -jnp.inf) * jnp.ones(x.shape + (3,))
        >>> k = pg.diffusion.uniform_ancestral(only_one, 3, num_steps=5)
        >>> pg.run(k, jax.random.key(0), k.init(jnp.array([[0, 2, 1]])), 5)[0].x.tolist()
        [[1, 1, 1]]
    """
    where = "uniform_ancestral"
    vocab_size = check_vocab_size(vocab_size, where)
    schedule = check_schedule(schedule, where)
    refuse_per_class(schedule, vocab_size, where)

    def move(key, x, t, s, step):
        log_probs = denoised_log_probs(denoiser, x, t, vocab_size, where)
        num = x.shape[0]
        probs = _reverse_probs(schedule, x, jnp.exp(log_probs), per_sequence_time(t, num, where),
                               per_sequence_time(s, num, where, "s"), vocab_size)
        return jax.random.categorical(key, jnp.log(probs), axis=-1).astype(x.dtype)

    return token_kernel(move, num_steps, where, vocab_size - 1, _meaning(vocab_size))


def uniform_transition_log_prob(denoiser: Denoiser, x_t: jax.Array, x_s: jax.Array, t, s, vocab_size: int,
                                schedule: DiscreteSchedule | None = None) -> jax.Array:
    """``log p(x_s | x_t)`` of one :func:`uniform_ancestral` step from ``t`` to ``s < t``, per sequence.

    Args:
      denoiser: ``denoiser(x_t, t) -> logits (N, L, K)``.
      x_t, x_s: tokens ``(N, L)`` in ``[0, K)``.
      t, s: times with ``0 <= s < t <= 1``, scalars or ``(N,)``.
      vocab_size: ``K``.
      schedule: a shared :class:`DiscreteSchedule` (default: linear).

    Returns:
      Log-probabilities, shape ``(N,)``.

    Example:
        >>> import jax.numpy as jnp, probgen as pg
        >>> uniform = lambda x, t: jnp.zeros(x.shape + (2,))
        >>> lp = pg.diffusion.uniform_transition_log_prob(uniform, jnp.array([[0, 1]]), jnp.array([[1, 1]]),
        ...                                                0.5, 0.0, vocab_size=2)
        >>> round(float(jnp.exp(lp[0])), 4)  # the last step draws x_0 from the uniform denoiser
        0.25
    """
    where = "uniform_transition_log_prob"
    vocab_size = check_vocab_size(vocab_size, where)
    schedule = check_schedule(schedule, where)
    refuse_per_class(schedule, vocab_size, where)
    x_t, x_s, t, s = check_transition(x_t, x_s, t, s, vocab_size - 1, where, _meaning(vocab_size))
    log_probs = denoised_log_probs(denoiser, x_t, t, vocab_size, where)
    probs = _reverse_probs(schedule, x_t, jnp.exp(log_probs), t, s, vocab_size)
    return jnp.sum(jnp.log(gather_class(probs, x_s)), axis=-1)

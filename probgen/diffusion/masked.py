"""Masked (absorbing-state) discrete diffusion: forward masking, ELBOs, samplers and their transition law.

The forward process masks each token of ``x_0`` independently: at time ``t`` a token of
clean value ``k`` is still clean with probability ``alpha_t`` (``alpha_{t,k}`` for a
per-token-class schedule) and is the mask id ``K`` otherwise (Austin et al. 2021, D3PM;
Shi et al. 2024, MD4; Sahoo et al. 2024). The reverse model unmasks: a masked token at
``t`` is, at ``s < t``, the clean value ``j`` with probability ``mu_j a_j`` where
``mu = softmax(denoiser(x_t, t))`` and ``a_j = (alpha_{s,j} - alpha_{t,j}) / (1 - alpha_{t,j})``,
and is still masked otherwise; clean tokens are copied ("carry-over unmasking").

The continuous-time ELBO (MD4, and its GenMD4 form for per-class schedules) is, per sequence,

``ELBO(x_0) = -int_0^1 E_{q(x_t|x_0)} sum_{l masked} [ sum_j mu_j lam_j - lam_k - lam_k log mu_k ] dt``

with ``k = x_0^l`` and ``lam = -alpha'_t / (1 - alpha_t)``; for one schedule shared by all
tokens the bracket is ``-lam log mu_k``, a weighted cross-entropy over the masked positions.
With a shared schedule and the exact denoiser (the posterior marginal of each masked
position given the unmasked ones, which then does not depend on ``t``) it equals
``log p(x_0)`` for every schedule: averaged over ``t``
it is the any-order autoregressive log-likelihood, the same for every order. The
discrete-time ELBO with ``T`` steps sums the exact per-step KLs and is below
``log p_T(x_0)``, the likelihood of the ``T``-step ancestral sampler.

Example:
    >>> import jax, jax.numpy as jnp, probgen as pg
    >>> denoiser = lambda x, t: jnp.zeros(x.shape + (4,))  # uniform over 4 tokens
    >>> kernel = pg.diffusion.masked_ancestral(denoiser, vocab_size=4, num_steps=8)
    >>> final, _ = pg.run(kernel, jax.random.key(0), kernel.init(pg.diffusion.all_masked(5, 6, 4)), 8)
    >>> final.x.shape, bool(jnp.all(final.x < 4))
    ((5, 6), True)
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jax.scipy.special import xlogy

from probgen.core.errors import SettingError
from probgen.core.validation import check
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
    is_per_class,
    per_class,
    per_sequence_time,
    token_kernel,
)
from probgen.kernels import Kernel

Denoiser = Callable[[jax.Array, jax.Array], jax.Array]

TOPK_ORDERS = ("random", "confidence")


def _clean_meaning(vocab_size: int) -> str:
    return f"clean tokens of a vocabulary of {vocab_size}"


def _masked_meaning(vocab_size: int) -> str:
    return f"{vocab_size} clean tokens and the mask id {vocab_size}"


def all_masked(num_sequences: int, length: int, vocab_size: int) -> jax.Array:
    """The starting point of masked sampling: ``num_sequences`` sequences of ``length`` mask ids ``K``.

    Example:
        >>> import probgen as pg
        >>> pg.diffusion.all_masked(2, 3, vocab_size=5).tolist()
        [[5, 5, 5], [5, 5, 5]]
    """
    vocab_size = check_vocab_size(vocab_size, "all_masked")
    return jnp.full((num_sequences, length), vocab_size, jnp.int32)


def _mask_with(key, tokens, t, schedule, vocab_size):
    """Mask each token with probability ``1 - alpha_t`` of its class; ``t`` of shape ``(N,)``."""
    noise = gather_class(per_class(schedule, "noise_level", t, vocab_size), tokens)
    masked = jax.random.uniform(key, tokens.shape, noise.dtype) < noise
    return jnp.where(masked, vocab_size, tokens)


def mask_tokens(key: jax.Array, tokens: jax.Array, t, vocab_size: int,
                schedule: DiscreteSchedule | None = None) -> jax.Array:
    """Draw ``x_t ~ q(x_t | x_0)``: each token is masked (set to ``K``) with probability ``1 - alpha_t``.

    Args:
      key: PRNG key.
      tokens: clean tokens ``(N, L)`` with ids in ``[0, K)``.
      t: a time in ``[0, 1]``, scalar or one per sequence ``(N,)``.
      vocab_size: ``K``.
      schedule: a :class:`DiscreteSchedule` (default: linear).

    Returns:
      ``x_t``, int tokens ``(N, L)`` in ``[0, K]``.

    Raises:
      ValidationError: a token id outside ``[0, K)`` or ``t`` outside ``[0, 1]`` (now when the
        values are known, under ``pg.validate`` when traced).

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> x_t = pg.diffusion.mask_tokens(jax.random.key(0), jnp.zeros((1000, 4), int), 0.3, vocab_size=3)
        >>> round(float(jnp.mean(x_t == 3)), 1)
        0.3
    """
    vocab_size = check_vocab_size(vocab_size, "mask_tokens")
    tokens = check_tokens(tokens, vocab_size - 1, "mask_tokens", "tokens", _clean_meaning(vocab_size))
    t = per_sequence_time(check_time(t, "mask_tokens"), tokens.shape[0], "mask_tokens")
    return _mask_with(key, tokens, t, check_schedule(schedule, "mask_tokens"), vocab_size)


def _continuous_loss(schedule, vocab_size, shared):
    """Minus the ELBO integrand at ``t`` (per sequence), given ``x_t`` and the denoiser's log-probs."""

    def loss(tokens, x_t, log_probs, t):
        rate = per_class(schedule, "rate", t, vocab_size)  # (N, K)
        rate_clean = gather_class(rate, tokens)  # (N, L)
        log_mu_clean = gather_class(log_probs, tokens)
        per_token = -rate_clean * log_mu_clean
        if not shared:  # GenMD4: sum_j mu_j lam_j - lam_k, zero for a shared schedule
            per_token = per_token + jnp.sum(jnp.exp(log_probs) * rate[:, None, :], -1) - rate_clean
        return jnp.sum(jnp.where(x_t == vocab_size, per_token, 0.0), axis=-1)

    return loss


def _unmask_probs(schedule, t, s, vocab_size):
    """``(a, keep)`` per class: the probability that a masked token unmasks between ``t`` and ``s``
    (``a = (alpha_s - alpha_t) / (1 - alpha_t)``) and that it stays masked (``1 - a``)."""
    noise_t = per_class(schedule, "noise_level", t, vocab_size)
    noise_s = per_class(schedule, "noise_level", s, vocab_size)
    return (noise_t - noise_s) / noise_t, noise_s / noise_t


def _step_loss(schedule, vocab_size, shared):
    """The exact KL(q(x_s | x_t, x_0) || p(x_s | x_t)) of one step (per sequence)."""

    def loss(tokens, x_t, log_probs, t, s):
        unmask, keep = _unmask_probs(schedule, t, s, vocab_size)  # (N, K)
        unmask_clean, keep_clean = gather_class(unmask, tokens), gather_class(keep, tokens)
        log_mu_clean = gather_class(log_probs, tokens)
        per_token = jnp.where(unmask_clean > 0, -unmask_clean * log_mu_clean, 0.0)
        if not shared:  # the "still masked" outcome; its KL term vanishes for a shared schedule
            stay = jnp.sum(jnp.exp(log_probs) * keep[:, None, :], -1)
            per_token = per_token + xlogy(keep_clean, keep_clean) - xlogy(keep_clean, stay)
        return jnp.sum(jnp.where(x_t == vocab_size, per_token, 0.0), axis=-1)

    return loss


def _elbo_parts(schedule, vocab_size, where):
    shared = not is_per_class(schedule, vocab_size, where)

    def noise(key, tokens, t):
        return _mask_with(key, tokens, t, schedule, vocab_size)

    return noise, _continuous_loss(schedule, vocab_size, shared), _step_loss(schedule, vocab_size, shared)


def masked_diffusion_elbo(key: jax.Array, denoiser: Denoiser, tokens: jax.Array, vocab_size: int,
                          schedule: DiscreteSchedule | None = None, num_steps: int | None = None,
                          num_samples: int = 1, stratified: bool = True) -> jax.Array:
    """Unbiased estimate of each sequence's masked-diffusion ELBO, a lower bound on ``log p(x_0)``.

    Continuous time (``num_steps=None``, MD4): ``t ~ U(0, 1]``, ``x_t ~ q(x_t | x_0)``,
    and the integrand ``sum_{l masked} lam_t log mu(x_0^l)`` with ``lam_t = -alpha'_t/(1 - alpha_t)``
    (the GenMD4 form for a per-class schedule, see the module docstring). Discrete time
    (``num_steps=T``): ``T`` times the exact KL of a uniformly drawn step of the grid
    ``t_i = 1 - i/T`` (an unbiased estimate of the sum of the ``T`` step KLs; the prior and
    reconstruction terms are 0 since ``alpha_1 = 0`` and ``alpha_0 = 1``).

    Args:
      key: PRNG key.
      denoiser: ``denoiser(x_t, t) -> logits (N, L, K)``, ``t`` of shape ``(N,)``.
      tokens: clean sequences ``(N, L)``.
      vocab_size: ``K`` (the mask id).
      schedule: a :class:`DiscreteSchedule` (default: linear).
      num_steps: ``None`` for the continuous-time ELBO, else the number of steps ``T``.
      num_samples: independent draws averaged per sequence.
      stratified: spread the ``N`` times of one draw evenly over ``[0, 1)`` (each still uniform).

    Returns:
      The ELBO estimates, shape ``(N,)``, in nats.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> uniform = lambda x, t: jnp.zeros(x.shape + (2,))
        >>> elbo = jax.jit(lambda key: pg.diffusion.masked_diffusion_elbo(
        ...     key, uniform, jnp.zeros((3, 5), int), 2, num_samples=2000))
        >>> jnp.allclose(elbo(jax.random.key(0)), 5 * jnp.log(0.5), atol=0.3).item()  # log p = 5 log 1/2
        True
    """
    where = "masked_diffusion_elbo"
    vocab_size = check_vocab_size(vocab_size, where)
    num_steps = check_num_steps(num_steps, where)
    tokens = check_tokens(tokens, vocab_size - 1, where, "tokens", _clean_meaning(vocab_size))
    schedule = check_schedule(schedule, where)
    noise, continuous, step = _elbo_parts(schedule, vocab_size, where)

    def one_draw(k, x):
        return elbo_estimate(k, x, denoiser, vocab_size, noise, continuous, step, num_steps, stratified, where)

    return averaged_elbo(key, tokens, num_samples, one_draw, where)


def masked_elbo_integrand(denoiser: Denoiser, tokens: jax.Array, x_t: jax.Array, t, vocab_size: int,
                          schedule: DiscreteSchedule | None = None) -> jax.Array:
    """The continuous-time ELBO's integrand at ``(x_0, x_t, t)``: ``ELBO = int_0^1 E_{q(x_t|x_0)}[this] dt``.

    ``sum_{l masked} [lam_k log mu_k + lam_k - sum_j mu_j lam_j]`` with ``k = x_0^l``,
    ``lam = -alpha'_t/(1 - alpha_t)`` and ``mu = softmax(denoiser(x_t, t))`` (for a shared
    schedule: ``lam_t sum_{l masked} log mu_k``). :func:`masked_diffusion_elbo` averages it
    at random ``(t, x_t)``; on a small problem, enumerating ``x_t`` and integrating ``t`` by
    quadrature gives the ELBO to quadrature accuracy.

    Args:
      denoiser: ``denoiser(x_t, t) -> logits (N, L, K)``.
      tokens: clean sequences ``x_0``, ``(N, L)``.
      x_t: their noised versions ``(N, L)`` (clean tokens equal to ``x_0``, or the mask ``K``).
      t: times in ``(0, 1]``, scalar or ``(N,)``.
      vocab_size: ``K``.
      schedule: a :class:`DiscreteSchedule` (default: linear).

    Returns:
      The integrand, shape ``(N,)`` (``<= 0`` for a shared schedule).

    Example:
        >>> import jax.numpy as jnp, probgen as pg
        >>> uniform = lambda x, t: jnp.zeros(x.shape + (2,))
        >>> value = pg.diffusion.masked_elbo_integrand(uniform, jnp.array([[0, 1]]), jnp.array([[2, 1]]), 0.5, 2)
        >>> round(float(value[0]), 4)  # (1/t) log(1/2) for the one masked token
        -1.3863
    """
    where = "masked_elbo_integrand"
    vocab_size = check_vocab_size(vocab_size, where)
    schedule = check_schedule(schedule, where)
    tokens = check_tokens(tokens, vocab_size - 1, where, "tokens", _clean_meaning(vocab_size))
    x_t = check_tokens(x_t, vocab_size, where, "x_t", _masked_meaning(vocab_size))
    if x_t.shape != tokens.shape:
        raise SettingError(f"{where}: tokens and x_t must have the same shape, got {tokens.shape} and {x_t.shape}")
    t = per_sequence_time(check_time(t, where), tokens.shape[0], where)
    _, continuous, _ = _elbo_parts(schedule, vocab_size, where)
    return -continuous(tokens, x_t, denoised_log_probs(denoiser, x_t, t, vocab_size, where), t)


def masked_diffusion_loss(net: Callable, vocab_size: int, schedule=None, num_steps: int | None = None,
                          stratified: bool = True) -> Callable:
    """Masked diffusion's negative ELBO as a training loss ``loss(params, key, batch)`` (MD4).

    The loss is the batch mean of minus :func:`masked_diffusion_elbo` with one draw per
    sequence (nats per sequence): ``pg.fit(loss, params, optimizer, key, data=tokens)``.

    Args:
      net: ``net(params, x_t, t) -> logits (N, L, K)``.
      vocab_size: ``K``.
      schedule: a :class:`DiscreteSchedule` (default: linear), or a function
        ``params -> DiscreteSchedule`` for a learned schedule (GenMD4: e.g.
        ``lambda p: polynomial_schedule(jnp.exp(p["log_w"]))`` with ``log_w`` of shape ``(K,)``).
      num_steps: ``None`` (continuous time) or the number of steps of the discrete-time ELBO.
      stratified: low-discrepancy times across the batch.

    Returns:
      ``loss(params, key, batch) -> scalar`` with ``batch`` clean tokens ``(B, L)``.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> net = lambda p, x, t: jnp.broadcast_to(p, x.shape + (3,))
        >>> loss = pg.diffusion.masked_diffusion_loss(net, vocab_size=3)
        >>> jax.grad(loss)(jnp.zeros(3), jax.random.key(0), jnp.zeros((8, 4), int)).shape
        (3,)
    """
    where = "masked_diffusion_loss"
    vocab_size = check_vocab_size(vocab_size, where)
    num_steps = check_num_steps(num_steps, where)
    if schedule is not None and not isinstance(schedule, DiscreteSchedule) and not callable(schedule):
        check_schedule(schedule, where)  # raises

    def loss(params, key, batch):
        tokens = check_tokens(batch, vocab_size - 1, where, "batch", _clean_meaning(vocab_size))
        sched = check_schedule(schedule, where, params)
        noise, continuous, step = _elbo_parts(sched, vocab_size, where)
        denoiser = lambda x, t: net(params, x, t)  # noqa: E731
        elbo = elbo_estimate(key, tokens, denoiser, vocab_size, noise, continuous, step, num_steps, stratified, where)
        return -jnp.mean(elbo)

    return loss


def _check_sampler(where: str, vocab_size, schedule) -> tuple[int, DiscreteSchedule]:
    return check_vocab_size(vocab_size, where), check_schedule(schedule, where)


def _check_no_mask_left(x: jax.Array, step: jax.Array, num_steps: int, vocab_size: int, where: str) -> None:
    check(jnp.all(x != vocab_size) | (step != num_steps - 1),
          f"{where}: mask tokens remain after the last step (the schedule's noise_level(0) must be 0)")


def masked_ancestral(denoiser: Denoiser, vocab_size: int, num_steps: int,
                     schedule: DiscreteSchedule | None = None) -> Kernel:
    """Ancestral unmasking with the exact reverse transition ``x_s ~ p(x_s | x_t)`` of masked diffusion.

    Each step draws ``x0_hat ~ softmax(denoiser(x_t, t))`` for every position and unmasks a
    masked position to ``x0_hat`` with probability ``(alpha_s - alpha_t) / (1 - alpha_t)`` (of
    the class ``x0_hat`` for a per-class schedule); clean tokens are copied. This is
    ``q(x_s | x_t, x_0)`` marginalized over ``p_theta(x_0 | x_t)``, so
    :func:`masked_transition_log_prob` is the law of one step. The last step reaches
    ``t = 0`` where ``alpha = 1``: every token is unmasked. Positions are drawn independently
    given ``x_t``, so with the exact denoiser the sampler is exact only as the steps get
    fine enough that two tokens rarely unmask in one step (or one token per step with
    :func:`masked_topk_unmasking`); its exact output law is computable with
    :func:`masked_transition_log_prob`.

    Args:
      denoiser: ``denoiser(x_t, t) -> logits (N, L, K)``.
      vocab_size: ``K``.
      num_steps: grid steps from ``t = 1`` to ``t = 0`` (the kernel's horizon).
      schedule: a :class:`DiscreteSchedule` (default: linear); per-class schedules allowed.

    Returns:
      A :class:`probgen.Kernel` with ``init(x) -> IntegratorState(x, t=1, step=0)``; ``x`` is
      typically :func:`all_masked` (tokens already clean stay fixed: inpainting).

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> always_two = lambda x, t: jnp.where(jnp.arange(3) == 2, 0.0, -jnp.inf) * jnp.ones(x.shape + (3,))
        >>> k = pg.diffusion.masked_ancestral(always_two, 3, num_steps=4)
        >>> pg.run(k, jax.random.key(0), k.init(jnp.array([[3, 0, 3]])), 4)[0].x.tolist()
        [[2, 0, 2]]
    """
    where = "masked_ancestral"
    vocab_size, schedule = _check_sampler(where, vocab_size, schedule)
    is_per_class(schedule, vocab_size, where)

    def move(key, x, t, s, step):
        k_value, k_unmask = jax.random.split(key)
        log_probs = denoised_log_probs(denoiser, x, t, vocab_size, where)
        x0_hat = jax.random.categorical(k_value, log_probs, axis=-1).astype(x.dtype)
        unmask, _ = _unmask_probs(schedule, t, s, vocab_size)  # (K,); exactly 1 at s = 0
        chance = unmask[x0_hat]
        x_new = jnp.where((x == vocab_size) & (jax.random.uniform(k_unmask, x.shape, chance.dtype) < chance),
                          x0_hat, x)
        _check_no_mask_left(x_new, step, num_steps, vocab_size, where)
        return x_new

    return token_kernel(move, num_steps, where, vocab_size, _masked_meaning(vocab_size))


def masked_topk_unmasking(denoiser: Denoiser, vocab_size: int, num_steps: int,
                          schedule: DiscreteSchedule | None = None, order: str = "random") -> Kernel:
    """Unmask a set number of positions per step, chosen at random or by confidence.

    With ``n`` masked positions at ``t``, a step to ``s`` keeps ``round(n (1 - alpha_s) /
    (1 - alpha_t))`` of them masked (the ancestral step's expected count, rounded) and
    unmasks the others, each to a draw from ``softmax(denoiser(x_t, t))``. The positions are
    chosen uniformly at random (``order="random"``) or as those with the largest
    ``max_j mu_j`` (``order="confidence"``, ties to the lower position). Both choices depend
    on the revealed tokens only, never on the values drawn, so with one token per step
    (``num_steps = length`` on the linear schedule from all-masked) and the exact denoiser
    the sampler is exact: it is any-order autoregressive sampling. Several tokens per step
    (fewer steps) draw them independently and are biased (τ-leaping-like, Campbell et al. 2022).

    Args:
      denoiser: ``denoiser(x_t, t) -> logits (N, L, K)``.
      vocab_size: ``K``.
      num_steps: grid steps from ``t = 1`` to ``t = 0``; the last unmasks all that is left.
      schedule: a shared :class:`DiscreteSchedule` (default: linear) setting the counts.
      order: ``"random"`` or ``"confidence"``.

    Returns:
      A :class:`probgen.Kernel` like :func:`masked_ancestral`'s.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> k = pg.diffusion.masked_topk_unmasking(lambda x, t: jnp.zeros(x.shape + (2,)), 2, 3, order="confidence")
        >>> _, (states, _) = pg.run(k, jax.random.key(0), k.init(pg.diffusion.all_masked(1, 3, 2)), 3, keep="all")
        >>> jnp.sum(states.x == 2, axis=-1).ravel().tolist()  # masked positions left after each step
        [2, 1, 0]
    """
    where = "masked_topk_unmasking"
    vocab_size, schedule = _check_sampler(where, vocab_size, schedule)
    if is_per_class(schedule, vocab_size, where):
        raise SettingError(f"{where}: the number of tokens to unmask needs one schedule for all tokens; got a "
                           "per-token-class schedule (use masked_ancestral)")
    if order not in TOPK_ORDERS:
        raise SettingError(f"{where}: order must be one of {TOPK_ORDERS}, got {order!r}")

    def move(key, x, t, s, step):
        k_order, k_value = jax.random.split(key)
        log_probs = denoised_log_probs(denoiser, x, t, vocab_size, where)
        masked = x == vocab_size
        num_masked = jnp.sum(masked, axis=-1)
        keep = schedule.noise_level(s) / schedule.noise_level(t)
        num_unmask = num_masked - jnp.round(num_masked * keep).astype(num_masked.dtype)
        if order == "random":
            score = jax.random.uniform(k_order, x.shape, log_probs.dtype)
        else:
            score = jnp.max(log_probs, axis=-1)
        score = jnp.where(masked, score, -jnp.inf)
        rank = jnp.argsort(jnp.argsort(-score, axis=-1, stable=True), axis=-1, stable=True)
        chosen = masked & (rank < num_unmask[:, None])
        x0_hat = jax.random.categorical(k_value, log_probs, axis=-1).astype(x.dtype)
        x_new = jnp.where(chosen, x0_hat, x)
        _check_no_mask_left(x_new, step, num_steps, vocab_size, where)
        return x_new

    return token_kernel(move, num_steps, where, vocab_size, _masked_meaning(vocab_size))


def masked_transition_log_prob(denoiser: Denoiser, x_t: jax.Array, x_s: jax.Array, t, s, vocab_size: int,
                               schedule: DiscreteSchedule | None = None) -> jax.Array:
    """``log p(x_s | x_t)`` of one :func:`masked_ancestral` step from ``t`` to ``s < t``, per sequence.

    Positions are independent given ``x_t``: a clean token stays (any change has probability
    0); a masked one becomes ``j`` with probability ``mu_j a_j`` and stays masked with
    ``sum_j mu_j (1 - a_j)``, where ``mu = softmax(denoiser(x_t, t))`` and
    ``a_j = (alpha_{s,j} - alpha_{t,j}) / (1 - alpha_{t,j})``. Proposals for SMC and exact
    enumeration of the sampler's output law use it.

    Args:
      denoiser: ``denoiser(x_t, t) -> logits (N, L, K)``.
      x_t, x_s: tokens ``(N, L)`` in ``[0, K]``.
      t, s: times with ``0 <= s < t <= 1``, scalars or ``(N,)``.
      vocab_size: ``K``.
      schedule: a :class:`DiscreteSchedule` (default: linear).

    Returns:
      Log-probabilities, shape ``(N,)`` (``-inf`` for an impossible move).

    Example:
        >>> import jax.numpy as jnp, probgen as pg
        >>> uniform = lambda x, t: jnp.zeros(x.shape + (2,))
        >>> lp = pg.diffusion.masked_transition_log_prob(uniform, jnp.array([[2, 0]]), jnp.array([[1, 0]]),
        ...                                               1.0, 0.5, vocab_size=2)
        >>> round(float(jnp.exp(lp[0])), 4)  # unmask (1/2) to the value 1 (1/2)
        0.25
    """
    where = "masked_transition_log_prob"
    vocab_size = check_vocab_size(vocab_size, where)
    schedule = check_schedule(schedule, where)
    x_t, x_s, t, s = check_transition(x_t, x_s, t, s, vocab_size, where, _masked_meaning(vocab_size))
    log_probs = denoised_log_probs(denoiser, x_t, t, vocab_size, where)
    unmask, keep = _unmask_probs(schedule, t, s, vocab_size)  # (N, K)
    value = jnp.minimum(x_s, vocab_size - 1)
    to_value = gather_class(log_probs, value) + jnp.log(gather_class(unmask, value))
    stay_masked = jax.nn.logsumexp(log_probs + jnp.log(keep)[:, None, :], axis=-1)
    from_mask = jnp.where(x_s == vocab_size, stay_masked, to_value)
    from_clean = jnp.where(x_s == x_t, 0.0, -jnp.inf)
    return jnp.sum(jnp.where(x_t == vocab_size, from_mask, from_clean), axis=-1)

"""Discrete flow matching (Gat et al. 2024; Campbell et al. 2024) with the mixture path.

The probability path from a source (all-masked, or uniform tokens) to the data is, per
position, ``p_t(x | x_data) = alpha_t delta_{x_data} + (1 - alpha_t) p_source(x)`` in
probgen's discrete time (``t = 1`` source, ``t = 0`` data; the papers' ``kappa_s`` is
``alpha_{1-s}``). The model is the posterior ``p_theta(x_data^l | x_t)`` (a denoiser,
logits over the ``K`` clean tokens), trained by cross-entropy
(:func:`discrete_flow_loss`). Its generating velocity moves position ``l`` from
``i = x_t^l`` toward ``j`` at rate ``lam_t (mu_j - delta_i(j))`` with
``lam_t = -alpha'_t / (1 - alpha_t)`` (``kappa'/(1 - kappa)``), and
:func:`discrete_flow_euler` takes Euler steps of that jump process: over a step of length
``h`` each position jumps to a draw from ``mu`` with probability ``h lam_t`` (the
``"exact"`` method uses ``(alpha_s - alpha_t)/(1 - alpha_t)``, the exact step of the path given
the posterior, which for the masked source is :func:`masked_ancestral`).

With the masked source the mask id is ``K`` and clean tokens never change (the posterior
of a revealed token is the token itself). With the uniform source the path is uniform
diffusion's marginal, so the same denoiser serves both.

Example:
    >>> import jax, jax.numpy as jnp, probgen as pg
    >>> k = pg.diffusion.discrete_flow_euler(lambda x, t: jnp.zeros(x.shape + (3,)), 3, num_steps=10)
    >>> final, _ = pg.run(k, jax.random.key(0), k.init(pg.diffusion.all_masked(4, 5, 3)), 10)
    >>> bool(jnp.all(final.x < 3))
    True
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from probgen.core.checks import static_int
from probgen.core.errors import SettingError
from probgen.core.validation import check
from probgen.diffusion.discrete import (
    DiscreteSchedule,
    check_schedule,
    check_transition,
    check_tokens,
    check_vocab_size,
    denoised_log_probs,
    gather_class,
    refuse_per_class,
    time_dtype,
    token_kernel,
    uniform_fractions,
)
from probgen.kernels import Kernel, grid_time
from probgen.mc.checks import concrete_value

Denoiser = Callable[[jax.Array, jax.Array], jax.Array]

SOURCES = ("mask", "uniform")
FLOW_METHODS = ("euler", "exact")


def _check_source(source: str, where: str) -> None:
    if source not in SOURCES:
        raise SettingError(f"{where}: source must be one of {SOURCES}, got {source!r}")


def _check_method(method: str, where: str) -> None:
    if method not in FLOW_METHODS:
        raise SettingError(f"{where}: method must be one of {FLOW_METHODS}, got {method!r}")


def _upper(source: str, vocab_size: int) -> int:
    return vocab_size if source == "mask" else vocab_size - 1


def _meaning(source: str, vocab_size: int) -> str:
    if source == "mask":
        return f"{vocab_size} clean tokens and the mask id {vocab_size}"
    return f"tokens of a vocabulary of {vocab_size}; the uniform source has no mask id"


def _noise(key, tokens, t, schedule, vocab_size, source):
    """``x_t ~ p_t(. | x_data)``: each token is replaced by the source with probability ``1 - alpha_t``."""
    k_which, k_value = jax.random.split(key)
    noise = schedule.noise_level(t)[:, None]
    replace = jax.random.uniform(k_which, tokens.shape, noise.dtype) < noise
    if source == "mask":
        fresh = jnp.full_like(tokens, vocab_size)
    else:
        fresh = jax.random.randint(k_value, tokens.shape, 0, vocab_size, tokens.dtype)
    return jnp.where(replace, fresh, tokens)


def discrete_flow_loss(net: Callable, vocab_size: int, schedule: DiscreteSchedule | None = None,
                       source: str = "mask", stratified: bool = True) -> Callable:
    """The discrete flow matching loss: cross-entropy of the posterior ``p_theta(x_data | x_t)``.

    ``t ~ U(0, 1]``, ``x_t ~ p_t(. | x_data)`` on the mixture path, and the loss is
    ``-sum_l log mu(x_data^l)`` summed over the positions that carry information (the
    masked ones for the masked source, all of them for the uniform source), averaged over
    the batch (Gat et al. 2024). Unlike :func:`masked_diffusion_loss` it does not
    weight by ``lam_t``: it is not an ELBO, its minimizer is the same exact posterior.

    Args:
      net: ``net(params, x_t, t) -> logits (N, L, K)``.
      vocab_size: ``K``.
      schedule: a shared :class:`DiscreteSchedule` (default: linear, ``kappa_s = s``).
      source: ``"mask"`` or ``"uniform"``.
      stratified: low-discrepancy times across the batch.

    Returns:
      ``loss(params, key, batch) -> scalar`` with ``batch`` clean tokens ``(B, L)``.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> net = lambda p, x, t: jnp.broadcast_to(p, x.shape + (3,))
        >>> loss = pg.diffusion.discrete_flow_loss(net, 3, source="uniform")
        >>> round(float(loss(jnp.zeros(3), jax.random.key(0), jnp.zeros((4, 2), int))), 4)  # 2 log 3
        2.1972
    """
    where = "discrete_flow_loss"
    vocab_size = check_vocab_size(vocab_size, where)
    _check_source(source, where)
    schedule = check_schedule(schedule, where)
    refuse_per_class(schedule, vocab_size, where)

    def loss(params, key, batch):
        tokens = check_tokens(batch, vocab_size - 1, where, "batch", f"clean tokens of a vocabulary of {vocab_size}")
        k_time, k_noise = jax.random.split(key)
        t = 1.0 - uniform_fractions(k_time, tokens.shape[0], stratified)
        x_t = _noise(k_noise, tokens, t, schedule, vocab_size, source)
        log_probs = denoised_log_probs(lambda x, s: net(params, x, s), x_t, t, vocab_size, where)
        cross_entropy = -gather_class(log_probs, tokens)
        if source == "mask":
            cross_entropy = jnp.where(x_t == vocab_size, cross_entropy, 0.0)
        return jnp.mean(jnp.sum(cross_entropy, axis=-1))

    return loss


def _jump_probability(schedule, t, s, method):
    """The probability that a position jumps (to a posterior draw) on the step from ``t`` to ``s``.

    At ``s = 0`` the path is at the data (``alpha_0 = 1``) and every position takes its draw.
    """
    if method == "euler":
        jump = (t - s) * schedule.rate(t)
    else:
        noise_t = schedule.noise_level(t)
        jump = (noise_t - schedule.noise_level(s)) / noise_t
    return jnp.where(s == 0, 1.0, jump)


def _check_euler_steps(schedule, num_steps: int, where: str) -> None:
    """Euler's jump probability ``h lam_t`` must not exceed 1 on any step but the last."""
    if num_steps < 2:
        return
    index = jnp.arange(num_steps - 1)
    t = grid_time(index, num_steps, 1.0, 0.0, time_dtype())
    s = grid_time(index + 1, num_steps, 1.0, 0.0, time_dtype())
    jump = (t - s) * schedule.rate(t)
    message = (f"{where}: the Euler step's jump probability h * lam_t = {{value}} exceeds 1 with num_steps="
               f"{num_steps} on this schedule; use more steps or method='exact'")
    known = concrete_value(jump)
    if known is not None:
        if np.any(known > 1.0 + 1e-6):
            raise SettingError(message.format(value=float(np.max(known))))
    else:
        check(jnp.all(jump <= 1.0 + 1e-6), message, value=jnp.max(jump))


def discrete_flow_euler(denoiser: Denoiser, vocab_size: int, num_steps: int,
                        schedule: DiscreteSchedule | None = None, source: str = "mask",
                        method: str = "euler") -> Kernel:
    """Sample discrete flow matching: Euler steps of the jump process ``u_t = lam_t (mu - delta_{x_t})``.

    From ``t`` to ``s = t - h``, each position (each masked position for the masked source)
    draws ``x_hat ~ mu = softmax(denoiser(x_t, t))`` and takes it with probability ``h lam_t``
    (``method="euler"``, Gat et al. 2024) or ``(alpha_s - alpha_t)/(1 - alpha_t)``
    (``method="exact"``); on the last step, to ``t = 0``, with probability 1 (the path is at
    the data), so the masked source ends with no mask. The Euler step needs
    ``h lam_t <= 1``: the kernel checks it on the grid when built (the polynomial schedule
    ``w > 2`` never satisfies it; use ``"exact"``). Positions of one step move independently,
    so with the exact posterior the sampler is exact as ``num_steps`` grows; the law of one
    step is :func:`discrete_flow_transition_log_prob`.

    Args:
      denoiser: ``denoiser(x_t, t) -> logits (N, L, K)``.
      vocab_size: ``K``.
      num_steps: grid steps from ``t = 1`` to ``t = 0``.
      schedule: a shared :class:`DiscreteSchedule` (default: linear, ``kappa_s = s``).
      source: ``"mask"`` (start from :func:`all_masked`) or ``"uniform"`` (uniform tokens).
      method: ``"euler"`` or ``"exact"``.

    Returns:
      A :class:`probgen.Kernel` with ``init(x) -> IntegratorState(x, t=1, step=0)``.

    Raises:
      SettingError: an unknown source or method, or Euler jump probabilities above 1.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> k = pg.diffusion.discrete_flow_euler(lambda x, t: jnp.zeros(x.shape + (2,)), 2, 4, source="uniform")
        >>> s, info = pg.run(k, jax.random.key(0), k.init(jnp.zeros((3, 2), int)), 4)
        >>> s.x.shape, float(info.time)
        ((3, 2), 0.0)
    """
    where = "discrete_flow_euler"
    vocab_size = check_vocab_size(vocab_size, where)
    _check_source(source, where)
    _check_method(method, where)
    schedule = check_schedule(schedule, where)
    refuse_per_class(schedule, vocab_size, where)
    num_steps = static_int(num_steps, "num_steps", where)
    if method == "euler":
        _check_euler_steps(schedule, num_steps, where)

    def move(key, x, t, s, step):
        k_value, k_jump = jax.random.split(key)
        log_probs = denoised_log_probs(denoiser, x, t, vocab_size, where)
        x_hat = jax.random.categorical(k_value, log_probs, axis=-1).astype(x.dtype)
        jump = _jump_probability(schedule, t, s, method)
        moves = jax.random.uniform(k_jump, x.shape, jnp.result_type(jump)) < jump
        if source == "mask":
            moves = moves & (x == vocab_size)
        return jnp.where(moves, x_hat, x)

    return token_kernel(move, num_steps, where, _upper(source, vocab_size), _meaning(source, vocab_size))


def discrete_flow_transition_log_prob(denoiser: Denoiser, x_t: jax.Array, x_s: jax.Array, t, s, vocab_size: int,
                                      schedule: DiscreteSchedule | None = None, source: str = "mask",
                                      method: str = "euler") -> jax.Array:
    """``log p(x_s | x_t)`` of one :func:`discrete_flow_euler` step from ``t`` to ``s < t``, per sequence.

    Per position, with jump probability ``c`` (see :func:`discrete_flow_euler`) and
    ``mu = softmax(denoiser(x_t, t))``: ``p(x_s = j) = (1 - c) delta_{x_t}(j) + c mu_j``
    (for the masked source only at masked positions; clean tokens stay).

    Args:
      denoiser: ``denoiser(x_t, t) -> logits (N, L, K)``.
      x_t, x_s: tokens ``(N, L)``.
      t, s: times with ``0 <= s < t <= 1``, scalars or ``(N,)``.
      vocab_size: ``K``.
      schedule, source, method: as in :func:`discrete_flow_euler`.

    Returns:
      Log-probabilities, shape ``(N,)``.

    Example:
        >>> import jax.numpy as jnp, probgen as pg
        >>> uniform = lambda x, t: jnp.zeros(x.shape + (2,))
        >>> lp = pg.diffusion.discrete_flow_transition_log_prob(uniform, jnp.array([[2]]), jnp.array([[2]]),
        ...                                                      1.0, 0.75, vocab_size=2)
        >>> round(float(jnp.exp(lp[0])), 4)  # stays masked: 1 - h lam = 1 - 0.25
        0.75
    """
    where = "discrete_flow_transition_log_prob"
    vocab_size = check_vocab_size(vocab_size, where)
    _check_source(source, where)
    _check_method(method, where)
    schedule = check_schedule(schedule, where)
    refuse_per_class(schedule, vocab_size, where)
    upper, meaning = _upper(source, vocab_size), _meaning(source, vocab_size)
    x_t, x_s, t, s = check_transition(x_t, x_s, t, s, upper, where, meaning)
    log_probs = denoised_log_probs(denoiser, x_t, t, vocab_size, where)
    jump = _jump_probability(schedule, t, s, method)[:, None, None]
    probs = jump * jnp.exp(log_probs)  # (N, L, K)
    if source == "mask":
        stays = jnp.log1p(-jump[..., 0])
        to_value = jnp.log(gather_class(probs, jnp.minimum(x_s, vocab_size - 1)))
        from_mask = jnp.where(x_s == vocab_size, stays, to_value)
        per_position = jnp.where(x_t == vocab_size, from_mask, jnp.where(x_s == x_t, 0.0, -jnp.inf))
    else:
        probs = probs + (1.0 - jump) * jax.nn.one_hot(x_t, vocab_size, dtype=probs.dtype)
        per_position = jnp.log(gather_class(probs, x_s))
    return jnp.sum(per_position, axis=-1)

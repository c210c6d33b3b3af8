"""Discrete diffusion's shared parts: noise schedules ``alpha_t``, the token and denoiser conventions.

Conventions of every discrete model in :mod:`probgen.diffusion` (masked and uniform
diffusion, discrete flow matching):

- Tokens are integer ids of a vocabulary of ``vocab_size = K`` clean tokens; masked
  diffusion adds the mask token, whose id is ``K``. A batch of sequences has shape
  ``(num_sequences, length)``.
- Time runs from ``t = 1`` (pure noise: all masked, or uniform tokens) to ``t = 0`` (data),
  as in the continuous samplers; ``alpha_t`` is the probability that a token is still clean
  at ``t`` (``alpha_0 = 1``, ``alpha_1 = 0``). Discrete flow matching's ``kappa_s`` (data
  at ``s = 1``) is ``alpha_{1 - s}`` here, so one denoiser serves every model.
- A denoiser predicts the clean tokens: ``denoiser(x_t, t) -> logits`` with ``x_t`` of shape
  ``(N, L)``, ``t`` of shape ``(N,)`` and logits ``(N, L, K)`` over the clean vocabulary
  (the mask is never predicted). Training losses take ``net(params, x_t, t)``, the same
  function with its parameters first.

A :class:`DiscreteSchedule` is a NamedTuple of pure functions of ``t``: ``alpha``, its
derivative and ``noise_level = 1 - alpha`` (computed without cancellation near ``t = 0``).
A schedule may be *per token class* (Shi et al. 2024, "Simplified and Generalized Masked
Diffusion for Discrete Data", GenMD4): its functions then return an extra trailing axis of
size ``K``, one schedule for each clean token value.

Example:
    >>> import jax.numpy as jnp, probgen as pg
    >>> schedule = pg.diffusion.cosine_schedule()
    >>> [round(float(schedule.alpha(t)), 4) for t in (0.0, 0.5, 1.0)]
    [1.0, 0.2929, 0.0]
    >>> pg.diffusion.polynomial_schedule(jnp.array([1.0, 2.0, 3.0])).alpha(jnp.array(0.5)).shape
    (3,)
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from probgen.core.checks import static_int
from probgen.core.errors import ArgumentError, SettingError
from probgen.core.numerics import as_float
from probgen.core.validation import ValidationError, check
from probgen.dynamics import IntegratorInfo, IntegratorState, grid_times
from probgen.kernels import Kernel, grid_time
from probgen.mc.checks import concrete_value
from probgen.core.keys import particle_keys


class DiscreteSchedule(NamedTuple):
    """A discrete noise schedule: ``alpha_t``, the probability that a token is still clean at ``t``.

    Each field is a pure function of an array ``t`` returning an array of ``t``'s shape, or
    of shape ``t.shape + (K,)`` for a per-token-class schedule (one ``alpha`` per clean
    token value, MD4's generalized masked diffusion).

    Attributes:
      name: ``"linear"``, ``"cosine"``, ``"polynomial"`` or a name of your own.
      alpha: ``alpha(t)``, decreasing from ``alpha(0) = 1`` to ``alpha(1) = 0``.
      alpha_derivative: ``d alpha / dt``.
      noise_level: ``1 - alpha(t)``, written to stay accurate where ``alpha`` is close to 1
        (and exactly 0 at ``t = 0``, so the samplers end with no noise left).

    Example:
        >>> import jax.numpy as jnp, probgen as pg
        >>> s = pg.diffusion.linear_schedule()
        >>> float(s.alpha(0.25)), float(s.rate(0.25))
        (0.75, 4.0)
    """

    name: str
    alpha: Callable[[jax.Array], jax.Array]
    alpha_derivative: Callable[[jax.Array], jax.Array]
    noise_level: Callable[[jax.Array], jax.Array]

    def rate(self, t) -> jax.Array:
        """``-alpha'(t) / (1 - alpha(t))``: the masking ELBO's weight and the unmasking rate at ``t``."""
        return -self.alpha_derivative(t) / self.noise_level(t)


def linear_schedule() -> DiscreteSchedule:
    """The linear schedule ``alpha_t = 1 - t`` (Austin et al. 2021; Shi et al. 2024).

    Example:
        >>> import probgen as pg
        >>> float(pg.diffusion.linear_schedule().noise_level(0.5))
        0.5
    """
    return DiscreteSchedule(
        "linear",
        alpha=lambda t: 1.0 - jnp.asarray(t),
        alpha_derivative=lambda t: -jnp.ones_like(jnp.asarray(t)),
        noise_level=lambda t: jnp.asarray(t) + 0.0,
    )


def cosine_schedule() -> DiscreteSchedule:
    """MD4's cosine schedule ``alpha_t = 1 - cos(pi/2 (1 - t)) = 1 - sin(pi t / 2)``.

    Example:
        >>> import probgen as pg
        >>> round(float(pg.diffusion.cosine_schedule().alpha(1 / 3)), 4)
        0.5
    """
    half_pi = 0.5 * math.pi
    return DiscreteSchedule(
        "cosine",
        alpha=lambda t: 1.0 - jnp.sin(half_pi * jnp.asarray(t)),
        # sin(pi/2 (1 - t)) rather than cos(pi t / 2): exactly 0 at t = 1 (cos rounds below 0 there)
        alpha_derivative=lambda t: -half_pi * jnp.sin(half_pi * (1.0 - jnp.asarray(t))),
        noise_level=lambda t: jnp.sin(half_pi * jnp.asarray(t)),
    )


def _power(t: jax.Array, exponent: jax.Array) -> jax.Array:
    """``t ** exponent`` for ``t >= 0`` with finite gradients at ``t = 0`` (where the value is 0 for
    a positive exponent, 1 for a zero one)."""
    positive = t > 0
    safe = jnp.where(positive, t, 1.0)
    return jnp.where(positive, jnp.exp(exponent * jnp.log(safe)), jnp.where(exponent == 0, 1.0, 0.0))


def polynomial_schedule(exponent) -> DiscreteSchedule:
    """The polynomial schedule ``alpha_t = 1 - t^w`` (Shi et al. 2024), one ``w`` or one per token class.

    With ``exponent`` of shape ``(K,)`` the schedule is per token class (GenMD4): a token
    whose clean value is ``k`` is masked at ``t`` with probability ``t^{w_k}``. The exponents
    may be traced (learned): build the schedule from the parameters inside the loss, e.g.
    ``schedule=lambda params: polynomial_schedule(jnp.exp(params["log_w"]))``.

    Args:
      exponent: ``w > 0``, a scalar or an array of shape ``(K,)``.

    Returns:
      A :class:`DiscreteSchedule`.

    Raises:
      SettingError: an exponent that is not positive (checked now when known, under
        ``pg.validate`` when traced) or of more than one dimension.

    Example:
        >>> import probgen as pg
        >>> float(pg.diffusion.polynomial_schedule(2.0).alpha(0.5))
        0.75
    """
    w = as_float(exponent)
    if w.ndim > 1:
        raise SettingError(f"polynomial_schedule: exponent must be a scalar or one per token class (K,), "
                           f"got shape {w.shape}")
    message = "polynomial_schedule: exponent must be positive, got {value}"
    known = concrete_value(w)
    if known is not None and not np.all(known > 0):
        raise SettingError(message.format(value=known.tolist()))
    if known is None:
        check(jnp.all(w > 0), message, value=w)

    def shaped(t):
        t = jnp.asarray(t)
        return t[..., None] if w.ndim else t

    def noise_level(t):
        return _power(shaped(t), w)

    def alpha_derivative(t):
        return -w * _power(shaped(t), w - 1.0)

    return DiscreteSchedule("polynomial", lambda t: 1.0 - noise_level(t), alpha_derivative, noise_level)


# ---------------------------------------------------------------------------------------------
# Shared machinery of the discrete modules (masked.py, uniform_discrete.py, discrete_flow.py).


def time_dtype():
    """The floating dtype of discrete models' times: JAX's default float (float64 under x64)."""
    return jnp.result_type(float)


def check_vocab_size(vocab_size, where: str, minimum: int = 1) -> int:
    """``vocab_size`` as a static int, or a :class:`SettingError`."""
    return static_int(vocab_size, "vocab_size", where, minimum=minimum)


def check_schedule(schedule, where: str, params=None) -> DiscreteSchedule:
    """The schedule (default: linear); a function of ``params`` is called with them (a learned schedule)."""
    if schedule is None:
        return linear_schedule()
    if not isinstance(schedule, DiscreteSchedule) and callable(schedule) and params is not None:
        schedule = schedule(params)
    if not isinstance(schedule, DiscreteSchedule):
        raise ArgumentError(f"{where}: schedule must be a pg.diffusion.DiscreteSchedule (or, for a training loss, "
                            f"a function params -> DiscreteSchedule), got {type(schedule).__name__}")
    return schedule


def is_per_class(schedule: DiscreteSchedule, vocab_size: int, where: str) -> bool:
    """Whether ``schedule`` has one ``alpha`` per token class (an error for any other shape)."""
    shape = jax.eval_shape(schedule.alpha, jax.ShapeDtypeStruct((), time_dtype())).shape
    if shape == ():
        return False
    if shape == (vocab_size,):
        return True
    raise SettingError(f"{where}: schedule.alpha(t) for a scalar t must return a scalar (one schedule) or shape "
                       f"({vocab_size},) (one per token class of the vocabulary), got {shape}")


def refuse_per_class(schedule: DiscreteSchedule, vocab_size: int, where: str) -> None:
    """A :class:`SettingError` for a per-token-class schedule where only a shared one makes sense."""
    if is_per_class(schedule, vocab_size, where):
        raise SettingError(f"{where}: a per-token-class schedule is only defined for masked diffusion's ELBO and "
                           "ancestral sampler; use one schedule for all tokens (a scalar exponent)")


def per_class(schedule: DiscreteSchedule, field: str, t: jax.Array, vocab_size: int) -> jax.Array:
    """``schedule.<field>(t)`` for ``t`` of any shape, as an array of shape ``t.shape + (K,)``."""
    value = jnp.asarray(getattr(schedule, field)(t))
    if value.shape == t.shape:
        value = value[..., None]
    return jnp.broadcast_to(value, t.shape + (vocab_size,))


def check_tokens(x, upper: int, where: str, name: str, meaning: str) -> jax.Array:
    """``x`` as an integer array ``(num_sequences, length)`` of ids in ``[0, upper]``.

    Dtype and shape are checked at trace time; the values now when they are known, and at
    run time under ``pg.validate`` when traced.
    """
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.integer):
        raise ArgumentError(f"{where}: {name} must be integer token ids, got dtype {x.dtype}")
    if x.ndim != 2:
        raise SettingError(f"{where}: {name} must have shape (num_sequences, length), got {x.shape}")
    message = f"{where}: {name} must hold token ids in [0, {upper}] ({meaning}), got {{value}}"
    known = concrete_value(x)
    if known is not None:
        bad = (known < 0) | (known > upper)
        if bad.any():
            raise ValidationError(message.format(value=int(known[bad][0])))
    else:
        outside = (x < 0) | (x > upper)
        check(~jnp.any(outside), message, value=jnp.ravel(x)[jnp.argmax(jnp.ravel(outside))])
    return x


def check_time(t, where: str, name: str = "t") -> jax.Array:
    """``t`` as a float array in ``[0, 1]`` (now when known, under ``pg.validate`` when traced)."""
    t = jnp.asarray(t)
    t = t.astype(time_dtype()) if not jnp.issubdtype(t.dtype, jnp.floating) else t
    message = f"{where}: {name} must lie in [0, 1] (1 is noise, 0 is data), got {{value}}"
    known = concrete_value(t)
    if known is not None:
        bad = ~((known >= 0) & (known <= 1))
        if bad.any():
            raise ValidationError(message.format(value=float(np.ravel(known[bad])[0])))
    else:
        outside = ~((t >= 0) & (t <= 1))
        check(~jnp.any(outside), message, value=jnp.ravel(t)[jnp.argmax(jnp.ravel(outside))])
    return t


def check_step_times(t, s, where: str) -> tuple[jax.Array, jax.Array]:
    """A reverse step's times: ``0 <= s < t <= 1`` (now when known, under ``pg.validate`` when traced)."""
    t, s = check_time(t, where, "t"), check_time(s, where, "s")
    message = f"{where}: a reverse step goes from t to an earlier time s < t, got t={{t}}, s={{s}}"
    known_t, known_s = concrete_value(t), concrete_value(s)
    if known_t is not None and known_s is not None:
        if not np.all(known_s < known_t):
            raise ValidationError(message.format(t=known_t.tolist(), s=known_s.tolist()))
    else:
        check(jnp.all(s < t), message, t=t, s=s)
    return t, s


def per_sequence_time(t: jax.Array, num_sequences: int, where: str = "", name: str = "t") -> jax.Array:
    """A scalar or ``(N,)`` time as shape ``(N,)``."""
    if t.ndim > 1 or (t.ndim == 1 and t.shape[0] != num_sequences):
        raise SettingError(f"{where}: {name} must be a scalar or have shape ({num_sequences},) (one per sequence), "
                           f"got {t.shape}")
    return jnp.broadcast_to(t, (num_sequences,))


def check_transition(x_t, x_s, t, s, upper: int, where: str, meaning: str):
    """The arguments of a reverse step's transition log-probability, checked and shaped.

    ``x_t`` and ``x_s``: token arrays of one shape (ids in ``[0, upper]``); ``t`` and ``s``:
    a reverse step's times (``0 <= s < t <= 1``), returned per sequence, shape ``(N,)``.
    """
    x_t = check_tokens(x_t, upper, where, "x_t", meaning)
    x_s = check_tokens(x_s, upper, where, "x_s", meaning)
    if x_t.shape != x_s.shape:
        raise SettingError(f"{where}: x_t and x_s must have the same shape, got {x_t.shape} and {x_s.shape}")
    t, s = check_step_times(t, s, where)
    num = x_t.shape[0]
    return x_t, x_s, per_sequence_time(t, num, where), per_sequence_time(s, num, where, "s")


def denoised_log_probs(denoiser: Callable, x: jax.Array, t: jax.Array, vocab_size: int, where: str) -> jax.Array:
    """``log_softmax`` of ``denoiser(x, t)`` (``t`` per sequence), its shape checked at trace time."""
    logits = denoiser(x, per_sequence_time(jnp.asarray(t), x.shape[0], where))
    expected = x.shape + (vocab_size,)
    if jnp.shape(logits) != expected:
        raise SettingError(
            f"{where}: the denoiser must return logits of shape (num_sequences, length, vocab_size) = {expected} "
            f"over the {vocab_size} clean tokens (the mask is never predicted), got {jnp.shape(logits)}")
    return jax.nn.log_softmax(as_float(logits), axis=-1)


def gather_class(values: jax.Array, tokens: jax.Array) -> jax.Array:
    """``values[..., n, tokens[n, l]]``: a per-sequence ``(N, K)`` or per-token ``(N, L, K)`` array at ``tokens``."""
    if values.ndim == tokens.ndim:  # (N, K) per sequence
        return jnp.take_along_axis(values, tokens, axis=-1)
    return jnp.take_along_axis(values, tokens[..., None], axis=-1)[..., 0]


def uniform_fractions(key: jax.Array, num: int, stratified: bool) -> jax.Array:
    """``num`` draws from ``U[0, 1)``; ``stratified`` spreads them evenly (``(u + i/num) mod 1``,
    each still uniform: the low-discrepancy times of Kingma et al. 2021 and Shi et al. 2024)."""
    dtype = time_dtype()
    if not stratified:
        return jax.random.uniform(key, (num,), dtype)
    return jnp.mod(jax.random.uniform(key, (), dtype) + jnp.arange(num, dtype=dtype) / num, 1.0)


def elbo_estimate(key: jax.Array, tokens: jax.Array, denoiser: Callable, vocab_size: int, noise: Callable,
                  continuous_loss: Callable, step_loss: Callable, num_steps: int | None, stratified: bool,
                  where: str) -> jax.Array:
    """One-draw unbiased estimate of each sequence's ELBO (shape ``(N,)``).

    Continuous time (``num_steps=None``): ``t ~ U(0, 1]``, ``x_t ~ q(x_t | x_0)`` and minus
    ``continuous_loss(tokens, x_t, log_probs, t)`` (the integrand). Discrete time: a step
    ``i ~ U{0..T-1}`` of the grid ``t_i = 1 - i/T`` and minus ``T * step_loss(tokens, x_t,
    log_probs, t_i, t_{i+1})`` (that step's KL), an unbiased estimate of the sum over steps.
    """
    k_time, k_noise = jax.random.split(key)
    num = tokens.shape[0]
    u = uniform_fractions(k_time, num, stratified)
    if num_steps is None:
        t = 1.0 - u  # in (0, 1]: the integrands' weights are finite there
        x_t = noise(k_noise, tokens, t)
        return -continuous_loss(tokens, x_t, denoised_log_probs(denoiser, x_t, t, vocab_size, where), t)
    index = jnp.minimum(jnp.floor(u * num_steps).astype(jnp.int32), num_steps - 1)
    t = grid_time(index, num_steps, 1.0, 0.0, time_dtype())
    s = grid_time(index + 1, num_steps, 1.0, 0.0, time_dtype())
    x_t = noise(k_noise, tokens, t)
    return -num_steps * step_loss(tokens, x_t, denoised_log_probs(denoiser, x_t, t, vocab_size, where), t, s)


def averaged_elbo(key: jax.Array, tokens: jax.Array, num_samples, one_draw: Callable, where: str) -> jax.Array:
    """The mean of ``num_samples`` independent draws of ``one_draw(key, tokens) -> (N,)``."""
    num_samples = static_int(num_samples, "num_samples", where)
    draws = jax.vmap(lambda k: one_draw(k, tokens))(particle_keys(key, num_samples))
    return jnp.mean(draws, axis=0)


def check_num_steps(num_steps, where: str) -> int | None:
    """``None`` (continuous time) or a positive static int."""
    return None if num_steps is None else static_int(num_steps, "num_steps", where)


def token_kernel(move: Callable, num_steps: int, name: str, upper: int, meaning: str) -> Kernel:
    """A fixed-horizon kernel on the grid ``t: 1 -> 0`` over integer tokens.

    The state is ``IntegratorState(x, t, step)`` (``x`` int tokens ``(N, L)``, ``t`` in the
    default float) and the info ``IntegratorInfo(time)``, the layout of the continuous
    samplers; ``move(key, x, t, s, step)`` takes one step from ``t`` to ``s < t``. Times come
    from the integer step (:func:`probgen.dynamics.grid_times`, which also checks the horizon
    under ``pg.validate``).
    """
    num_steps = static_int(num_steps, "num_steps", name)
    times = grid_times(name, num_steps, 1.0, 0.0)

    def init(x) -> IntegratorState:
        x = check_tokens(x, upper, f"{name}.init", "x", meaning)
        return IntegratorState(x, jnp.asarray(1.0, time_dtype()), jnp.zeros((), jnp.int32))

    def step(key, state):
        t, s = times(state.step, state.t.dtype)
        x = move(key, state.x, t, s, state.step)
        return IntegratorState(x, s, state.step + 1), IntegratorInfo(s)

    return Kernel(init, step, horizon=num_steps)

"""The path integral sampler: a learned diffusion sampler for unnormalized densities.

Reference process: ``X_0 = 0``, ``X_{k+1} = X_k + sigma sqrt(h) xi`` on ``K`` steps of
``h = 1/K`` (terminal law ``N(0, sigma^2 I)``). Controlled process: ``X_{k+1} = X_k +
sigma h u(t_k, X_k) + sigma sqrt(h) xi``, one Euler–Maruyama step of
``dX = sigma u dt + sigma dW`` (:func:`probgen.dynamics.euler_maruyama_step`). The importance
weight of a path,
``log w = log pi~(X_K) - log N(X_K; 0, sigma^2) + sum_k [-u.dX_k / sigma + h |u|^2 / 2]``,
is exact in discrete time, so ``E[w] = Z`` with no discretization bias (Zhang & Chen,
2022, "Path Integral Sampler"; Richter & Berner, 2024 for the log-variance loss).

Losses (:func:`pis_reverse_kl`, :func:`pis_log_variance`) are factories returning
``loss(params, key, batch) -> scalar`` (``batch`` ignored) that ``pg.fit`` takes directly:
reverse KL ``-E[log w]`` (reparameterized through the path) and the log-variance
``Var[log w]`` over detached paths (its minimizer is the same optimal control, but it is
not mode seeking).
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from probgen.core.checks import static_int
from probgen.core.numerics import as_float, log_mean_exp
from probgen.dynamics import IntegratorInfo, euler_maruyama_step, grid_times
from probgen.flows.nets import init_mlp, mlp
from probgen.kernels import Kernel, run
from probgen.core.keys import particle_keys

_NUM_FREQ = 4


def _time_features(t):
    t = as_float(t)
    freqs = jnp.arange(1, _NUM_FREQ + 1).astype(t.dtype) * jnp.pi
    return jnp.concatenate([jnp.sin(freqs * t), jnp.cos(freqs * t)])


def init_pis(key: jax.Array, dim: int, hidden: Sequence[int] = (64, 64)) -> dict:
    """Parameters of the control ``u(t, x) = f(t, x) + g(t) * clip(grad log pi~(x))`` (:func:`pis_control`).

    Example:
        >>> import jax, probgen as pg
        >>> sorted(pg.flows.init_pis(jax.random.key(0), 2))
        ['drift', 'grad_scale']
    """
    dim = static_int(dim, "dim", "init_pis")
    k1, k2 = jax.random.split(key)
    return {
        "drift": init_mlp(k1, [dim + 2 * _NUM_FREQ, *hidden, dim]),
        "grad_scale": init_mlp(k2, [2 * _NUM_FREQ, 32, 1]),
    }


def pis_control(params: dict, t, x, log_target: Callable, clip: float = 1e3):
    """The control ``u(t, x)`` of :func:`init_pis` parameters at one point ``x``.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> p = pg.flows.init_pis(jax.random.key(0), 2)
        >>> pg.flows.pis_control(p, 0.5, jnp.ones(2), lambda x: -0.5 * x @ x).shape
        (2,)
    """
    feats = _time_features(t)
    grad = jnp.clip(jax.grad(log_target)(x), -clip, clip)
    return mlp(params["drift"], jnp.concatenate([x, feats])) + mlp(params["grad_scale"], feats) * grad


class PISState(NamedTuple):
    """State of :func:`pis_sampler`: point, running log-weight, step index."""

    x: jax.Array
    log_weight: jax.Array
    step: jax.Array


def pis_sampler(params: dict, log_target: Callable, dim: int, num_steps: int = 50,
                sigma: float = 2.0, detach: bool = False) -> Kernel:
    """One controlled step of the path integral sampler, accumulating the log-weight.

    Args:
      params: from :func:`init_pis`.
      log_target: unnormalized log-density of one point.
      dim, num_steps, sigma: dimension, number of steps, reference noise scale.
      detach: simulate the path with gradients stopped (for the log-variance loss),
        while the log-weight still depends on ``params`` through ``u``.

    Returns:
      ``Kernel(init=lambda: PISState(0, 0, 0), step, horizon=num_steps)`` with step info
      ``pg.dynamics.IntegratorInfo(time)``; ``init`` takes no start point, since the
      reference process (and so the weight) starts at the origin. After ``num_steps``
      steps add :func:`pis_terminal_log_weight`. The path and weight are kept
      in the floating dtype of ``params``; the time ``t_k = k / num_steps`` is computed from
      the step index.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> p = pg.flows.init_pis(jax.random.key(0), 2)
        >>> k = pg.flows.pis_sampler(p, lambda x: -0.5 * x @ x, 2, num_steps=5)
        >>> pg.run(k, jax.random.key(1), k.init(), 5)[0].x.shape
        (2,)
    """
    dim = static_int(dim, "dim", "pis_sampler")
    num_steps = static_int(num_steps, "num_steps", "pis_sampler")
    h = 1.0 / num_steps
    dtype = jnp.result_type(*jax.tree.leaves(params), float)
    times = grid_times("pis_sampler", num_steps, 0.0, 1.0)

    def init():
        return PISState(jnp.zeros(dim, dtype), jnp.zeros((), dtype), jnp.zeros((), jnp.int32))

    def step(key, state):
        t, t_next = times(state.step, dtype)
        u = pis_control(params, t, state.x, log_target)
        u_move = jax.lax.stop_gradient(u) if detach else u
        x = euler_maruyama_step(key, lambda *_: sigma * u_move, sigma, t, state.x, h)
        dx = x - state.x
        log_ratio = -jnp.vdot(u, dx) / sigma + 0.5 * h * jnp.vdot(u, u)
        return PISState(x, state.log_weight + log_ratio, state.step + 1), IntegratorInfo(t_next)

    return Kernel(init, step, horizon=num_steps)


def pis_terminal_log_weight(x, log_target: Callable, sigma: float):
    """``log pi~(x) - log N(x; 0, sigma^2 I)``, the last factor of the path weight.

    Example:
        >>> import jax.numpy as jnp, probgen as pg
        >>> from jax.scipy.stats import norm
        >>> float(pg.flows.pis_terminal_log_weight(jnp.zeros(1), lambda x: norm.logpdf(x, 0.0, 2.0).sum(), 2.0))
        0.0
    """
    ref = jnp.sum(jax.scipy.stats.norm.logpdf(x, 0.0, sigma))
    return log_target(x) - ref


def pis_sample(key: jax.Array, params: dict, log_target: Callable, dim: int, num_particles: int,
               num_steps: int = 50, sigma: float = 2.0, detach: bool = False):
    """Draw ``num_particles`` samples of the path integral sampler and their log importance weights.

    The one-shot driver of :func:`pis_sampler`: runs ``num_particles`` independent paths
    and adds :func:`pis_terminal_log_weight`.

    Returns:
      ``(x, log_weight)`` of shapes ``(num_particles, dim)`` and ``(num_particles,)``;
      ``log_mean_exp(log_weight)`` estimates ``log Z`` and ``mean(log_weight)`` is an ELBO.

    Example:
        >>> import jax, probgen as pg
        >>> p = pg.flows.init_pis(jax.random.key(0), 2)
        >>> x, lw = pg.flows.pis_sample(jax.random.key(1), p, lambda x: -0.5 * x @ x, 2, 8, 5)
        >>> x.shape, lw.shape
        ((8, 2), (8,))
    """
    num_particles = static_int(num_particles, "num_particles", "pis_sample")
    kernel = pis_sampler(params, log_target, dim, num_steps, sigma, detach)

    def one(k):
        final, _ = run(kernel, k, kernel.init(), num_steps)
        x = jax.lax.stop_gradient(final.x) if detach else final.x
        return x, final.log_weight + pis_terminal_log_weight(x, log_target, sigma)

    return jax.vmap(one)(particle_keys(key, num_particles))


def _pis_loss(name: str, reduce: Callable, detach: bool, log_target, dim, num_particles, num_steps, sigma):
    """``loss(params, key, batch=None) = reduce(log_weight)`` over ``num_particles`` paths."""
    dim = static_int(dim, "dim", name)
    num_particles = static_int(num_particles, "num_particles", name)
    num_steps = static_int(num_steps, "num_steps", name)

    def loss(params, key, batch=None):
        del batch
        _, log_weight = pis_sample(key, params, log_target, dim, num_particles, num_steps, sigma, detach)
        return reduce(log_weight)

    return loss


def pis_reverse_kl(log_target: Callable, dim: int, num_particles: int = 128, num_steps: int = 50,
                   sigma: float = 2.0) -> Callable:
    """The loss ``-E[log w]`` = KL(sampler path || target path) - log Z (reparameterized).

    Mode seeking, like any reverse KL; gradients flow through the simulated paths.

    Args:
      log_target: unnormalized log-density of one point.
      dim, num_particles, num_steps, sigma: as in :func:`pis_sample`.

    Returns:
      ``loss(params, key, batch=None) -> scalar`` (``batch`` is ignored): ``jax.grad``,
      optax and ``pg.fit`` take it directly.

    Example:
        >>> import jax, probgen as pg
        >>> loss = pg.flows.pis_reverse_kl(lambda x: -0.5 * x @ x, 1, num_particles=4, num_steps=5)
        >>> grads = jax.grad(loss)(pg.flows.init_pis(jax.random.key(0), 1), jax.random.key(1), None)
        >>> sorted(grads)
        ['drift', 'grad_scale']
    """
    return _pis_loss("pis_reverse_kl", lambda lw: -jnp.mean(lw), False, log_target, dim, num_particles,
                     num_steps, sigma)


def pis_log_variance(log_target: Callable, dim: int, num_particles: int = 128, num_steps: int = 50,
                     sigma: float = 2.0) -> Callable:
    """The loss ``Var[log w]`` over detached paths (Richter et al., 2020; Richter & Berner, 2024).

    Its minimizer is the optimal control, as for :func:`pis_reverse_kl`, but it is not mode
    seeking; the paths are simulated with gradients stopped (``detach=True``).

    Returns:
      ``loss(params, key, batch=None) -> scalar`` for ``pg.fit`` (``batch`` is ignored,
      so no ``data`` is needed); arguments as in :func:`pis_reverse_kl`.

    Example:
        >>> import jax, optax, probgen as pg
        >>> loss = pg.flows.pis_log_variance(lambda x: -0.5 * x @ x, 1, num_particles=4, num_steps=5)
        >>> params = pg.flows.init_pis(jax.random.key(0), 1)
        >>> pg.fit(loss, params, optax.adam(1e-3), jax.random.key(1), steps=2, progress=False).history["loss"].shape
        (2,)
    """
    return _pis_loss("pis_log_variance", jnp.var, True, log_target, dim, num_particles, num_steps, sigma)


def pis_log_normalizer(key: jax.Array, params: dict, log_target: Callable, dim: int, num_particles: int = 1024,
                       num_steps: int = 50, sigma: float = 2.0):
    """Importance-sampling estimate of ``log Z`` with its delta-method standard error.

    Returns:
      ``(log_z, standard_error, elbo)``.

    Example:
        >>> import jax, probgen as pg
        >>> p = pg.flows.init_pis(jax.random.key(0), 1)
        >>> len(pg.flows.pis_log_normalizer(jax.random.key(1), p, lambda x: -0.5 * x @ x, 1, 16, 5))
        3
    """
    _, log_w = pis_sample(key, params, log_target, dim, num_particles, num_steps, sigma)
    log_z = log_mean_exp(log_w)
    w = jnp.exp(log_w - log_z)  # mean 1
    se = jnp.std(w) / np.sqrt(log_w.shape[0])
    return log_z, se, jnp.mean(log_w)

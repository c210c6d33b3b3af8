"""A learned diffusion sampler for unnormalized densities (path integral sampler).

Reference process: ``X_0 = 0``, ``X_{k+1} = X_k + sigma sqrt(h) xi`` on ``K`` steps of
``h = 1/K`` (terminal law ``N(0, sigma^2 I)``). Controlled process: ``X_{k+1} = X_k +
sigma h u(t_k, X_k) + sigma sqrt(h) xi``. The importance weight of a path,
``log w = log pi~(X_K) - log N(X_K; 0, sigma^2) + sum_k [-u.dX_k / sigma + h |u|^2 / 2]``,
is exact in discrete time, so ``E[w] = Z`` with no discretization bias (Zhang & Chen,
2022, "Path Integral Sampler"; Richter & Berner, 2024 for the log-variance loss).

Losses: reverse KL ``-E[log w]`` (reparameterized through the path) and the log-variance
``Var[log w]`` over detached paths (its minimizer is the same optimal control, but it is
not mode seeking).
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from probgen.core.checks import static_int
from probgen.flows.nets import init_mlp, mlp
from probgen.kernels import Kernel, check_horizon, grid_time, run
from probgen.mc.resampling import log_mean_exp

_NUM_FREQ = 4


def _time_features(t):
    t = jnp.asarray(t)
    t = t if jnp.issubdtype(t.dtype, jnp.floating) else t.astype(jnp.result_type(float))
    freqs = jnp.arange(1, _NUM_FREQ + 1).astype(t.dtype) * jnp.pi
    return jnp.concatenate([jnp.sin(freqs * t), jnp.cos(freqs * t)])


def init_diffusion_sampler(key: jax.Array, dim: int, hidden: Sequence[int] = (64, 64)) -> dict:
    """Parameters of the control ``u(t, x) = f(t, x) + g(t) * clip(grad log pi~(x))``.

    Example:
        >>> import jax, probgen as pg
        >>> sorted(pg.flows.init_diffusion_sampler(jax.random.key(0), 2))
        ['drift', 'grad_scale']
    """
    k1, k2 = jax.random.split(key)
    return {
        "drift": init_mlp(k1, [dim + 2 * _NUM_FREQ, *hidden, dim]),
        "grad_scale": init_mlp(k2, [2 * _NUM_FREQ, 32, 1]),
    }


def control(params: dict, t, x, log_target: Callable, clip: float = 1e3):
    """The control ``u(t, x)`` of :func:`init_diffusion_sampler` parameters (one point)."""
    feats = _time_features(t)
    grad = jnp.clip(jax.grad(log_target)(x), -clip, clip)
    return mlp(params["drift"], jnp.concatenate([x, feats])) + mlp(params["grad_scale"], feats) * grad


class SamplerState(NamedTuple):
    """State of :func:`diffusion_sampler_kernel`: point, running log-weight, step index."""

    x: jax.Array
    log_weight: jax.Array
    step: jax.Array


def diffusion_sampler_kernel(params: dict, log_target: Callable, dim: int, num_steps: int = 50,
                             sigma: float = 2.0, detach: bool = False) -> Kernel:
    """One controlled step of the path integral sampler, accumulating the log-weight.

    Args:
      params: from :func:`init_diffusion_sampler`.
      log_target: unnormalized log-density of one point.
      dim, num_steps, sigma: dimension, number of steps, reference noise scale.
      detach: simulate the path with gradients stopped (for the log-variance loss),
        while the log-weight still depends on ``params`` through ``u``.

    Returns:
      ``Kernel(init=lambda: SamplerState(0, 0, 0), step, horizon=num_steps)``. After
      ``num_steps`` steps add :func:`terminal_log_weight`. The path and weight are kept in
      the floating dtype of ``params``; the time ``t_k = k / num_steps`` is computed from
      the step index.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> p = pg.flows.init_diffusion_sampler(jax.random.key(0), 2)
        >>> k = pg.flows.diffusion_sampler_kernel(p, lambda x: -0.5 * x @ x, 2, num_steps=5)
        >>> pg.run(k, jax.random.key(1), k.init(), 5)[0].x.shape
        (2,)
    """
    dim = static_int(dim, "dim", "diffusion_sampler_kernel")
    num_steps = static_int(num_steps, "num_steps", "diffusion_sampler_kernel")
    h = 1.0 / num_steps
    dtype = jnp.result_type(*jax.tree.leaves(params), float)

    def init():
        return SamplerState(jnp.zeros(dim, dtype), jnp.zeros((), dtype), jnp.zeros((), jnp.int32))

    def step(key, state):
        check_horizon(state.step, num_steps, "diffusion_sampler_kernel")
        u = control(params, grid_time(state.step, num_steps, 0.0, 1.0, dtype), state.x, log_target)
        u_move = jax.lax.stop_gradient(u) if detach else u
        dx = sigma * h * u_move + sigma * np.sqrt(h) * jax.random.normal(key, (dim,), dtype)
        log_ratio = -jnp.vdot(u, dx) / sigma + 0.5 * h * jnp.vdot(u, u)
        return SamplerState(state.x + dx, state.log_weight + log_ratio, state.step + 1), {}

    return Kernel(init, step, horizon=num_steps)


def terminal_log_weight(x, log_target: Callable, sigma: float):
    """``log pi~(x) - log N(x; 0, sigma^2 I)``, the last factor of the path weight."""
    ref = jnp.sum(jax.scipy.stats.norm.logpdf(x, 0.0, sigma))
    return log_target(x) - ref


def sample_paths(params: dict, key: jax.Array, log_target: Callable, dim: int, num_particles: int,
                 num_steps: int = 50, sigma: float = 2.0, detach: bool = False):
    """Draw ``num_particles`` samples and their log importance weights.

    Returns:
      ``(x, log_weight)`` of shapes ``(num_particles, dim)`` and ``(num_particles,)``;
      ``log_mean_exp(log_weight)`` estimates ``log Z`` and ``mean(log_weight)`` is an ELBO.

    Example:
        >>> import jax, probgen as pg
        >>> p = pg.flows.init_diffusion_sampler(jax.random.key(0), 2)
        >>> x, lw = pg.flows.sample_paths(p, jax.random.key(1), lambda x: -0.5 * x @ x, 2, 8, 5)
        >>> x.shape, lw.shape
        ((8, 2), (8,))
    """
    num_particles = static_int(num_particles, "num_particles", "sample_paths")
    kernel = diffusion_sampler_kernel(params, log_target, dim, num_steps, sigma, detach)

    def one(k):
        final, _ = run(kernel, k, kernel.init(), num_steps)
        x = jax.lax.stop_gradient(final.x) if detach else final.x
        return x, final.log_weight + terminal_log_weight(x, log_target, sigma)

    return jax.vmap(one)(jax.random.split(key, num_particles))


def reverse_kl_loss(params, key, log_target, dim, num_particles=128, num_steps=50, sigma=2.0):
    """``-E[log w]`` = KL(sampler path || target path) - log Z (reparameterized).

    Example:
        >>> import jax, probgen as pg
        >>> p = pg.flows.init_diffusion_sampler(jax.random.key(0), 1)
        >>> pg.flows.reverse_kl_loss(p, jax.random.key(1), lambda x: -0.5 * x @ x, 1, 4, 5).shape
        ()
    """
    _, log_w = sample_paths(params, key, log_target, dim, num_particles, num_steps, sigma)
    return -jnp.mean(log_w)


def log_variance_loss(params, key, log_target, dim, num_particles=128, num_steps=50, sigma=2.0):
    """``Var[log w]`` over detached paths (Richter et al., 2020; Richter & Berner, 2024).

    Example:
        >>> import jax, probgen as pg
        >>> p = pg.flows.init_diffusion_sampler(jax.random.key(0), 1)
        >>> pg.flows.log_variance_loss(p, jax.random.key(1), lambda x: -0.5 * x @ x, 1, 4, 5).shape
        ()
    """
    _, log_w = sample_paths(params, key, log_target, dim, num_particles, num_steps, sigma, detach=True)
    return jnp.var(log_w)


def log_normalizer(params, key, log_target, dim, num_particles=1024, num_steps=50, sigma=2.0):
    """Importance-sampling estimate of ``log Z`` with its delta-method standard error.

    Returns:
      ``(log_z, standard_error, elbo)``.

    Example:
        >>> import jax, probgen as pg
        >>> p = pg.flows.init_diffusion_sampler(jax.random.key(0), 1)
        >>> len(pg.flows.log_normalizer(p, jax.random.key(1), lambda x: -0.5 * x @ x, 1, 16, 5))
        3
    """
    _, log_w = sample_paths(params, key, log_target, dim, num_particles, num_steps, sigma)
    log_z = log_mean_exp(log_w)
    w = jnp.exp(log_w - log_z)  # mean 1
    se = jnp.std(w) / np.sqrt(num_particles)
    return log_z, se, jnp.mean(log_w)

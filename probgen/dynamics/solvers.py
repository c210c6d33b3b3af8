"""One fixed step of an ODE (Euler, Heun, RK4) or of an SDE (Euler–Maruyama), on ``f(t, x)``.

These are the only Runge–Kutta and Euler–Maruyama updates in probgen: the integrator
kernels of :mod:`probgen.dynamics.integrators`, the diffusion samplers, the probability-flow
likelihood, the Feynman–Kac corrector and the path integral sampler all step through them.
Vector fields take time first, ``f(t, x)``; ``x`` may be any pytree (ODE) or array (SDE),
and the step keeps ``x``'s dtype whatever ``f`` computes in.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from probgen.core.errors import SettingError

METHODS = ("euler", "heun", "rk4")


def check_method(method: str, where: str, methods: tuple[str, ...] = METHODS) -> str:
    """``method`` if it is one of ``methods``, else a :class:`~probgen.SettingError` naming ``where``.

    Example:
        >>> from probgen.dynamics.solvers import check_method
        >>> check_method("heun", "my_sampler")
        'heun'
    """
    if method not in methods:
        raise SettingError(f"{where}: method must be one of {methods}, got {method!r}")
    return method


def _like(values, x):
    """``values`` (a pytree like ``x``) cast leaf by leaf to the dtypes of ``x``."""
    return jax.tree.map(lambda v, u: jnp.asarray(v).astype(jnp.asarray(u).dtype), values, x)


def _axpy(x, slope, scale):
    """``x + scale * slope`` leaf by leaf, in the dtypes of ``x``."""
    return jax.tree.map(lambda u, v: (u + scale * v).astype(jnp.asarray(u).dtype), x, slope)


def ode_step(f: Callable, t, x, dt, method: str = "rk4"):
    """One fixed step of ``dx/dt = f(t, x)`` from ``t`` to ``t + dt``.

    Args:
      f: the vector field ``f(t, x)``, returning a pytree like ``x``.
      t: the current time (a scalar).
      x: the state, any pytree of float arrays.
      dt: the step (negative integrates backwards).
      method: ``"euler"`` (order 1), ``"heun"`` (explicit trapezoid, order 2, two calls
        of ``f``) or ``"rk4"`` (classical Runge–Kutta, order 4, four calls).

    Returns:
      ``x(t + dt)``, a pytree with the structure and the dtypes of ``x`` (a float64 field on
      float32 points keeps the points float32).

    Example:
        >>> import jax.numpy as jnp, probgen as pg
        >>> x = pg.dynamics.ode_step(lambda t, x: -x, 0.0, jnp.ones(2), 0.1, "rk4")
        >>> [round(v, 6) for v in x.tolist()]  # exp(-0.1) to 4th order
        [0.904837, 0.904837]
    """
    check_method(method, "ode_step")

    def slope(s, y):
        return _like(f(s, y), y)

    k1 = slope(t, x)
    if method == "euler":
        return _axpy(x, k1, dt)
    if method == "heun":
        k2 = slope(t + dt, _axpy(x, k1, dt))
        return _axpy(x, jax.tree.map(lambda a, b: a + b, k1, k2), 0.5 * dt)
    k2 = slope(t + 0.5 * dt, _axpy(x, k1, 0.5 * dt))
    k3 = slope(t + 0.5 * dt, _axpy(x, k2, 0.5 * dt))
    k4 = slope(t + dt, _axpy(x, k3, dt))
    total = jax.tree.map(lambda a, b, c, d: a + 2 * b + 2 * c + d, k1, k2, k3, k4)
    return _axpy(x, total, dt / 6)


def euler_maruyama_step(key: jax.Array, drift: Callable, diffusion: Callable | float, t, x: jax.Array, dt):
    """One Euler–Maruyama step of ``dx = drift(t, x) dt + diffusion(t) dW``.

    ``x + drift(t, x) dt + diffusion(t) sqrt(|dt|) xi`` with ``xi ~ N(0, I)`` drawn in
    ``x``'s dtype. With ``dt < 0`` this steps a reverse-time SDE written in forward time
    (the noise scale uses ``|dt|``).

    Args:
      key: PRNG key for ``xi``.
      drift: ``drift(t, x)``, an array like ``x``.
      diffusion: ``diffusion(t)`` (a scalar or an array broadcasting against ``x``), or a constant.
      t: the current time.
      x: the state, a float array.
      dt: the step.

    Returns:
      The new state, in ``x``'s dtype.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> x = pg.dynamics.euler_maruyama_step(jax.random.key(0), lambda t, x: -x, 0.0, 0.0, jnp.ones(3), 0.5)
        >>> x.tolist()  # no noise: one Euler step
        [0.5, 0.5, 0.5]
    """
    x = jnp.asarray(x)
    scale = diffusion(t) if callable(diffusion) else diffusion
    xi = jax.random.normal(key, x.shape, x.dtype)
    move = _like(drift(t, x), x) * dt + jnp.asarray(scale) * jnp.sqrt(jnp.abs(dt)) * xi
    return (x + move).astype(x.dtype)

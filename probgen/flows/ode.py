"""ODE and SDE integrators as :class:`pg.Kernel` s, and the CNF log-likelihood.

``velocity(t, x)`` and ``score(t, x)`` act on one point ``x``; batch a sampler by
``jax.vmap`` over the whole :func:`pg.run`. Time may run backwards (``t1 < t0``).

Every kernel here has a fixed horizon (``Kernel.horizon = num_steps``): ``pg.run`` refuses
more steps, and under ``pg.validate`` a step from a state already at ``t1`` fails. The
time ``t`` of the state is computed from its integer ``step`` on the grid, in the dtype of
``x`` (float64 runs end exactly at ``t1``), never accumulated by repeated addition.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from probgen.core.checks import static_int
from probgen.core.errors import SettingError
from probgen.kernels import Kernel, check_horizon, grid_time, run

METHODS = ("euler", "heun", "rk4")


class ODEState(NamedTuple):
    """Integrator state: the point ``x`` (any pytree), the time ``t`` and the integer step index."""

    x: jax.Array
    t: jax.Array
    step: jax.Array


def _rk_step(velocity, t, y, dt, method):
    def f(s, z):  # the state keeps its dtype whatever the velocity computes in
        return jax.tree.map(lambda v, u: jnp.asarray(v).astype(jnp.asarray(u).dtype), velocity(s, z), z)

    add = lambda a, b, c: jax.tree.map(lambda u, v: u + c * v, a, b)  # noqa: E731
    k1 = f(t, y)
    if method == "euler":
        return add(y, k1, dt)
    if method == "heun":
        k2 = f(t + dt, add(y, k1, dt))
        return jax.tree.map(lambda u, a, b: u + 0.5 * dt * (a + b), y, k1, k2)
    k2 = f(t + 0.5 * dt, add(y, k1, 0.5 * dt))
    k3 = f(t + 0.5 * dt, add(y, k2, 0.5 * dt))
    k4 = f(t + dt, add(y, k3, dt))
    return jax.tree.map(lambda u, a, b, c, d: u + dt / 6 * (a + 2 * b + 2 * c + d), y, k1, k2, k3, k4)


def _check(method, num_steps, name) -> int:
    if method not in METHODS:
        raise SettingError(f"{name}: method must be one of {METHODS}, got {method!r}")
    return static_int(num_steps, "num_steps", name)


def _time_dtype(x):
    """The floating dtype of the point ``x`` (a pytree): time is kept in it."""
    dtype = jnp.result_type(*jax.tree.leaves(x))
    return dtype if jnp.issubdtype(dtype, jnp.floating) else jnp.result_type(float)


def _grid(name, num_steps, t0, t1):
    """``times(step, dtype) -> (t, t_next)`` on the uniform grid, checking the horizon."""

    def times(step, dtype):
        check_horizon(step, num_steps, name)
        return tuple(grid_time(i, num_steps, t0, t1, dtype) for i in (step, step + 1))

    return times


def ode_kernel(velocity: Callable, t0: float = 0.0, t1: float = 1.0, num_steps: int = 100,
               method: str = "rk4") -> Kernel:
    """A kernel taking one fixed step of ``dx/dt = velocity(t, x)`` from ``t0`` toward ``t1``.

    Args:
      velocity: ``velocity(t, x)`` returning a pytree like ``x``.
      t0, t1: start and end times (``t1 < t0`` integrates backwards).
      num_steps: the number of steps :func:`pg.run` will take (sets the step size).
      method: ``"euler"``, ``"heun"`` (2nd order) or ``"rk4"``.

    Returns:
      ``Kernel(init=lambda x: ODEState(x, t0, 0), step, horizon=num_steps)``; step info is ``{}``.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> k = pg.flows.ode_kernel(lambda t, x: -x, num_steps=20)
        >>> final, _ = pg.run(k, jax.random.key(0), k.init(jnp.ones(1)), 20)
        >>> round(float(final.x[0]), 4)  # exp(-1)
        0.3679
    """
    num_steps = _check(method, num_steps, "ode_kernel")
    times = _grid("ode_kernel", num_steps, t0, t1)

    def init(x):
        return ODEState(x, jnp.asarray(t0, _time_dtype(x)), jnp.zeros((), jnp.int32))

    def step(key, state):
        del key
        t, t_next = times(state.step, state.t.dtype)
        x = _rk_step(velocity, t, state.x, t_next - t, method)
        return ODEState(x, t_next, state.step + 1), {}

    return Kernel(init, step, horizon=num_steps)


def solve_ode(velocity: Callable, x0, t0: float = 0.0, t1: float = 1.0, num_steps: int = 100,
              method: str = "rk4"):
    """Integrate ``dx/dt = velocity(t, x)`` from ``t0`` to ``t1``; returns ``x(t1)``.

    Example:
        >>> import jax.numpy as jnp, probgen as pg
        >>> float(pg.flows.solve_ode(lambda t, x: jnp.ones_like(x), jnp.zeros(()), num_steps=4))
        1.0
    """
    k = ode_kernel(velocity, t0, t1, num_steps, method)
    return run(k, jax.random.key(0), k.init(x0), num_steps)[0].x


def sde_kernel(velocity: Callable, score: Callable, noise: Callable | float = 1.0, t0: float = 0.0,
               t1: float = 1.0, num_steps: int = 100) -> Kernel:
    """Euler–Maruyama step of the interpolant SDE with tunable noise ``eps(t)``.

    ``dx = [b(t, x) + eps(t) s(t, x)] dt + sqrt(2 eps(t)) dW`` forward in time (the sign
    of the score term flips when ``t1 < t0``); every ``eps >= 0`` has the same time
    marginals as the ODE ``dx = b dt`` (Albergo et al., 2023, Sec. 2.3).

    Args:
      velocity, score: ``f(t, x)`` for one point.
      noise: ``eps`` as a float or a function of ``t``.
      t0, t1, num_steps: the time grid.

    Returns:
      ``Kernel(init=lambda x: ODEState(x, t0, 0), step, horizon=num_steps)``.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> k = pg.flows.sde_kernel(lambda t, x: 0 * x, lambda t, x: -x, 0.5, num_steps=10)
        >>> pg.run(k, jax.random.key(0), k.init(jnp.zeros(2)), 10)[0].x.shape
        (2,)
    """
    num_steps = _check("euler", num_steps, "sde_kernel")
    times = _grid("sde_kernel", num_steps, t0, t1)
    eps_fn = noise if callable(noise) else (lambda t: noise)
    sign = 1.0 if t1 > t0 else -1.0

    def init(x):
        x = jnp.asarray(x)
        return ODEState(x, jnp.asarray(t0, _time_dtype(x)), jnp.zeros((), jnp.int32))

    def step(key, state):
        t, t_next = times(state.step, state.t.dtype)
        dt = t_next - t
        eps = eps_fn(t)
        drift = velocity(t, state.x) + sign * eps * score(t, state.x)
        xi = jax.random.normal(key, jnp.shape(state.x), state.t.dtype)
        x = (state.x + drift * dt + jnp.sqrt(2.0 * eps * jnp.abs(dt)) * xi).astype(state.x.dtype)
        return ODEState(x, t_next, state.step + 1), {}

    return Kernel(init, step, horizon=num_steps)


class CNFState(NamedTuple):
    """State of :func:`cnf_kernel`: point, accumulated ``-int div v dt``, time, probe, step index."""

    x: jax.Array
    delta_log_prob: jax.Array
    t: jax.Array
    probe: jax.Array
    step: jax.Array


def _divergence(velocity, t, x, probe, exact):
    f = lambda y: velocity(t, y)  # noqa: E731
    if exact:
        v, jac = f(x), jax.jacfwd(f)(x)
        return v, jnp.trace(jac)
    v, jv = jax.jvp(f, (x,), (probe,))
    return v, jnp.vdot(probe, jv)


def cnf_kernel(velocity: Callable, t0: float = 1.0, t1: float = 0.0, num_steps: int = 100,
               method: str = "rk4", divergence: str = "exact") -> Kernel:
    """Kernel integrating ``(x, log-density change)`` along ``dx/dt = velocity``.

    The log-density obeys ``d log p_t(x_t)/dt = -div v(t, x_t)``. Integrating from
    data time ``t0`` back to base time ``t1`` accumulates ``delta_log_prob`` so that
    ``log p_{t0}(x) = log p_{t1}(x_{t1}) + delta_log_prob`` (Chen et al., 2018; FFJORD,
    Grathwohl et al., 2019 for the Hutchinson estimator).

    Args:
      velocity: ``velocity(t, x)`` for one vector ``x``.
      t0, t1: start (data) and end (base) times.
      num_steps, method: the grid and the Runge–Kutta method.
      divergence: ``"exact"`` (trace of the Jacobian, ``dim`` JVPs) or ``"hutchinson"``
        (one Rademacher probe held fixed along the path; unbiased).

    Returns:
      ``Kernel(init=lambda x, key=None: CNFState(...), step, horizon=num_steps)``.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> k = pg.flows.cnf_kernel(lambda t, x: -x, num_steps=10)  # div = -dim
        >>> s, _ = pg.run(k, jax.random.key(0), k.init(jnp.ones(2)), 10)
        >>> round(float(s.delta_log_prob), 4)
        2.0
    """
    num_steps = _check(method, num_steps, "cnf_kernel")
    if divergence not in ("exact", "hutchinson"):
        raise SettingError(f"cnf_kernel: divergence must be 'exact' or 'hutchinson', got {divergence!r}")
    times = _grid("cnf_kernel", num_steps, t0, t1)
    exact = divergence == "exact"

    def init(x, key=None):
        x = jnp.asarray(x)
        x = x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(_time_dtype(x))
        if x.ndim != 1:
            raise ValueError(f"cnf_kernel: x must be one vector of shape (dim,), got {x.shape}; vmap for batches")
        if exact:
            probe = jnp.zeros_like(x)
        else:
            if key is None:
                raise SettingError("cnf_kernel: divergence='hutchinson' needs init(x, key) to draw the probe")
            probe = jax.random.rademacher(key, x.shape, dtype=x.dtype)
        return CNFState(x, jnp.zeros((), x.dtype), jnp.asarray(t0, x.dtype), probe, jnp.zeros((), jnp.int32))

    def step(key, state):
        del key
        t, t_next = times(state.step, state.t.dtype)

        def f(t, y):
            v, div = _divergence(velocity, t, y[0], state.probe, exact)
            return (v, div)

        # d(delta)/dt = div v: integrating toward the base gives delta = -int_{t1}^{t0} ... as documented.
        x, acc = _rk_step(f, t, (state.x, state.delta_log_prob), t_next - t, method)
        return CNFState(x, acc, t_next, state.probe, state.step + 1), {}

    return Kernel(init, step, horizon=num_steps)


def cnf_log_prob(velocity: Callable, x: jax.Array, base_log_prob: Callable, num_steps: int = 100,
                 method: str = "rk4", divergence: str = "exact", key: jax.Array | None = None,
                 t_data: float = 1.0, t_base: float = 0.0) -> jax.Array:
    """Log-density of ``x`` under the flow ``dx/dt = velocity`` started from ``base_log_prob``.

    Args:
      velocity: ``velocity(t, x)`` for one point, transporting base (``t_base``) to data (``t_data``).
      x: one point ``(dim,)``; vmap for a batch.
      base_log_prob: log-density of the base at ``t_base``.
      num_steps, method, divergence: see :func:`cnf_kernel`.
      key: needed for ``divergence="hutchinson"``.

    Returns:
      The scalar log-density.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> from jax.scipy.stats import norm
        >>> lp = pg.flows.cnf_log_prob(lambda t, x: jnp.ones_like(x), jnp.ones(1), lambda z: norm.logpdf(z).sum())
        >>> round(float(lp), 4) == round(float(norm.logpdf(0.0)), 4)
        True
    """
    k = cnf_kernel(velocity, t_data, t_base, num_steps, method, divergence)
    final, _ = run(k, jax.random.key(0), k.init(x, key), num_steps)
    return base_log_prob(final.x) + final.delta_log_prob

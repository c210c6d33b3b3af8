"""Fixed-horizon integrator kernels on ``f(t, x)``: ODE, SDE (Euler–Maruyama) and CNF.

Every kernel here walks the uniform grid from ``t0`` to ``t1`` (``t1 < t0`` integrates
backwards) in ``num_steps`` steps and is a :class:`probgen.Kernel` with
``horizon=num_steps``: :func:`probgen.run` refuses more steps and, under ``pg.validate``,
a step from a state already at ``t1`` fails (see :mod:`probgen.kernels`). The time of a
state is computed from its integer ``step`` with :func:`probgen.kernels.grid_time`, in the
floating dtype of ``x`` (float64 runs end exactly at ``t1``), never accumulated by repeated
addition. The state is :class:`IntegratorState` ``(x, t, step)`` (:class:`CNFState` adds
the log-density change) and the step info :class:`IntegratorInfo` ``(time)``.

:func:`grid_kernel` is the builder they share, and so do the diffusion samplers of
:mod:`probgen.diffusion`: a sampler is a ``move(key, x, t, t_next, step)`` on that grid.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from probgen.core.checks import static_int
from probgen.core.errors import SettingError
from probgen.core.numerics import as_float
from probgen.dynamics.divergence import check_divergence_settings
from probgen.dynamics.divergence import divergence as _divergence  # cnf_integrator has an argument of that name
from probgen.dynamics.solvers import check_method, euler_maruyama_step, ode_step
from probgen.kernels import Kernel, check_horizon, grid_time, run


class IntegratorState(NamedTuple):
    """State of a grid kernel: the point ``x`` (a pytree), its time ``t`` and the integer step index."""

    x: jax.Array
    t: jax.Array
    step: jax.Array


class IntegratorInfo(NamedTuple):
    """Per-step diagnostics of a grid kernel: the time reached by the step."""

    time: jax.Array


class CNFState(NamedTuple):
    """State of :func:`cnf_integrator`: the point, the accumulated ``int_{t0}^t div v``, time, step index."""

    x: jax.Array
    delta_log_prob: jax.Array
    t: jax.Array
    step: jax.Array


def _time_dtype(x):
    """The floating dtype of the point ``x`` (a float pytree): time is kept in it."""
    return jnp.result_type(*jax.tree.leaves(x))


def grid_times(name: str, num_steps: int, t0: float, t1: float) -> Callable:
    """``times(step, dtype) -> (t, t_next)`` on the uniform grid from ``t0`` to ``t1``.

    Every step of a fixed-horizon kernel on the grid calls it: it checks the horizon
    (:func:`probgen.kernels.check_horizon`, under ``pg.validate``) and computes both times
    from the integer index in ``dtype`` (:func:`probgen.kernels.grid_time`).

    Example:
        >>> import jax.numpy as jnp, probgen as pg
        >>> times = pg.dynamics.grid_times("my_kernel", 4, 1.0, 0.0)
        >>> [float(t) for t in times(jnp.int32(1), jnp.float32)]
        [0.75, 0.5]
    """

    def times(step, dtype):
        check_horizon(step, num_steps, name)
        return grid_time(step, num_steps, t0, t1, dtype), grid_time(step + 1, num_steps, t0, t1, dtype)

    return times


def grid_kernel(move: Callable, t0: float, t1: float, num_steps: int, name: str = "grid_kernel",
                prepare: Callable | None = None) -> Kernel:
    """A fixed-horizon kernel taking ``x`` from ``t0`` to ``t1`` by ``move`` on the uniform grid.

    Args:
      move: ``move(key, x, t, t_next, step) -> x_next``, one step of the grid from ``t`` to
        ``t_next`` (``step`` is the integer index, ``num_steps - 1`` on the last step).
      t0, t1: start and end times (``t1 < t0`` walks backwards).
      num_steps: the number of steps (the kernel's horizon).
      name: the name errors and horizon checks carry (a sampler built on this passes its own).
      prepare: ``prepare(x) -> x`` applied by ``init`` (casting, shape checks); the default
        casts integer leaves to the default float.

    Returns:
      ``Kernel(init=lambda x: IntegratorState(x, t0, 0), step, horizon=num_steps)`` whose
      step info is :class:`IntegratorInfo`.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> count = pg.dynamics.grid_kernel(lambda key, x, t, s, i: x + (s - t), 0.0, 1.0, 4)
        >>> final, info = pg.run(count, jax.random.key(0), count.init(jnp.zeros(())), 4)
        >>> float(final.x), float(final.t), float(info.time)
        (1.0, 1.0, 1.0)
    """
    num_steps = static_int(num_steps, "num_steps", name)
    times = grid_times(name, num_steps, t0, t1)
    prepare = as_float if prepare is None else prepare

    def init(x) -> IntegratorState:
        x = prepare(x)
        return IntegratorState(x, jnp.asarray(t0, _time_dtype(x)), jnp.zeros((), jnp.int32))

    def step(key, state):
        t, t_next = times(state.step, state.t.dtype)
        x = move(key, state.x, t, t_next, state.step)
        return IntegratorState(x, t_next, state.step + 1), IntegratorInfo(t_next)

    return Kernel(init, step, horizon=num_steps)


def ode_integrator(velocity: Callable, t0: float = 0.0, t1: float = 1.0, num_steps: int = 100,
                   method: str = "rk4", name: str = "ode_integrator") -> Kernel:
    """A kernel taking one fixed step of ``dx/dt = velocity(t, x)`` from ``t0`` toward ``t1``.

    Args:
      velocity: ``velocity(t, x)`` returning a pytree like ``x`` (one point, or a batch if
        the field is written for one).
      t0, t1: start and end times (``t1 < t0`` integrates backwards).
      num_steps: the number of steps :func:`pg.run` will take (sets the step size).
      method: ``"euler"``, ``"heun"`` (2nd order) or ``"rk4"`` (see :func:`ode_step`).
      name: the name errors carry.

    Returns:
      ``Kernel(init=lambda x: IntegratorState(x, t0, 0), step, horizon=num_steps)``.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> k = pg.dynamics.ode_integrator(lambda t, x: -x, num_steps=20)
        >>> final, _ = pg.run(k, jax.random.key(0), k.init(jnp.ones(1)), 20)
        >>> round(float(final.x[0]), 4)  # exp(-1)
        0.3679
    """
    check_method(method, name)

    def move(key, x, t, t_next, step):
        return ode_step(velocity, t, x, t_next - t, method)

    return grid_kernel(move, t0, t1, num_steps, name)


def solve_ode(velocity: Callable, x0, t0: float = 0.0, t1: float = 1.0, num_steps: int = 100,
              method: str = "rk4"):
    """Integrate ``dx/dt = velocity(t, x)`` from ``t0`` to ``t1``; returns ``x(t1)``.

    Runs :func:`ode_integrator` for ``num_steps`` steps in one ``lax.scan``; vmap it over points.

    Example:
        >>> import jax.numpy as jnp, probgen as pg
        >>> float(pg.dynamics.solve_ode(lambda t, x: jnp.ones_like(x), jnp.zeros(()), num_steps=4))
        1.0
    """
    k = ode_integrator(velocity, t0, t1, num_steps, method, name="solve_ode")
    return run(k, jax.random.key(0), k.init(x0), num_steps)[0].x


def sde_integrator(drift: Callable, diffusion: Callable | float = 1.0, t0: float = 0.0, t1: float = 1.0,
                   num_steps: int = 100, name: str = "sde_integrator") -> Kernel:
    """Euler–Maruyama steps of ``dx = drift(t, x) dt + diffusion(t) dW`` from ``t0`` toward ``t1``.

    With ``t1 < t0`` the SDE is stepped backwards in time with ``dt < 0`` and noise scale
    ``diffusion(t) sqrt(|dt|)`` (a reverse-time SDE written in forward time). For the
    stochastic-interpolant SDE with tunable noise ``eps(t)`` (Albergo et al. 2023, Sec. 2.3)
    use ``drift = b(t, x) + eps(t) s(t, x)`` and ``diffusion = sqrt(2 eps(t))``.

    Args:
      drift: ``drift(t, x)`` returning an array like ``x``.
      diffusion: ``diffusion(t)`` (scalar, or broadcasting against ``x``) or a constant.
      t0, t1, num_steps: the time grid.
      name: the name errors carry.

    Returns:
      ``Kernel(init=lambda x: IntegratorState(x, t0, 0), step, horizon=num_steps)``.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> k = pg.dynamics.sde_integrator(lambda t, x: -x, 1.0, num_steps=10)
        >>> pg.run(k, jax.random.key(0), k.init(jnp.zeros(2)), 10)[0].x.shape
        (2,)
    """

    def move(key, x, t, t_next, step):
        return euler_maruyama_step(key, drift, diffusion, t, x, t_next - t)

    return grid_kernel(move, t0, t1, num_steps, name)


def cnf_integrator(velocity: Callable, t0: float = 1.0, t1: float = 0.0, num_steps: int = 100,
                   method: str = "rk4", divergence: str = "exact", num_probes: int = 1,
                   probe: str = "rademacher", batched: bool = False, name: str = "cnf_integrator") -> Kernel:
    """Kernel integrating ``(x, log-density change)`` along ``dx/dt = velocity(t, x)``.

    The log-density obeys ``d log p_t(x_t)/dt = -div v(t, x_t)``. Integrating from ``t0``
    to ``t1`` accumulates ``delta_log_prob = int_{t0}^{t1} div v(t, x_t) dt``, so that
    ``log p_{t0}(x) = log p_{t1}(x_{t1}) + delta_log_prob`` (Chen et al. 2018). For a flow
    from a base at ``t = 0`` to data at ``t = 1``, go from ``t0 = 1`` to ``t1 = 0``.

    Hutchinson probes (FFJORD, Grathwohl et al. 2019): each step draws fresh probes from
    its own key (the key :func:`pg.run` passes), shared by the stages of that step. The path
    of ``x`` does not depend on them, and ``delta_log_prob`` is linear in the per-step
    estimates, so it is an unbiased estimate of the exact-divergence result on the same grid.

    Args:
      velocity: ``velocity(t, x)`` for one point (any shape), or with ``batched=True`` for a
        batch ``(num_points, *event_shape)`` whose rows do not interact.
      t0, t1: start and end times.
      num_steps, method: the grid and the Runge–Kutta method (see :func:`ode_step`).
      divergence: ``"exact"`` (``D`` JVPs for ``D`` dimensions) or ``"hutchinson"``
        (see :func:`divergence`).
      num_probes, probe: Hutchinson probes per step and their law.
      batched: ``x`` is a batch; ``delta_log_prob`` then has shape ``(num_points,)``.
      name: the name errors carry.

    Returns:
      ``Kernel(init=lambda x: CNFState(x, 0, t0, 0), step, horizon=num_steps)`` whose step
      info is :class:`IntegratorInfo`.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> k = pg.dynamics.cnf_integrator(lambda t, x: -x, num_steps=10)  # div = -dim
        >>> s, _ = pg.run(k, jax.random.key(0), k.init(jnp.ones(2)), 10)
        >>> round(float(s.delta_log_prob), 4)
        2.0
    """
    check_method(method, name)
    num_probes = check_divergence_settings(divergence, num_probes, probe, name)
    num_steps = static_int(num_steps, "num_steps", name)
    times = grid_times(name, num_steps, t0, t1)

    def init(x) -> CNFState:
        x = as_float(jnp.asarray(x))
        if batched and x.ndim < 2:
            raise SettingError(
                f"{name}.init: x must have shape (num_points, *event_shape) with ndim >= 2, got {x.shape}")
        delta = jnp.zeros(x.shape[:1] if batched else (), x.dtype)
        return CNFState(x, delta, jnp.asarray(t0, x.dtype), jnp.zeros((), jnp.int32))

    def step(key, state):
        t, t_next = times(state.step, state.t.dtype)

        def field(s, pair):  # the same key, hence the same probes, at every stage of the step
            return _divergence(lambda y: velocity(s, y), pair[0], divergence, key, num_probes, probe, batched)

        x, delta = ode_step(field, t, (state.x, state.delta_log_prob), t_next - t, method)
        return CNFState(x, delta, t_next, state.step + 1), IntegratorInfo(t_next)

    return Kernel(init, step, horizon=num_steps)


def cnf_log_prob(velocity: Callable, x: jax.Array, base_log_prob: Callable, num_steps: int = 100,
                 method: str = "rk4", divergence: str = "exact", key: jax.Array | None = None,
                 t_data: float = 1.0, t_base: float = 0.0, num_probes: int = 1,
                 probe: str = "rademacher") -> jax.Array:
    """Log-density of ``x`` under the flow ``dx/dt = velocity`` started from ``base_log_prob``.

    Args:
      velocity: ``velocity(t, x)`` for one point, transporting base (``t_base``) to data (``t_data``).
      x: one point; vmap for a batch.
      base_log_prob: log-density of the base at ``t_base``.
      num_steps, method, divergence, num_probes, probe: see :func:`cnf_integrator`.
      key: PRNG key, required for ``divergence="hutchinson"``.
      t_data, t_base: the data and base times.

    Returns:
      The scalar log-density.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> from jax.scipy.stats import norm
        >>> lp = pg.dynamics.cnf_log_prob(lambda t, x: jnp.ones_like(x), jnp.ones(1), lambda z: norm.logpdf(z).sum())
        >>> round(float(lp), 4) == round(float(norm.logpdf(0.0)), 4)
        True
    """
    if divergence == "hutchinson" and key is None:
        raise SettingError("cnf_log_prob: divergence='hutchinson' needs a key to draw the probes")
    k = cnf_integrator(velocity, t_data, t_base, num_steps, method, divergence, num_probes, probe,
                       name="cnf_log_prob")
    final, _ = run(k, jax.random.key(0) if key is None else key, k.init(x), num_steps)
    return base_log_prob(final.x) + final.delta_log_prob

"""The one transition-kernel protocol every probgen sampler speaks, and its scan driver.

A :class:`Kernel` is a pair of pure functions: ``init(...) -> state`` and
``step(key, state) -> (state, info)``. SMC steps, MCMC moves, diffusion and ODE/SDE
integrator steps all are kernels, so :func:`run` drives any of them with one
``lax.scan`` and ``jax.vmap`` batches any of them.

Fixed-horizon kernels. A kernel built for a fixed number of steps (a diffusion sampler
walking ``t_max -> t_min`` in ``num_steps`` steps, an ODE integrator from ``t0`` to ``t1``,
a particle filter over ``T`` observations) must not be driven past its end: it would
silently extrapolate (times beyond the grid, observations that do not exist). Such a
kernel declares it in two places:

- ``Kernel(init, step, horizon=num_steps)``: :func:`run` (and any driver that knows its
  step count statically) refuses ``num_steps > horizon`` at trace time with a
  :class:`~probgen.core.errors.SettingError`;
- its ``step`` calls :func:`check_horizon` on the integer step index its state carries,
  so that, under ``pg.validate``, a state already at the horizon (a resumed run, a
  hand-written loop) fails at run time with a :class:`~probgen.ValidationError`.

Kernels with a fixed time grid compute each step's time from that integer index with
:func:`grid_time` (exact at both ends, in the state's dtype), never by repeated addition.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from probgen.core.checks import static_int
from probgen.core.errors import SettingError
from probgen.core.validation import check


class Kernel(NamedTuple):
    """A transition kernel: ``init`` builds a state, ``step(key, state) -> (state, info)``.

    Both are pure; the state carries whatever the kernel needs (time, step index).
    ``horizon`` is ``None`` for a kernel that may run forever (MCMC) and the number of
    steps a fixed-horizon kernel may take from ``init`` otherwise; :func:`run` refuses to
    drive it further (see the module docstring). ``Kernel(init, step)`` leaves it ``None``.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> def step(key, x):
        ...     x = 0.5 * x + jax.random.normal(key)
        ...     return x, {"x": x}
        >>> ar1 = pg.Kernel(init=lambda x0: jnp.asarray(x0), step=step)
        >>> final, _ = pg.run(ar1, jax.random.key(0), ar1.init(0.0), 10)
        >>> final.shape
        ()
    """

    init: Callable[..., Any]
    step: Callable[[jax.Array, Any], tuple[Any, Any]]
    horizon: int | None = None


def check_horizon(step: jax.Array, horizon: int, where: str) -> None:
    """Under ``pg.validate``, fail at run time when the step index ``step`` is not below ``horizon``.

    Call it at the top of a fixed-horizon kernel's ``step`` with the index its state
    carries; outside ``pg.validate`` it adds nothing to the program.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> from probgen.kernels import check_horizon
        >>> def step(key, i):
        ...     check_horizon(i, 3, "counter")
        ...     return i + 1, i
        >>> counter = pg.Kernel(init=lambda: jnp.zeros((), jnp.int32), step=step, horizon=3)
        >>> try:
        ...     pg.validate(lambda i: pg.run(counter, jax.random.key(0), i, 2)[0])(jnp.int32(2))
        ... except pg.ValidationError as e:
        ...     print(e)
        counter: step index 3 is past the kernel's horizon of 3 steps (num_steps it was built for)
    """
    check(step < horizon,
          f"{where}: step index {{step}} is past the kernel's horizon of {horizon} steps "
          "(num_steps it was built for)", step=step)


def grid_time(step: jax.Array, num_steps: int, start: float, end: float, dtype) -> jax.Array:
    """Time at integer index ``step`` of the uniform grid from ``start`` to ``end`` in ``num_steps`` steps.

    Computed as ``start (1 - f) + end f`` with ``f = step / num_steps`` in ``dtype``, with
    ``step = 0`` giving ``start`` and ``step = num_steps`` giving ``end`` exactly (XLA may
    turn the division into a multiplication by ``1 / num_steps``, so the ends are pinned);
    the error does not grow with the number of steps (unlike adding ``dt`` repeatedly).

    Example:
        >>> import jax.numpy as jnp
        >>> from probgen.kernels import grid_time
        >>> float(grid_time(jnp.int32(3), 3, 1.0, 1e-3, jnp.float32)) == float(jnp.float32(1e-3))
        True
    """
    step = jnp.asarray(step)
    fraction = step.astype(dtype) / num_steps
    inner = (start * (1 - fraction) + end * fraction).astype(dtype)
    return jnp.where(step == 0, jnp.asarray(start, dtype), jnp.where(step == num_steps, jnp.asarray(end, dtype), inner))


def run(kernel: Kernel, key: jax.Array, state: Any, num_steps: int, keep: str = "last"):
    """Drive ``kernel`` for ``num_steps`` steps with ``lax.scan``.

    Step ``i`` (counting from 0 in this call) uses the key ``jax.random.fold_in(key, i)``.
    The index is carried through the scan, so no per-step key array is built: memory is
    O(1) in ``num_steps`` with ``keep="last"``. The same ``key`` gives the same steps with
    ``keep="last"`` and ``keep="all"``, and the first ``n`` steps of a longer run.

    Args:
      kernel: a :class:`Kernel` (``step`` and ``horizon`` are used).
      key: PRNG key; step ``i`` uses ``fold_in(key, i)``.
      state: the initial state (``kernel.init(...)``).
      num_steps: a static positive int, at most ``kernel.horizon`` when that is set.
      keep: ``"last"`` returns ``(final_state, last_info)`` and stores nothing per
        step (memory O(1) in ``num_steps``); ``"all"`` returns
        ``(final_state, (states, infos))`` with a leading step axis.

    Raises:
      SettingError: ``num_steps`` is not a positive int, exceeds ``kernel.horizon``, or
        ``keep`` is unknown.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> walk = pg.Kernel(init=jnp.asarray, step=lambda k, x: (x + 1.0, x))
        >>> final, (states, infos) = pg.run(walk, jax.random.key(0), walk.init(0.0), 5, keep="all")
        >>> float(final), states.shape
        (5.0, (5,))
    """
    num_steps = static_int(num_steps, "num_steps", "run")
    if keep not in ("last", "all"):
        raise SettingError(f"run: keep must be 'last' or 'all', got {keep!r}")
    horizon = getattr(kernel, "horizon", None)
    if horizon is not None and num_steps > horizon:
        raise SettingError(
            f"run: num_steps={num_steps} exceeds the kernel's horizon of {horizon} steps; it was "
            f"built for num_steps={horizon} and would extrapolate past its end (build it with "
            f"num_steps={num_steps} instead)")

    def one_step(s, index):
        return kernel.step(jax.random.fold_in(key, index), s)

    start = jnp.zeros((), jnp.int32)
    if keep == "all":
        def body(carry, _):
            s, index = carry
            s, info = one_step(s, index)
            return (s, index + 1), (s, info)

        (final, _), trajectory = jax.lax.scan(body, (state, start), None, length=num_steps)
        return final, trajectory

    # Carry only the latest info: its shape is found once, without running a step.
    _, info_shape = jax.eval_shape(one_step, state, start)
    init_info = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), info_shape)

    def body_last(carry, _):
        s, _, index = carry
        s, info = one_step(s, index)
        return (s, info, index + 1), None

    (final, last_info, _), _ = jax.lax.scan(body_last, (state, init_info, start), None, length=num_steps)
    return final, last_info

"""The one transition-kernel protocol every probgen sampler speaks, and its scan driver.

A :class:`Kernel` is a pair of pure functions typed by :class:`InitFn` and :class:`StepFn`
(the pattern of optax's ``GradientTransformation`` and blackjax's samplers):

- ``init(position_or_particles, ...) -> state``: the first argument is where the sampler
  starts, a position (an array, a pytree, a :class:`pg.Trace`) or particles with a
  leading particle axis; optional further arguments come after it. Settings (step sizes,
  counts, the model) are closed over by the factory that builds the kernel, never passed
  here, so every kernel starts the same way.
- ``step(key, state) -> (state, info)``: one transition. ``state`` is a pytree (a
  ``NamedTuple`` for a sampler with its own state) carrying everything the next step
  needs (time, step index); ``info`` is a ``NamedTuple`` of diagnostics. The same
  quantity has the same ``info`` name everywhere: ``acceptance_rate`` (mean MH
  acceptance probability), ``log_weights`` and ``ess``.

SMC steps, MCMC moves, diffusion and ODE/SDE integrator steps all are kernels, so
:func:`run` drives any of them with one ``lax.scan`` and ``jax.vmap`` batches any of them.
Kernel factories are named after their algorithm (``pg.mc.hmc``,
``pg.mc.particle_filter``); functions that build a kernel and run it to the end in one
call say so in their docstring (``pg.mc.smc``, ``pg.mc.tempered_smc``).

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

from typing import Any, Callable, NamedTuple, Protocol

import jax
import jax.numpy as jnp

from probgen.core.checks import static_int
from probgen.core.errors import SettingError
from probgen.core.validation import check


__all__ = ["InitFn", "Kernel", "StepFn", "check_horizon", "grid_time", "run"]

PyTree = Any  # a state or info: arrays in a pytree (a NamedTuple for a sampler's own state)


class InitFn(Protocol):
    """The ``init`` of a :class:`Kernel`: a starting point in, the kernel's state out.

    The first argument is the position (an array, a pytree, a :class:`pg.Trace`) or the
    particles (leading particle axis) the sampler starts from; a kernel may take further
    optional arguments after it (e.g. initial log weights). ``init`` is pure and may be
    called under ``jit``/``vmap``.
    """

    def __call__(self, position_or_particles: PyTree, /, *args: Any, **kwargs: Any) -> PyTree:
        """Build the state that :func:`run` and ``step`` start from."""


class StepFn(Protocol):
    """The ``step`` of a :class:`Kernel`: ``step(key, state) -> (state, info)``.

    Pure: the key is the only source of randomness and is split by the caller
    (:func:`run` gives step ``i`` the key ``fold_in(key, i)``). ``info`` is a
    ``NamedTuple`` of diagnostics, with the same names for the same quantity in every
    kernel (``acceptance_rate``, ``log_weights``, ``ess``).
    """

    def __call__(self, key: jax.Array, state: PyTree, /) -> tuple[PyTree, PyTree]:
        """Take one transition from ``state``: the new state and this step's info."""


class Kernel(NamedTuple):
    """A transition kernel: ``init`` builds a state, ``step(key, state) -> (state, info)``.

    Both are pure (see :class:`InitFn` and :class:`StepFn`); the state carries whatever
    the kernel needs (time, step index). ``horizon`` is ``None`` for a kernel that may run
    forever (MCMC) and the number of steps a fixed-horizon kernel may take from ``init``
    otherwise; :func:`run` refuses to drive it further (see the module docstring).
    ``Kernel(init, step)`` leaves it ``None``.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> from typing import NamedTuple
        >>> class AR1Info(NamedTuple):
        ...     increment: jax.Array
        >>> def step(key, x):
        ...     new = 0.5 * x + jax.random.normal(key)
        ...     return new, AR1Info(new - x)
        >>> ar1 = pg.Kernel(init=jnp.asarray, step=step)
        >>> final, info = pg.run(ar1, jax.random.key(0), ar1.init(0.0), 10)
        >>> final.shape, info.increment.shape
        ((), ())
    """

    init: InitFn
    step: StepFn
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
        >>> counter = pg.Kernel(init=lambda i: jnp.asarray(i, jnp.int32), step=step, horizon=3)
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


def run(kernel: Kernel, key: jax.Array, state: Any, num_steps: int, keep: str | Callable[[Any], Any] = "last"):
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
        ``(final_state, (states, infos))`` with a leading step axis; a function
        ``keep(state)`` returns ``(final_state, (kept, infos))`` where ``kept`` stacks
        ``keep`` of each step's state (e.g. the positions only, not the observed data or
        the gradients every state carries).

    Raises:
      SettingError: ``num_steps`` is not a positive int, exceeds ``kernel.horizon``, or
        ``keep`` is unknown.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> walk = pg.Kernel(init=jnp.asarray, step=lambda k, x: (x + 1.0, x))
        >>> final, (states, infos) = pg.run(walk, jax.random.key(0), walk.init(0.0), 5, keep="all")
        >>> float(final), states.shape
        (5.0, (5,))
        >>> _, (squares, _) = pg.run(walk, jax.random.key(0), walk.init(0.0), 3, keep=lambda x: x**2)
        >>> squares.tolist()
        [1.0, 4.0, 9.0]
    """
    num_steps = static_int(num_steps, "num_steps", "run")
    if not (keep in ("last", "all") or callable(keep)):
        raise SettingError(f"run: keep must be 'last', 'all' or a function of the state, got {keep!r}")
    horizon = getattr(kernel, "horizon", None)
    if horizon is not None and num_steps > horizon:
        raise SettingError(
            f"run: num_steps={num_steps} exceeds the kernel's horizon of {horizon} steps; it was "
            f"built for num_steps={horizon} and would extrapolate past its end (build it with "
            f"num_steps={num_steps} instead)")

    def one_step(s, index):
        return kernel.step(jax.random.fold_in(key, index), s)

    start = jnp.zeros((), jnp.int32)
    if keep == "all" or callable(keep):
        kept_of = (lambda s: s) if keep == "all" else keep

        def body(carry, _):
            s, index = carry
            s, info = one_step(s, index)
            return (s, index + 1), (kept_of(s), info)

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

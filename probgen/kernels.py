"""The one transition-kernel protocol every probgen sampler speaks, and its scan driver.

A :class:`Kernel` is a pair of pure functions: ``init(...) -> state`` and
``step(key, state) -> (state, info)``. SMC steps, MCMC moves, diffusion and ODE/SDE
integrator steps all are kernels, so :func:`run` drives any of them with one
``lax.scan`` and ``jax.vmap`` batches any of them.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax


class Kernel(NamedTuple):
    """A transition kernel: ``init`` builds a state, ``step(key, state) -> (state, info)``.

    Both are pure; the state carries whatever the kernel needs (time, step index).

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


def run(kernel: Kernel, key: jax.Array, state: Any, num_steps: int, keep: str = "last"):
    """Drive ``kernel`` for ``num_steps`` steps with ``lax.scan``.

    Args:
      kernel: a :class:`Kernel` (only ``step`` is used).
      key: PRNG key, split into one key per step.
      state: the initial state (``kernel.init(...)``).
      num_steps: a static positive int.
      keep: ``"last"`` returns ``(final_state, last_info)`` and stores nothing per
        step (memory O(1) in ``num_steps``); ``"all"`` returns
        ``(final_state, (states, infos))`` with a leading step axis.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> walk = pg.Kernel(init=jnp.asarray, step=lambda k, x: (x + 1.0, x))
        >>> final, (states, infos) = pg.run(walk, jax.random.key(0), walk.init(0.0), 5, keep="all")
        >>> float(final), states.shape
        (5.0, (5,))
    """
    if not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"run: num_steps must be a positive int, got {num_steps!r}")
    if keep not in ("last", "all"):
        raise ValueError(f"run: keep must be 'last' or 'all', got {keep!r}")
    keys = jax.random.split(key, num_steps)
    if keep == "all":
        def body(s, k):
            s, info = kernel.step(k, s)
            return s, (s, info)

        return jax.lax.scan(body, state, keys)

    # Carry only the latest info: its shape is found once, without running a step.
    _, info_shape = jax.eval_shape(kernel.step, keys[0], state)
    init_info = jax.tree.map(lambda s: jax.numpy.zeros(s.shape, s.dtype), info_shape)

    def body_last(carry, k):
        s, _ = carry
        return kernel.step(k, s), None

    (final, last_info), _ = jax.lax.scan(body_last, (state, init_info), keys)
    return final, last_info

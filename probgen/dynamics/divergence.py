"""The divergence of a vector field: exact (one JVP per dimension) or Hutchinson's estimate.

One implementation serves one point and a batch. A batch is a leading axis whose rows do
not interact (``f(x)[i]`` depends on ``x[i]`` only, as for a score or velocity evaluated
on a particle batch): then a tangent holding the ``j``-th basis vector in *every* row
gives, through one Jacobian-vector product, ``d f_j / d x_j`` of every row at once, so the
exact per-row divergence costs ``D`` JVPs whatever the batch size (``D`` the size of one
row). One point is the batch of one row.

Hutchinson's estimator ``E[z^T (df/dx) z] = tr(df/dx)`` for ``z`` with ``E[z z^T] = I``
(Hutchinson 1989; FFJORD, Grathwohl et al. 2019) costs ``num_probes`` JVPs and is unbiased.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from probgen.core.checks import static_int
from probgen.core.errors import SettingError

ESTIMATORS = ("exact", "hutchinson")
PROBES = ("rademacher", "gaussian")


def check_divergence_settings(estimator: str, num_probes, probe: str, where: str) -> int:
    """Check an estimator name, probe count and probe law; return ``num_probes`` as an int.

    Example:
        >>> from probgen.dynamics.divergence import check_divergence_settings
        >>> check_divergence_settings("hutchinson", 4, "gaussian", "my_cnf")
        4
    """
    if estimator not in ESTIMATORS:
        raise SettingError(f"{where}: divergence must be one of {ESTIMATORS}, got {estimator!r}")
    if probe not in PROBES:
        raise SettingError(f"{where}: probe must be one of {PROBES}, got {probe!r}")
    return static_int(num_probes, "num_probes", where)


def divergence(f: Callable, x: jax.Array, estimator: str = "exact", key: jax.Array | None = None,
               num_probes: int = 1, probe: str = "rademacher", batched: bool = False):
    """The value ``f(x)`` and the divergence ``tr(df/dx)`` (per row when ``batched``).

    Args:
      f: a function from arrays of ``x``'s shape to arrays of the same shape.
      x: one point (any shape), or with ``batched=True`` a batch ``(num_rows, *event_shape)``
        whose rows ``f`` treats independently.
      estimator: ``"exact"`` (one JVP per dimension of a row) or ``"hutchinson"``.
      key: PRNG key for the Hutchinson probes (required then, ignored otherwise).
      num_probes: Hutchinson probes averaged (each costs one JVP).
      probe: ``"rademacher"`` (lowest variance) or ``"gaussian"`` probes.
      batched: treat the leading axis of ``x`` as independent rows.

    Returns:
      ``(f(x), div)`` with ``div`` a scalar, or ``(num_rows,)`` when ``batched``, in
      ``x``'s dtype.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> value, div = pg.dynamics.divergence(lambda x: x**2, jnp.array([1.0, 2.0]))
        >>> float(div)  # 2 x_1 + 2 x_2
        6.0
        >>> _, rows = pg.dynamics.divergence(lambda x: -3.0 * x, jnp.ones((4, 2)), batched=True)
        >>> rows.tolist()
        [-6.0, -6.0, -6.0, -6.0]
    """
    num_probes = check_divergence_settings(estimator, num_probes, probe, "divergence")
    x = jnp.asarray(x)
    if batched and x.ndim < 1:
        raise SettingError(f"divergence: batched=True needs x with a leading row axis, got shape {x.shape}")
    rows = x if batched else x[None]
    row_fn = f if batched else (lambda y: f(y[0])[None])
    value, jvp = jax.linearize(row_fn, rows)
    if value.shape != rows.shape:
        raise SettingError(f"divergence: f(x) must have x's shape {x.shape}, got {value.shape[int(not batched):]}")
    num_rows, row_size = rows.shape[0], rows[0].size

    def directional(tangent):  # (num_rows, row_size): J_i tangent_i for every row i
        return jvp(tangent).astype(x.dtype).reshape(num_rows, row_size)

    if estimator == "exact":
        def along_axis(j):  # d f_j / d x_j of every row
            basis = jnp.zeros((num_rows, row_size), x.dtype).at[:, j].set(1.0).reshape(rows.shape)
            return directional(basis)[:, j]

        div = jnp.sum(jax.vmap(along_axis)(jnp.arange(row_size)), axis=0)
    else:
        if key is None:
            raise SettingError("divergence: estimator='hutchinson' needs a key to draw the probes")
        draw = jax.random.rademacher if probe == "rademacher" else jax.random.normal
        probes = draw(key, (num_probes,) + rows.shape, dtype=x.dtype)

        def quadratic_form(z):  # z_i^T J_i z_i for every row i
            return jnp.sum(z.reshape(num_rows, row_size) * directional(z), axis=-1)

        div = jnp.mean(jax.vmap(quadratic_form)(probes), axis=0)
    value = value.astype(x.dtype)
    return (value, div) if batched else (value[0], div[0])

"""Vmapped hyperparameter sweeps: a whole training run per grid point, in one compiled call."""

from __future__ import annotations

import functools
import itertools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from probgen.core.errors import ArgumentError, SettingError
from probgen.train.errors import SweepAxisError
from probgen.train.params import merge_params, split_params
from probgen.train.programs import _ProgramCache

_SHAPE_ERRORS = (
    jax.errors.ConcretizationTypeError,
    jax.errors.TracerIntegerConversionError,
    jax.errors.TracerBoolConversionError,
    jax.errors.TracerArrayConversionError,
    TypeError,
)


class SweepResult(NamedTuple):
    """Stacked results of :func:`sweep`.

    Attributes:
      axes: dict ``name -> 1-D numpy array`` of the values swept, in grid order.
      results: the pytree ``train_fn`` returns, every leaf with leading axes
        ``grid_shape = tuple(len(v) for v in axes.values())``.
    """

    axes: dict
    results: Any

    @property
    def grid_shape(self) -> tuple[int, ...]:
        """The shape of the hyperparameter grid."""
        return tuple(len(v) for v in self.axes.values())

    def config(self, index: tuple[int, ...]) -> dict:
        """The hyperparameters at grid ``index`` (a tuple, one int per axis)."""
        return {name: values[i].item() for (name, values), i in zip(self.axes.items(), index)}

    def member(self, index: tuple[int, ...]) -> Any:
        """The results of the run at grid ``index``."""
        arrays, static = split_params(self.results)
        return merge_params(jax.tree.map(lambda leaf: leaf[tuple(index)], arrays), static)


def _members(train_fn, static_out: dict, member_sharding, config):
    def member(c):
        # A module in the results (an equinox Module's functions): only its arrays are stacked.
        arrays, static_out["static"] = split_params(train_fn(**c))
        return arrays

    out = jax.vmap(member)(config)
    if member_sharding is not None:
        out = jax.lax.with_sharding_constraint(out, member_sharding)
    return out


def _members_program(train_fn: Callable[..., Any]) -> Callable[..., Any]:
    static_out: dict = {}  # filled when the program is traced; kept with the compiled program
    program = jax.jit(functools.partial(_members, train_fn, static_out), static_argnums=(0,))

    def run(member_sharding, config):
        return program(member_sharding, config), static_out["static"]

    return run


# Module-level, so sweeping the same train_fn again (or a re-built closure that computes
# the same thing) reuses the compiled program; the last few programs are kept.
_compiled_members = _ProgramCache(_members_program)


def _axis_values(name: str, values: Any) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim == 0:
        array = array[None]
    if array.ndim != 1 or array.size == 0:
        raise SettingError(f"sweep: axis {name!r} must be a non-empty 1-D sequence, got shape {array.shape}")
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise SweepAxisError(f"sweep: axis {name!r} must hold numbers, got dtype {array.dtype}")
    return array


def _device_dtype(array: np.ndarray) -> np.ndarray:
    """The values as JAX will see them (float32 / int32 unless x64 is on)."""
    return np.asarray(jnp.asarray(array))


def sweep(
    train_fn: Callable[..., Any],
    *,
    mesh: Any = None,
    axis_name: str = "sweep",
    **axes: Any,
) -> SweepResult:
    """Run ``train_fn(**config)`` for every point of the grid ``axes``, vmapped, in one call.

    The whole training run is vmapped over the Cartesian product of the axes and
    compiled once. Sweep floats (learning rates through ``optax.inject_hyperparams``,
    β, temperatures) and int seeds (``jax.random.key(seed)`` works on traced ints).
    Ints that set shapes (particle counts, layer sizes) cannot be vmapped: loop over
    them in Python and call ``sweep`` once per value.

    Args:
      train_fn: a pure function of the hyperparameters (as keyword arguments) returning
        a pytree of arrays, e.g. a :class:`probgen.train.FitResult` from
        :func:`probgen.train.fit` (which runs as one scan under ``vmap``).
      mesh: optional ``jax.sharding.Mesh``; the sweep members are sharded across its
        ``axis_name`` axis (the grid size must be a multiple of that axis's size).
      axis_name: the mesh axis that holds the sweep members.
      **axes: ``name=values``; each a 1-D sequence of numbers.

    Returns:
      A :class:`SweepResult` whose leaves have leading axes ``grid_shape``.

    Raises:
      SweepAxisError: an axis cannot be vmapped (an int that sets a shape, a non-number).

    Example:
        >>> import jax, jax.numpy as jnp, optax
        >>> import probgen as pg
        >>> loss = lambda p, key, batch: jnp.sum((p - 2.0) ** 2)
        >>> def train(learning_rate, seed):
        ...     opt = optax.inject_hyperparams(optax.sgd)(learning_rate=learning_rate)
        ...     p0 = jax.random.normal(jax.random.key(seed))
        ...     return pg.train.fit(loss, p0, opt, jax.random.key(seed), steps=50)
        >>> result = pg.train.sweep(train, learning_rate=[0.01, 0.1, 0.3], seed=[0, 1])
        >>> result.grid_shape, result.results.params.shape
        ((3, 2), (3, 2))
        >>> pg.train.best(result, "loss")[0]["learning_rate"]
        0.3
    """
    if not axes:
        raise SettingError("sweep needs at least one axis, e.g. sweep(train_fn, learning_rate=[...])")
    axes = {name: _axis_values(name, values) for name, values in axes.items()}
    grid_shape = tuple(len(v) for v in axes.values())
    grids = np.meshgrid(*axes.values(), indexing="ij")
    # ``axes`` keeps the values as given (for reports); the members get JAX's dtypes.
    flat = {name: _device_dtype(grid.reshape(-1)) for name, grid in zip(axes, grids)}
    num_members = int(np.prod(grid_shape))

    member_sharding = None
    if mesh is not None:
        from jax.sharding import NamedSharding, PartitionSpec  # noqa: PLC0415

        if axis_name not in mesh.axis_names:
            raise SettingError(f"sweep: axis_name {axis_name!r} is not an axis of the mesh {mesh.axis_names}")
        count = mesh.shape[axis_name]
        if num_members % count:
            raise SettingError(
                f"sweep: the grid has {num_members} members, not a multiple of the {count} devices "
                f"on mesh axis {axis_name!r}; add or drop grid points"
            )
        member_sharding = NamedSharding(mesh, PartitionSpec(axis_name))
        flat = jax.device_put(flat, member_sharding)

    try:
        stacked, static = _compiled_members(train_fn)(member_sharding, flat)
    except _SHAPE_ERRORS as err:
        int_axes = [name for name, v in axes.items() if np.issubdtype(v.dtype, np.integer)]
        if not int_axes:
            raise
        raise SweepAxisError(
            f"sweep could not vmap train_fn over the integer axes {int_axes}: under vmap they "
            "are traced values, so they cannot set array shapes or Python control flow "
            "(particle counts, layer sizes, numbers of steps). Loop over such values in Python "
            "and call sweep once per value, e.g. "
            f"[sweep(functools.partial(train_fn, {int_axes[0]}=n), ...) for n in ...]. "
            f"Original error: {type(err).__name__}: {str(err).splitlines()[0]}"
        ) from err
    results = merge_params(jax.tree.map(lambda leaf: leaf.reshape(grid_shape + leaf.shape[1:]), stacked), static)
    return SweepResult(axes, results)


def metric_values(result: SweepResult, metric: str | Callable[[Any], Any]) -> np.ndarray:
    """The grid-shaped array of one metric of a sweep.

    Args:
      result: a :class:`SweepResult`.
      metric: a callable on the stacked results returning an array of ``grid_shape``,
        or a name: for :class:`~probgen.train.FitResult` results the final value of
        ``history[name]``, for dict results ``results[name]``.

    Returns:
      A numpy array of shape ``result.grid_shape``.

    Example:
        >>> import jax.numpy as jnp
        >>> r = SweepResult({"beta": jnp.array([1.0, 2.0])}, {"score": jnp.array([0.5, 0.25])})
        >>> metric_values(r, "score").tolist()
        [0.5, 0.25]
    """
    if callable(metric):
        values = metric(result.results)
    elif hasattr(result.results, "history"):
        if metric not in result.results.history:
            raise KeyError(f"metric {metric!r} not in the history: {sorted(result.results.history)}")
        values = result.results.history[metric][..., -1]
    elif isinstance(result.results, dict):
        values = result.results[metric]
    else:
        raise ArgumentError(f"cannot find metric {metric!r} in results of type {type(result.results)}")
    values = np.asarray(values)
    if values.shape != result.grid_shape:
        raise SettingError(
            f"metric_values: metric {metric!r} has shape {values.shape}, expected the grid shape "
            f"{result.grid_shape}"
        )
    return values


def best(
    result: SweepResult, metric: str | Callable[[Any], Any] = "loss", mode: str = "min"
) -> tuple[dict, Any]:
    """The best configuration of a sweep and its results (NaNs never win).

    Args:
      result: a :class:`SweepResult`.
      metric: see :func:`metric_values`; default the final loss.
      mode: ``"min"`` or ``"max"``.

    Returns:
      ``(config, member)``: the hyperparameters as a dict and that run's results.

    Example:
        >>> import jax.numpy as jnp
        >>> r = SweepResult({"beta": jnp.array([1.0, 2.0])}, {"score": jnp.array([0.5, 0.2])})
        >>> best(r, "score")[0]
        {'beta': 2.0}
    """
    if mode not in ("min", "max"):
        raise SettingError(f"best: mode must be 'min' or 'max', got {mode!r}")
    values = metric_values(result, metric).astype(float)
    if np.all(np.isnan(values)):
        raise SettingError(f"every member of the sweep has a NaN {metric!r}")
    flat_index = np.nanargmin(values) if mode == "min" else np.nanargmax(values)
    index = np.unravel_index(flat_index, result.grid_shape)
    index = tuple(int(i) for i in index)
    return result.config(index), result.member(index)


def tabulate(
    result: SweepResult, metric: str | Callable[[Any], Any] = "loss", fmt: str = ".5g"
) -> str:
    """A plain-text table: one row per grid point, the hyperparameters then the metric.

    Example:
        >>> import jax.numpy as jnp
        >>> r = SweepResult({"beta": jnp.array([1.0, 2.0])}, {"score": jnp.array([0.5, 0.25])})
        >>> print(tabulate(r, "score"))
        beta  score
        1     0.5
        2     0.25
    """
    values = metric_values(result, metric)
    name = metric if isinstance(metric, str) else getattr(metric, "__name__", "metric")
    header = list(result.axes) + [name]
    rows = []
    for index in itertools.product(*(range(n) for n in result.grid_shape)):
        config = result.config(index)
        rows.append([f"{v:{fmt}}" for v in config.values()] + [f"{values[index]:{fmt}}"])
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip() for line in [header, *rows]]
    return "\n".join(lines)

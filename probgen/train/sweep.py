"""Vmapped hyperparameter sweeps: a whole training run per grid point, run as fits are.

``sweep(train_fn, **axes)`` vmaps ``train_fn(**config)`` over the grid. When ``train_fn``
calls :func:`probgen.train.fit` (or ``optimize``) once, that fit runs for all members at
once in compiled chunks driven from Python, like a fit: one progress bar, members that
diverge frozen and reported, orbax checkpoints of the stacked member states and
:func:`resume_sweep` continuing bit for bit. Otherwise the whole ``train_fn`` is one
compiled, vmapped call.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import warnings
from typing import Any, Callable, Iterator, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from probgen.core.checks import static_int
from probgen.core.errors import ArgumentError, SettingError
from probgen.train import checkpoint as ckpt
from probgen.train.errors import CheckpointMismatchError, SweepAxisError
from probgen.train.fitting import _drive_chunks, _fingerprints, _MemberFit
from probgen.train.params import merge_params, split_params
from probgen.train.programs import _ProgramCache
from probgen.train.progress import progress_bar
from probgen.train.state import FitState

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
      first_bad_step: grid-shaped int array: the step at which a member's loss or
        gradient became non-finite (it stayed frozen at the state entering that step,
        while the others trained on), ``-1`` for members that trained through. ``None``
        when ``train_fn`` was not run chunk by chunk (it does not call ``fit`` once).
    """

    axes: dict
    results: Any
    first_bad_step: Any = None

    @property
    def grid_shape(self) -> tuple[int, ...]:
        """The shape of the hyperparameter grid."""
        return tuple(len(v) for v in self.axes.values())

    @property
    def diverged(self) -> np.ndarray | None:
        """Grid-shaped booleans: which members diverged (``None`` if not known)."""
        return None if self.first_bad_step is None else np.asarray(self.first_bad_step) >= 0

    def config(self, index: tuple[int, ...]) -> dict:
        """The hyperparameters at grid ``index`` (a tuple, one int per axis)."""
        return {name: values[i].item() for (name, values), i in zip(self.axes.items(), index)}

    def member(self, index: tuple[int, ...]) -> Any:
        """The results of the run at grid ``index``."""
        arrays, static = split_params(self.results)
        return merge_params(jax.tree.map(lambda leaf: leaf[tuple(index)], arrays), static)


# --- the compiled programs: train_fn vmapped over the members, in four modes ------------------


class _InitInfo(NamedTuple):
    """What tracing ``train_fn`` in mode "init" found out about its fit calls."""

    calls: int  # fits traced at the member's own level
    nested: int  # fits under a transformation inside train_fn
    steps: int | None
    names: tuple[str, ...] | None  # the history's entries, "loss" first
    run_config: dict | None

    @property
    def chunkable(self) -> bool:
        return self.calls == 1 and self.nested == 0


def _signature(tree: Any) -> tuple:
    """Structure, shapes and dtypes: what a jitted program is traced anew for."""
    leaves, treedef = jax.tree.flatten(tree)
    return str(treedef), tuple((tuple(leaf.shape), str(leaf.dtype)) for leaf in leaves)


def _traced_members(train_fn, infos: dict, mode: str, member_sharding, length: int, config, state, ok, history):
    """``train_fn`` vmapped over the members in one :class:`~probgen.train.fitting._MemberFit` mode.

    ``"plain"`` runs ``train_fn`` as it is (the whole run in one call). What the trace
    finds out (fit calls, settings; the non-array parts of the results) is filed in
    ``infos`` under the mode and the arguments' signature, so a program reused from
    jit's cache finds it again.
    """
    found = []

    def member(config, state, ok, history):
        if mode == "plain":
            arrays, static = split_params(train_fn(**config))
            found.append(static)
            return arrays
        context = _MemberFit(mode, length, state, ok, history)
        with context.active():
            out = train_fn(**config)
        if mode == "init":
            start = context.start
            found.append(_InitInfo(context.calls, context.nested, *(start[1:] if start else (None,) * 3)))
            return start.state if context.chunkable else None
        if not context.chunkable:
            raise SettingError(
                f"sweep: train_fn called fit {context.calls} time(s) directly and {context.nested} "
                "time(s) under a transformation in this trace, but once directly when first traced"
            )
        if mode == "chunk":
            found.append(None)
            return context.chunk
        arrays, static = split_params(out)
        found.append(static)
        return arrays

    out = jax.vmap(member)(config, state, ok, history)
    if member_sharding is not None:
        out = jax.lax.with_sharding_constraint(out, member_sharding)
    infos[(mode, length, _signature((config, state, ok, history)))] = found[0]
    return out


class _SweepPrograms(NamedTuple):
    """The compiled programs of one ``train_fn`` (each compiled once per signature / length)."""

    init: Callable[..., Any]  # (member_sharding, config) -> (initial state | None, _InitInfo)
    chunk: Callable[..., Any]  # (member_sharding, length, config, state, ok) -> (state, ok, outputs)
    finish: Callable[..., Any]  # (member_sharding, config, state, history) -> (arrays, static)
    plain: Callable[..., Any]  # (member_sharding, config) -> (arrays, static)


def _sweep_programs(train_fn: Callable[..., Any]) -> _SweepPrograms:
    infos: dict = {}  # filled when a program is traced; kept with the compiled programs
    jitted = {
        mode: jax.jit(functools.partial(_traced_members, train_fn, infos, mode), static_argnums=(0, 1))
        for mode in ("init", "chunk", "finish", "plain")
    }

    def call(mode, member_sharding, length=0, config=None, state=None, ok=None, history=None):
        out = jitted[mode](member_sharding, length, config, state, ok, history)
        return out, infos[(mode, length, _signature((config, state, ok, history)))]

    return _SweepPrograms(
        init=lambda sharding, config: call("init", sharding, 0, config),
        chunk=lambda sharding, length, config, state, ok: call("chunk", sharding, length, config, state, ok)[0],
        finish=lambda sharding, config, state, history: call("finish", sharding, 0, config, state, None, history),
        plain=lambda sharding, config: call("plain", sharding, 0, config),
    )


# Module-level, so sweeping the same train_fn again (or a re-built closure that computes
# the same thing) reuses the compiled programs; the last few are kept.
_compiled_members = _ProgramCache(_sweep_programs)


# --- the grid -------------------------------------------------------------------------------


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


class _Grid(NamedTuple):
    axes: dict  # name -> values as given (for reports)
    shape: tuple[int, ...]
    config: dict  # name -> flat values, one per member, in JAX's dtypes
    member_sharding: Any


def _grid(axes: dict, mesh: Any, axis_name: str, where: str) -> _Grid:
    if not axes:
        raise SettingError(f"{where} needs at least one axis, e.g. {where}(train_fn, learning_rate=[...])")
    axes = {name: _axis_values(name, values) for name, values in axes.items()}
    shape = tuple(len(v) for v in axes.values())
    grids = np.meshgrid(*axes.values(), indexing="ij")
    config = {name: _device_dtype(grid.reshape(-1)) for name, grid in zip(axes, grids)}
    member_sharding = None
    if mesh is not None:
        from jax.sharding import NamedSharding, PartitionSpec  # noqa: PLC0415

        if axis_name not in mesh.axis_names:
            raise SettingError(f"{where}: axis_name {axis_name!r} is not an axis of the mesh {mesh.axis_names}")
        count = mesh.shape[axis_name]
        num_members = int(np.prod(shape))
        if num_members % count:
            raise SettingError(
                f"{where}: the grid has {num_members} members, not a multiple of the {count} devices "
                f"on mesh axis {axis_name!r}; add or drop grid points"
            )
        member_sharding = NamedSharding(mesh, PartitionSpec(axis_name))
        config = jax.device_put(config, member_sharding)
    return _Grid(axes, shape, config, member_sharding)


@contextlib.contextmanager
def _int_axis_errors(axes: dict) -> Iterator[None]:
    """Explain a failure to trace ``train_fn`` with a traced int axis (it set a shape)."""
    try:
        yield
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


def _grid_shaped(stacked: Any, static: Any, grid_shape: tuple[int, ...]) -> Any:
    return merge_params(jax.tree.map(lambda leaf: leaf.reshape(grid_shape + leaf.shape[1:]), stacked), static)


# --- the sweep ------------------------------------------------------------------------------


def sweep(
    train_fn: Callable[..., Any],
    *,
    mesh: Any = None,
    axis_name: str = "sweep",
    chunk_size: int = 100,
    progress: bool | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    max_to_keep: int | None = 3,
    **axes: Any,
) -> SweepResult:
    """Run ``train_fn(**config)`` for every point of the grid ``axes``, vmapped.

    The whole training run is vmapped over the Cartesian product of the axes. Sweep
    floats (learning rates through ``optax.inject_hyperparams``, β, temperatures) and int
    seeds (``jax.random.key(seed)`` works on traced ints). Ints that set shapes (particle
    counts, layer sizes) cannot be vmapped: loop over them in Python and call ``sweep``
    once per value.

    When ``train_fn`` calls :func:`probgen.train.fit` (or ``optimize``) exactly once, and
    not under a ``jit`` / ``vmap`` / ``lax.scan`` / ``cond`` of its own, that fit runs for
    all members together in compiled chunks of ``chunk_size`` steps, as :func:`fit` does:
    one progress bar over its steps, members whose loss or gradient becomes non-finite
    frozen at their last good state (the others train on) and reported in
    ``first_bad_step`` / ``diverged`` and a warning, checkpoints of the stacked member
    states, and :func:`resume_sweep` to continue bit for bit. Step ``i`` of every member
    draws from ``(key, i)`` only, so the results equal one uninterrupted scan. The
    programs compile once per distinct chunk length, plus a small one before and after.
    Any other ``train_fn`` (no fit, several fits) runs as one compiled vmapped call.

    Args:
      train_fn: a pure function of the hyperparameters (as keyword arguments) returning
        a pytree of arrays, e.g. a :class:`probgen.train.FitResult` from
        :func:`probgen.train.fit`.
      mesh: optional ``jax.sharding.Mesh``; the sweep members are sharded across its
        ``axis_name`` axis (the grid size must be a multiple of that axis's size).
      axis_name: the mesh axis that holds the sweep members.
      chunk_size: steps per compiled chunk (progress, NaN report and checkpoints happen
        between chunks).
      progress: ``True`` / ``False`` / ``None`` (show only in a terminal or notebook, not CI).
      checkpoint_dir: folder for orbax checkpoints of all members (params, optimizer
        states, steps, keys, histories, and the grid); it must be missing or empty and
        writable (checked before any training). Continue with :func:`resume_sweep`.
      checkpoint_every: save every this many steps (``None``: at the end), and on
        ``KeyboardInterrupt`` (the last completed chunk).
      max_to_keep: how many checkpoints to keep (``None``: all).
      **axes: ``name=values``; each a 1-D sequence of numbers.

    Returns:
      A :class:`SweepResult` whose leaves have leading axes ``grid_shape``.

    Raises:
      SweepAxisError: an axis cannot be vmapped (an int that sets a shape, a non-number).
      SettingError: a bad count, a ``checkpoint_dir`` that holds files or cannot be
        written, or ``checkpoint_dir`` / ``progress=True`` with a ``train_fn`` that does
        not call ``fit`` exactly once (so cannot run chunk by chunk).

    Example:
        >>> import jax, jax.numpy as jnp, optax
        >>> import probgen as pg
        >>> loss = lambda p, key, batch: jnp.sum((p - 2.0) ** 2)
        >>> def train(learning_rate, seed):
        ...     opt = optax.inject_hyperparams(optax.sgd)(learning_rate=learning_rate)
        ...     p0 = jax.random.normal(jax.random.key(seed))
        ...     return pg.train.fit(loss, p0, opt, jax.random.key(seed), steps=50)
        >>> result = pg.train.sweep(train, learning_rate=[0.01, 0.1, 0.3], seed=[0, 1], progress=False)
        >>> result.grid_shape, result.results.params.shape
        ((3, 2), (3, 2))
        >>> pg.train.best(result, "loss")[0]["learning_rate"]
        0.3
        >>> result.diverged.any()
        np.False_
    """
    return _run_sweep(
        train_fn, axes, where="sweep", mesh=mesh, axis_name=axis_name, chunk_size=chunk_size,
        progress=progress, checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every,
        max_to_keep=max_to_keep, resume=False,
    )


def resume_sweep(
    train_fn: Callable[..., Any],
    checkpoint_dir: str | os.PathLike,
    *,
    mesh: Any = None,
    axis_name: str = "sweep",
    chunk_size: int = 100,
    progress: bool | None = None,
    checkpoint_every: int | None = None,
    max_to_keep: int | None = 3,
    **axes: Any,
) -> SweepResult:
    """Continue a checkpointed :func:`sweep` from its latest checkpoint, bit for bit.

    Restores every member's parameters, optimizer state, step, key and history from
    ``checkpoint_dir`` and runs the fit inside ``train_fn`` on to its ``steps``; the
    result equals the uninterrupted sweep's bit for bit (histories included). ``train_fn``
    and the grid must be those of the original sweep: the checkpoint records the axes
    and their values, the fit's ``steps``, batch settings and data signature, and
    fingerprints of ``train_fn``, the loss and the optimizer, and refuses another sweep
    before any training.

    Args:
      train_fn: the original sweep's ``train_fn``.
      checkpoint_dir: the folder the sweep checkpointed into; new checkpoints go there too.
      mesh, axis_name, chunk_size, progress, checkpoint_every, max_to_keep: as in :func:`sweep`.
      **axes: the original sweep's axes, the same names and values in the same order.

    Returns:
      A :class:`SweepResult` covering all steps.

    Raises:
      CheckpointError: no checkpoint, or a corrupted one.
      CheckpointMismatchError: the checkpoint was written by another sweep (other axes or
        values, another ``train_fn``, loss, optimizer or settings) or by a :func:`fit`; the
        message names what differs.
      SettingError: ``train_fn`` does not call ``fit`` exactly once, or the folder cannot
        be written.

    Example:
        >>> import os, shutil, tempfile, jax, jax.numpy as jnp, optax
        >>> import probgen as pg
        >>> loss = lambda p, key, batch: jnp.sum((p - 2.0) ** 2)
        >>> def train(learning_rate):
        ...     opt = optax.inject_hyperparams(optax.sgd)(learning_rate=learning_rate)
        ...     return pg.train.fit(loss, jnp.zeros(()), opt, jax.random.key(0), steps=20)
        >>> folder = tempfile.mkdtemp()
        >>> full = pg.train.sweep(train, learning_rate=[0.1, 0.2], checkpoint_dir=folder,
        ...                       checkpoint_every=10, max_to_keep=None, progress=False)
        >>> shutil.rmtree(os.path.join(folder, "20"))  # as if stopped after step 10
        >>> rest = pg.train.resume_sweep(train, folder, learning_rate=[0.1, 0.2], progress=False)
        >>> bool(jnp.all(rest.results.params == full.results.params)), rest.results.history["loss"].shape
        (True, (2, 20))
    """
    return _run_sweep(
        train_fn, axes, where="resume_sweep", mesh=mesh, axis_name=axis_name, chunk_size=chunk_size,
        progress=progress, checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every,
        max_to_keep=max_to_keep, resume=True,
    )


def _sweep_config(train_fn: Callable[..., Any], axes: dict, info: _InitInfo) -> dict:
    """What a resumed sweep must share with the original: the grid, the fit, ``train_fn``."""
    return {
        **info.run_config,
        "kind": "sweep",
        "axes": [[name, values.tolist()] for name, values in axes.items()],
        "steps": info.steps,
        **_fingerprints(train_fn=train_fn),
    }


def _restored(checkpoint_dir, initial: FitState, grid: _Grid, info: _InitInfo, run_config: dict, where: str):
    """The latest checkpoint's state, history and step, checked against this sweep."""
    done = ckpt.latest_step(checkpoint_dir)
    num_members = int(np.prod(grid.shape))
    state, history = ckpt.restore_checkpoint(
        checkpoint_dir, initial.params, initial.opt_state, step=done, run_config=run_config,
        member_shape=(num_members,),
    )
    done = int(done)
    if set(history) != set(info.names):
        raise CheckpointMismatchError(
            f"{where}: the checkpoint at step {done} in {os.fspath(checkpoint_dir)!r} has the history "
            f"entries {sorted(history)}, the fit in train_fn records {sorted(info.names)}"
        )
    if done > info.steps:
        raise SettingError(
            f"{where}: the checkpoint in {os.fspath(checkpoint_dir)!r} is at step {done}, past the "
            f"{info.steps} steps of the fit in train_fn"
        )
    if done < info.steps:
        ckpt.prepare_checkpoint_dir(checkpoint_dir, where=where, resume_from=done)
    if grid.member_sharding is not None:
        state = jax.device_put(state, grid.member_sharding)
    return state, {name: history[name] for name in info.names}, done


def _report_diverged(grid: _Grid, first_bad_step: np.ndarray, where: str) -> None:
    bad = np.argwhere(first_bad_step >= 0)
    if not len(bad):
        return
    shown = [f"{_grid_config(grid, index)} at step {first_bad_step[tuple(index)]}" for index in bad[:5]]
    more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
    warnings.warn(
        f"{where}: {len(bad)} of {first_bad_step.size} members diverged (a non-finite loss or "
        f"gradient) and stayed frozen at their last good state: {'; '.join(shown)}{more}. "
        "See SweepResult.diverged and first_bad_step; best() skips their NaN losses.",
        RuntimeWarning,
        stacklevel=4,
    )


def _grid_config(grid: _Grid, index) -> str:
    return ", ".join(f"{name}={values[int(i)].item():g}" for (name, values), i in zip(grid.axes.items(), index))


def _run_sweep(
    train_fn, axes: dict, *, where: str, mesh, axis_name: str, chunk_size, progress, checkpoint_dir,
    checkpoint_every, max_to_keep, resume: bool,
) -> SweepResult:
    chunk_size = static_int(chunk_size, "chunk_size", where)
    if checkpoint_every is not None:
        checkpoint_every = static_int(checkpoint_every, "checkpoint_every", where)
        if checkpoint_dir is None:
            raise SettingError(f"{where}: checkpoint_every was given without checkpoint_dir")
    if max_to_keep is not None:
        max_to_keep = static_int(max_to_keep, "max_to_keep", where)
    grid = _grid(axes, mesh, axis_name, where)
    programs = _compiled_members(train_fn)
    with _int_axis_errors(grid.axes):
        initial, info = programs.init(grid.member_sharding, grid.config)
    if not info.chunkable:
        if resume or checkpoint_dir is not None or (progress is not None and bool(progress)):
            nested = f" and {info.nested} time(s) under a jit / vmap / scan / cond of its own" if info.nested else ""
            raise SettingError(
                f"{where}: progress and checkpoints run the fit inside train_fn chunk by chunk, so "
                f"train_fn must call pg.train.fit (or optimize) exactly once, directly; it called it "
                f"{info.calls} time(s) directly{nested}. Drop checkpoint_dir and progress=True to "
                "run it as one compiled call, or sweep each fit separately."
            )
        with _int_axis_errors(grid.axes):
            stacked, static = programs.plain(grid.member_sharding, grid.config)
        return SweepResult(grid.axes, _grid_shaped(stacked, static, grid.shape))

    steps = info.steps
    if checkpoint_dir is not None and checkpoint_every is None:
        checkpoint_every = steps
    run_config = _sweep_config(train_fn, grid.axes, info) if checkpoint_dir is not None else None
    if resume:
        state, history, done = _restored(checkpoint_dir, initial, grid, info, run_config, where)
    else:
        state, history, done = initial, {}, 0
        if checkpoint_dir is not None:
            ckpt.prepare_checkpoint_dir(checkpoint_dir, where=where, resume_with="pg.train.resume_sweep")
    # A member is frozen once its step falls behind (it stopped at a non-finite step).
    ok = jnp.asarray(np.asarray(state.step) == done)
    if grid.member_sharding is not None:
        ok = jax.device_put(ok, grid.member_sharding)

    def run_chunk(length, state, ok):
        return programs.chunk(grid.member_sharding, length, grid.config, state, ok)

    def save(state, history, done):
        ckpt.save_checkpoint(checkpoint_dir, state, history, max_to_keep=max_to_keep, run_config=run_config,
                             step=done)

    state, ok, history = _drive_chunks(
        run_chunk, state, ok, history, start=done, steps=steps, chunk_size=chunk_size,
        checkpoint_every=checkpoint_every, bar=progress_bar(progress, steps, done, desc=where),
        save=save if checkpoint_dir is not None else None, check=lambda *_: None, postfix=_postfix,
        step_axis=1,
    )
    history = {name: history[name] for name in info.names}
    if grid.member_sharding is not None:
        history = jax.device_put(history, grid.member_sharding)
    stacked, static = programs.finish(grid.member_sharding, grid.config, state, history)
    steps_done = np.asarray(state.step).reshape(grid.shape)
    first_bad_step = np.where(steps_done < steps, steps_done, -1)
    _report_diverged(grid, first_bad_step, where)
    return SweepResult(grid.axes, _grid_shaped(stacked, static, grid.shape), first_bad_step)


def _postfix(chunk_history: dict, ok: Any) -> dict:
    """The progress bar's note: the best last loss among the members, and how many diverged."""
    ok = np.asarray(ok)
    losses = chunk_history["loss"][:, -1][ok]
    note = {"best_loss": f"{np.min(losses):.4g}"} if losses.size else {}
    if not ok.all():
        note["diverged"] = int(np.sum(~ok))
    return note


def metric_values(result: SweepResult, metric: str | Callable[[Any], Any]) -> np.ndarray:
    """The grid-shaped array of one metric of a sweep.

    Args:
      result: a :class:`SweepResult`.
      metric: a callable on the stacked results returning an array of ``grid_shape``,
        or a name: for :class:`~probgen.train.FitResult` results the final value of
        ``history[name]``, for dict results ``results[name]``.

    Returns:
      A numpy array of shape ``result.grid_shape``.

    Raises:
      SettingError: the metric is not one number per member, e.g. a vector-valued metric
        (history entries of shape ``(steps, k)``); reduce it with a callable, such as
        ``lambda results: results.history["probs"][..., -1, 0]``.

    Example:
        >>> import jax.numpy as jnp
        >>> r = SweepResult({"beta": jnp.array([1.0, 2.0])}, {"score": jnp.array([0.5, 0.25])})
        >>> metric_values(r, "score").tolist()
        [0.5, 0.25]
    """
    grid_shape = result.grid_shape
    if callable(metric):
        values = metric(result.results)
        reduce_hint = "return one number per member from the callable"
    elif hasattr(result.results, "history"):
        if metric not in result.results.history:
            raise KeyError(f"metric {metric!r} not in the history: {sorted(result.results.history)}")
        history = np.asarray(result.results.history[metric])
        if history.ndim <= len(grid_shape):
            raise SettingError(
                f"metric_values: history[{metric!r}] has shape {history.shape}; expected the grid "
                f"shape {grid_shape} followed by a step axis"
            )
        values = np.take(history, -1, axis=len(grid_shape))  # the last step of every member
        reduce_hint = f"e.g. lambda results: results.history[{metric!r}][..., -1, 0]"
    elif isinstance(result.results, dict):
        values = result.results[metric]
        reduce_hint = f"e.g. lambda results: results[{metric!r}][..., 0]"
    else:
        raise ArgumentError(f"cannot find metric {metric!r} in results of type {type(result.results)}")
    values = np.asarray(values)
    if values.shape != grid_shape:
        name = metric if isinstance(metric, str) else getattr(metric, "__name__", "metric")
        if values.shape[:len(grid_shape)] == grid_shape:
            raise SettingError(
                f"metric_values: metric {name!r} has shape {values.shape[len(grid_shape):]} per member "
                "(a vector-valued metric); metric_values, best, tabulate and the sweep plots need one "
                f"number per member: pass a callable that reduces it, {reduce_hint}"
            )
        raise SettingError(
            f"metric_values: metric {name!r} has shape {values.shape}, expected the grid shape "
            f"{grid_shape}"
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

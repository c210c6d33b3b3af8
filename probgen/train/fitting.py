"""The training loop: optax optimization as jitted ``lax.scan`` chunks.

Every step ``i`` draws its PRNG key as ``fold_in(loss_key, i)`` and its minibatch as a
function of ``(data_key, i)`` (:mod:`probgen.train.data`), so where the loop is cut into
chunks, or stopped and resumed from a checkpoint, does not change a single bit.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
import sys
from typing import Any, Callable, Iterator, NamedTuple

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import optax

from probgen.core.checks import static_int
from probgen.core.errors import ArgumentError, SettingError
from probgen.train import checkpoint as ckpt
from probgen.train.data import BatchSpec, batch_indices, batch_spec, epoch_permutation, take_batch
from probgen.train.errors import NonFiniteLossError
from probgen.train.params import merge_params, split_params, with_static
from probgen.train.programs import _fingerprint, _ProgramCache
from probgen.train.progress import progress_bar
from probgen.train.state import FitResult, FitState

LossFn = Callable[..., Any]


def _split_outputs(out: Any) -> tuple[jax.Array, dict]:
    """``(loss, metrics)`` from what a loss returns; metrics may be arrays of any fixed shape."""
    if isinstance(out, tuple):
        if len(out) != 2 or not isinstance(out[1], dict):
            raise ArgumentError(
                "loss_fn must return a scalar loss or (loss, metrics_dict); got a tuple of "
                f"length {len(out)}"
            )
        loss, metrics = out
    else:
        loss, metrics = out, {}
    if jnp.shape(loss) != ():
        raise ArgumentError(f"loss_fn must return a scalar loss; got shape {jnp.shape(loss)}")
    arrays = {}
    for name, value in metrics.items():
        if not isinstance(name, str) or name == "loss":
            raise ArgumentError(f"loss_fn metrics keys must be strings other than 'loss'; got {name!r}")
        try:
            array = jnp.asarray(value)
        except TypeError as err:
            raise ArgumentError(
                f"loss_fn metric {name!r} must be a number or an array of numbers; got "
                f"{type(value).__name__}"
            ) from err
        if not (jnp.issubdtype(array.dtype, jnp.number) or array.dtype == jnp.bool_):
            raise ArgumentError(f"loss_fn metric {name!r} must hold numbers; got dtype {array.dtype}")
        arrays[name] = array
    return jnp.asarray(loss), arrays


def _run_keys(key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The loss key and data key of a run, both fixed functions of the base key."""
    return jax.random.fold_in(key, 0), jax.random.fold_in(key, 1)


def _all_finite(tree: Any) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
              if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def _scan_chunk(loss_fn, optimizer, spec: BatchSpec, sharding, length: int, state: FitState, ok, data,
                guard: bool = True):
    """Run ``length`` steps from ``state``; freeze the state at the first non-finite step.

    Returns ``((state, ok), (loss, metrics, finite))`` with per-step outputs. With
    ``guard=False`` the state is not frozen (each step saves a select over the whole
    state); ``ok`` and ``finite`` are still exact, so a caller that sees a non-finite step
    (or entered with ``ok`` False) runs the chunk again guarded from the same state, which
    repeats the same steps up to the bad one and stops there (see :func:`_run_chunks`).
    """
    loss_key, data_key = _run_keys(state.key)
    epoch_batching = spec.batch_size is not None and spec.batching == "epoch"
    steps_per_epoch = spec.num_examples // spec.batch_size if epoch_batching else 1

    def value_and_grad(params, key, batch):
        def objective(p):
            return _split_outputs(loss_fn(p, key, batch))

        return jax.value_and_grad(objective, has_aux=True)(params)

    def body(carry, _):
        state, ok, permutation = carry
        step = state.step
        if spec.batch_size is None:
            batch = data
        else:
            if epoch_batching:
                permutation = jax.lax.cond(
                    step % steps_per_epoch == 0,
                    lambda: epoch_permutation(data_key, step, spec),
                    lambda: permutation,
                )
            batch = take_batch(data, batch_indices(data_key, step, spec, permutation))
            if sharding is not None:
                batch = jax.lax.with_sharding_constraint(batch, sharding)
        (loss, metrics), grads = value_and_grad(state.params, jax.random.fold_in(loss_key, step), batch)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        finite = jnp.isfinite(loss) & _all_finite(grads)
        keep_going = ok & finite
        new_state = FitState(params, opt_state, step + 1, state.key)
        if guard:
            # After the first non-finite step the state stays as it entered that step.
            new_state = jax.tree.map(
                lambda new, old: jnp.where(keep_going, new, old), new_state, state
            )
        return (new_state, keep_going, permutation), (loss, metrics, finite)

    if epoch_batching:
        permutation = epoch_permutation(data_key, state.step, spec)
    else:
        permutation = jnp.zeros((0,), jnp.int32)
    (state, ok, _), outputs = jax.lax.scan(body, (state, ok, permutation), None, length=length)
    return (state, ok), outputs


def _chunk_program(loss_fn: LossFn, optimizer: optax.GradientTransformation) -> Callable[..., Any]:
    """``_scan_chunk`` for one loss and optimizer, jitted; static: spec, sharding, length, guard."""
    return jax.jit(functools.partial(_scan_chunk, loss_fn, optimizer), static_argnums=(0, 1, 2),
                   static_argnames=("guard",))


# Module-level, so fitting the same loss with the same optimizer again reuses the program.
_compiled_chunk = _ProgramCache(_chunk_program)


def _history(outputs) -> dict:
    loss, metrics, _ = outputs
    return {"loss": loss, **metrics}


# --- the one fit of a sweep member, run chunk by chunk (driven by probgen.train.sweep) -------

_MEMBER_FIT: contextvars.ContextVar = contextvars.ContextVar("probgen_member_fit", default=None)


def _trace_state() -> Any:
    return jax.extend.core.get_opaque_trace_state(convention="probgen")


class _MemberStart(NamedTuple):
    """What the fit of a sweep member told the sweep when first traced."""

    state: FitState  # the initial state (array leaves of the parameters)
    steps: int
    names: tuple[str, ...]  # the history's entries, "loss" first
    run_config: dict  # batch settings, data signature, loss / optimizer fingerprints


class _MemberFit:
    """How the fit inside a sweep member runs while :func:`probgen.train.sweep` traces it.

    The sweep traces ``train_fn`` under ``vmap`` with one of these active and loops over
    chunks in Python between the compiled programs (progress, NaN report, checkpoints):

    - ``"init"``: the fit records its initial :class:`FitState` and settings
      (:class:`_MemberStart`) and returns a placeholder result (zeros of the history's
      shapes); ``train_fn``'s own output is dropped;
    - ``"chunk"``: the fit runs ``length`` steps from ``state`` (``ok``: not frozen) and
      records ``(state, ok, outputs)``; ``train_fn``'s output is dropped;
    - ``"finish"``: the fit returns the result of the whole run (``state``, ``history``),
      from which ``train_fn`` builds its output.

    Every step draws from ``(key, step)`` only, so these chunks give the single scan of
    :func:`optimize` bit for bit. Only a fit traced at the member's own level counts in
    ``calls``; one under a transformation inside ``train_fn`` (``jit``, ``vmap``, ``scan``,
    ``cond``) runs as usual and counts in ``nested``, and the sweep does not chunk.
    """

    def __init__(self, mode: str, length: int = 0, state: Any = None, ok: Any = None, history: Any = None):
        self.mode, self.length, self.state, self.ok, self.history = mode, length, state, ok, history
        self.trace_state = _trace_state()
        self.calls = 0
        self.nested = 0
        self.start: _MemberStart | None = None  # "init": what the first fit recorded
        self.chunk: tuple | None = None  # "chunk": (state, ok, outputs)

    @contextlib.contextmanager
    def active(self) -> Iterator["_MemberFit"]:
        token = _MEMBER_FIT.set(self)
        try:
            yield self
        finally:
            _MEMBER_FIT.reset(token)

    @property
    def chunkable(self) -> bool:
        return self.calls == 1 and self.nested == 0

    def run(self, loss_fn, optimizer, spec: BatchSpec, data, state: FitState, static, steps: int) -> FitResult:
        self.calls += 1
        scan = functools.partial(_scan_chunk, with_static(loss_fn, static), optimizer, spec, None)
        if self.mode == "init":
            outputs = jax.eval_shape(functools.partial(scan, 1), state, jnp.asarray(True), data)[1]
            if self.calls == 1:
                names = tuple(_history(outputs))
                self.start = _MemberStart(state, steps, names, _run_config(spec, data, loss_fn, optimizer))
            return _result_of(state, static, _placeholder_history(outputs, steps))
        if self.calls > 1:
            raise SettingError(
                "sweep: train_fn called fit once when first traced and again now; a sweep that "
                "runs fit chunk by chunk needs exactly one fit call per trace"
            )
        if self.mode == "chunk":
            (new_state, ok), outputs = scan(self.length, self.state, self.ok, data)
            self.chunk = (new_state, ok, outputs)
            return _result_of(new_state, static, _placeholder_history(outputs, steps))
        return _result_of(self.state, static, self.history)


def _member_fit() -> _MemberFit | None:
    """The active :class:`_MemberFit` if this fit is traced at its member's level."""
    context = _MEMBER_FIT.get()
    if context is None:
        return None
    if _trace_state() != context.trace_state:
        context.nested += 1
        return None
    return context


def _placeholder_history(outputs, steps: int) -> dict:
    return {name: jnp.zeros((steps,) + value.shape[1:], value.dtype) for name, value in _history(outputs).items()}


def _result_of(state: FitState, static, history: dict) -> FitResult:
    return FitResult(merge_params(state.params, static), state.opt_state, history, state.step, state.key)


def optimize(
    loss_fn: LossFn,
    params: Any,
    optimizer: optax.GradientTransformation,
    key: jax.Array,
    *,
    data: Any = None,
    steps: int,
    batch_size: int | None = None,
    batching: str = "epoch",
) -> FitResult:
    """Pure training run: ``steps`` optax steps in one ``lax.scan`` (jit- and vmap-able).

    This is :func:`fit` without progress, checkpoints or the NaN exception, so it can be
    traced: use it (or ``fit``, which switches to it when called under ``jit``/``vmap``)
    inside :func:`probgen.train.sweep`. A non-finite loss or gradient freezes the state at
    that step and shows up as NaN / inf in ``history["loss"]``; ``result.step`` says where
    it stopped. The one fit of a sweep's ``train_fn`` runs chunk by chunk, driven by the
    sweep (progress, checkpoints), with the same result bit for bit.

    Args:
      loss_fn: ``loss_fn(params, key, batch) -> loss`` or ``-> (loss, metrics_dict)``
        with a scalar loss and metrics of any fixed shape (``history[name]`` then has
        shape ``(steps, *metric_shape)``); ``batch`` is ``None`` when ``data`` is ``None``.
      params: initial parameters (pytree of float arrays).
      optimizer: an ``optax.GradientTransformation`` (use ``optax.inject_hyperparams``
        to make the learning rate a traced, sweepable value).
      key: the run's base PRNG key.
      data: ``None`` or a pytree of arrays with a leading example axis.
      steps: number of optimization steps (static int).
      batch_size: minibatch size; ``None`` uses all of ``data`` every step.
      batching: ``"epoch"`` (shuffle each epoch) or ``"random"`` (with replacement).

    Returns:
      A :class:`FitResult`; its history arrays have a leading axis of ``steps``.

    Example:
        >>> import jax, jax.numpy as jnp, optax
        >>> from probgen.train import optimize
        >>> loss = lambda p, key, batch: jnp.sum((p - 3.0) ** 2)
        >>> result = jax.jit(lambda lr: optimize(loss, jnp.zeros(()), optax.sgd(lr),
        ...     jax.random.key(0), steps=100))(0.1)
        >>> round(float(result.params), 4), result.history["loss"].shape
        (3.0, (100,))
    """
    steps = static_int(steps, "steps", "optimize")
    spec = batch_spec(data, batch_size, batching)
    params, static = split_params(params)
    params = _strong(params)
    state = FitState(params, optimizer.init(params), jnp.asarray(0, jnp.int32), key)
    member = _member_fit()
    if member is not None:  # the one fit of a sweep member: sweep runs it chunk by chunk
        return member.run(loss_fn, optimizer, spec, data, state, static, steps)
    (state, _), outputs = _scan_chunk(with_static(loss_fn, static), optimizer, spec, None, steps, state,
                                      jnp.asarray(True), data)
    return _result_of(state, static, _history(outputs))


def _strong(params: Any) -> Any:
    """Arrays with a concrete dtype (Python floats are weakly typed, which scan rejects)."""
    return jax.tree.map(lambda x: jnp.asarray(x, dtype=jnp.asarray(x).dtype), params)


def _with_module(result: FitResult, static) -> FitResult:
    """``result`` with its parameters put back into the module they came from."""
    return result if static is None else result._replace(params=merge_params(result.params, static))


def _run_module(static, loss_fn, optimizer, spec, data, state, history, steps, **settings) -> FitResult:
    """:func:`_run_chunks` on the array leaves of a module; results (and errors) carry the module."""
    try:
        result = _run_chunks(with_static(loss_fn, static), optimizer, spec, data, state, history, steps, **settings)
    except NonFiniteLossError as err:
        err.result = _with_module(err.result, static)
        raise
    return _with_module(result, static)


def _is_traced(*trees) -> bool:
    return any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(trees))


def _data_parallel(data, params, opt_state, key, mesh, data_axis):
    """Shard data over ``mesh``'s ``data_axis``; replicate params, optimizer state and key."""
    from jax.sharding import NamedSharding, PartitionSpec  # noqa: PLC0415

    if data_axis not in mesh.axis_names:
        raise SettingError(f"fit: data_axis {data_axis!r} is not an axis of the mesh {mesh.axis_names}")
    replicated = NamedSharding(mesh, PartitionSpec())
    batch_sharding = NamedSharding(mesh, PartitionSpec(data_axis))
    count = mesh.shape[data_axis]
    for path, leaf in jax.tree.flatten_with_path(data)[0]:
        if jnp.shape(leaf)[0] % count:
            raise SettingError(
                f"fit: data{jax.tree_util.keystr(path)} has {jnp.shape(leaf)[0]} examples, not a "
                f"multiple of the {count} devices on mesh axis {data_axis!r}"
            )
    data = jax.device_put(data, batch_sharding)
    params, opt_state, key = jax.device_put((params, opt_state, key), replicated)
    return data, params, opt_state, key, batch_sharding


def _data_signature(data: Any) -> str:
    leaves = jax.tree.flatten_with_path(data)[0] if data is not None else []
    return "; ".join(
        f"data{jax.tree_util.keystr(path)}: {jnp.result_type(leaf)}{list(jnp.shape(leaf))}"
        for path, leaf in leaves
    )


def _run_config(spec: BatchSpec, data: Any, loss_fn: LossFn, optimizer: optax.GradientTransformation) -> dict:
    """The settings a resumed run must share with the original for bitwise equality.

    Besides the batch settings and the data's structure, shapes and dtypes, ``loss_fn``
    and ``optimizer`` enter as fingerprints of their code and of the values they close
    over (learning rates, constants); see :func:`_fingerprints`.
    """
    config = {
        "kind": "fit",
        "num_examples": spec.num_examples,
        "batch_size": spec.batch_size,
        "batching": spec.batching,
        "data": _data_signature(data),
    }
    return {**config, **_fingerprints(loss_fn=loss_fn, optimizer=optimizer)}


def _fingerprints(**parts: Any) -> dict:
    """``{name: {versions: fingerprint}}`` for each callable that can be fingerprinted.

    Bytecode differs between Python versions and library releases (optax and probgen build
    closures), so each fingerprint is filed under the versions that made it and compared
    only with one made under the same.
    """
    probgen_version = getattr(sys.modules.get("probgen"), "__version__", "unknown")
    versions = (
        f"python {sys.version_info[0]}.{sys.version_info[1]}, optax {optax.__version__}, "
        f"probgen {probgen_version}"
    )
    config = {}
    for name, part in parts.items():
        fingerprint = _fingerprint(part)
        if fingerprint is not None:
            config[name] = {versions: fingerprint}
    return config


def _loop_settings(where: str, steps, chunk_size, checkpoint_every, max_to_keep) -> tuple:
    """The loop's counts as Python ints (NumPy ints accepted), or a :class:`SettingError`."""
    return (
        static_int(steps, "steps", where),
        static_int(chunk_size, "chunk_size", where),
        None if checkpoint_every is None else static_int(checkpoint_every, "checkpoint_every", where),
        None if max_to_keep is None else static_int(max_to_keep, "max_to_keep", where),
    )


def _drive_chunks(
    run_chunk: Callable[..., Any], state: Any, ok: Any, history: dict, *, start: int, steps: int,
    chunk_size: int, checkpoint_every: int | None, bar: Any, save: Callable[..., Any] | None,
    check: Callable[..., Any], postfix: Callable[..., dict], step_axis: int = 0,
) -> tuple[Any, Any, dict]:
    """Run chunks from step ``start`` to ``steps``: the loop of :func:`fit` and :func:`sweep`.

    ``run_chunk(length, state, ok) -> (state, ok, (loss, metrics, finite))`` runs one
    compiled chunk. Between chunks: ``check(done, chunk_history, finite, new_state,
    joined)`` (fit raises on a non-finite step), the progress ``bar`` (with ``postfix``),
    and ``save(state, history, done)`` every ``checkpoint_every`` steps, at the end and on
    ``KeyboardInterrupt`` (the last completed chunk). Histories join along ``step_axis``
    (0 for a fit, 1 for a sweep's stacked members).

    Returns:
      ``(state, ok, history)`` after ``steps`` steps.
    """
    pieces = {k: [np.asarray(v)] for k, v in history.items()}

    def joined() -> dict:
        return {k: np.concatenate(v, axis=step_axis) for k, v in pieces.items()}

    done = start
    try:
        while done < steps:
            length = min(chunk_size, steps - done)
            if checkpoint_every:
                length = min(length, checkpoint_every - done % checkpoint_every)
            new_state, new_ok, outputs = run_chunk(length, state, ok)
            chunk_history = {k: np.asarray(v) for k, v in _history(outputs).items()}
            check(done, chunk_history, np.asarray(outputs[2]), new_state, joined)
            for k, v in chunk_history.items():
                pieces.setdefault(k, []).append(v)
            state, ok = new_state, new_ok
            done += length
            if bar is not None:
                bar.update(length)
                bar.set_postfix(postfix(chunk_history, ok))
            if save is not None and checkpoint_every and (done % checkpoint_every == 0 or done == steps):
                save(state, joined(), done)
    except KeyboardInterrupt:
        # Keep the last completed chunk: a resumed run continues from it bit-for-bit.
        if save is not None and done > start and (not checkpoint_every or done % checkpoint_every):
            save(state, joined(), done)
        raise
    finally:
        if bar is not None:
            bar.close()
    return state, ok, joined() if pieces else {}


def _raise_non_finite(done: int, chunk_history: dict, finite: np.ndarray, new_state: FitState, joined) -> None:
    """Stop a fit at its first non-finite step, with the last good state in the error."""
    if finite.all():
        return
    bad = int(np.argmin(finite))
    history = joined()
    history = {k: np.concatenate([history[k], v[:bad]]) if k in history else v[:bad]
               for k, v in chunk_history.items()}
    losses = history["loss"]
    last = float(losses[-1]) if losses.size else None
    what = "loss" if not np.isfinite(chunk_history["loss"][bad]) else "gradient"
    result = FitResult(new_state.params, new_state.opt_state, history, new_state.step, new_state.key)
    raise NonFiniteLossError(
        f"fit: the {what} became non-finite at step {done + bad} "
        f"(loss={chunk_history['loss'][bad]}); last finite loss: "
        f"{last if last is not None else 'none (first step)'}"
        f"{' at step ' + str(done + bad - 1) if last is not None else ''}. "
        "The state entering that step is in err.result.",
        step=done + bad,
        last_finite_loss=last,
        result=result,
    )


def _run_chunks(
    loss_fn, optimizer, spec, data, state: FitState, history: dict, steps: int, *,
    chunk_size: int, progress, checkpoint_dir, checkpoint_every, max_to_keep, batch_sharding,
    run_config: dict | None = None,
) -> FitResult:
    start = int(state.step)
    program = _compiled_chunk(loss_fn, optimizer)

    def run_chunk(length, state, ok):
        # Fast path: no per-step state freeze. Every step draws from (key, step) only, so if a
        # step was not finite the guarded run from the same state repeats the steps before it
        # exactly and stops there with the last good state.
        (new_state, new_ok), outputs = program(spec, batch_sharding, length, state, ok, data, guard=False)
        if not bool(new_ok):
            (new_state, new_ok), outputs = program(spec, batch_sharding, length, state, ok, data, guard=True)
        return new_state, new_ok, outputs

    def save(state, history, done):
        ckpt.save_checkpoint(checkpoint_dir, state, history, max_to_keep=max_to_keep, run_config=run_config)

    state, _, history = _drive_chunks(
        run_chunk, state, jnp.asarray(True), history, start=start, steps=steps, chunk_size=chunk_size,
        checkpoint_every=checkpoint_every, bar=progress_bar(progress, steps, start),
        save=save if checkpoint_dir is not None else None, check=_raise_non_finite,
        postfix=lambda chunk_history, ok: {"loss": f"{chunk_history['loss'][-1]:.4g}"},
    )
    return FitResult(state.params, state.opt_state, history, state.step, state.key)


def fit(
    loss_fn: LossFn,
    params: Any,
    optimizer: optax.GradientTransformation,
    key: jax.Array,
    *,
    data: Any = None,
    steps: int,
    batch_size: int | None = None,
    batching: str = "epoch",
    chunk_size: int = 100,
    progress: bool | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    max_to_keep: int | None = 3,
    mesh: Any = None,
    data_axis: str = "data",
) -> FitResult:
    """Fit ``params`` by minimizing ``loss_fn`` with an optax optimizer.

    Steps run in jitted ``lax.scan`` chunks of ``chunk_size`` (one dispatch per chunk);
    the progress bar and NaN check run between chunks. Step ``i`` uses the key
    ``fold_in(fold_in(key, 0), i)`` and a minibatch chosen from ``(key, i)`` only, so the
    result does not depend on ``chunk_size`` or on stopping and :func:`resume`-ing.

    Called under ``jit`` / ``vmap`` (e.g. inside :func:`probgen.train.sweep`) it runs as
    :func:`optimize`: one scan, no progress bar, checkpoints or exception.

    Args:
      loss_fn: ``loss_fn(params, key, batch)`` returning a scalar loss, or
        ``(loss, metrics)`` with a dict of metrics recorded in the history: numbers or
        arrays of a fixed shape (``history[name]`` has shape ``(steps, *metric_shape)``).
        Only the loss and the gradients are checked for NaN / inf.
      params: initial parameters (pytree of float arrays).
      optimizer: ``optax.GradientTransformation``.
      key: base PRNG key of the run.
      data: ``None`` or a pytree of in-memory arrays with a leading example axis.
      steps: total number of steps.
      batch_size: minibatch size (``None``: the whole data set each step).
      batching: ``"epoch"`` (a permutation per epoch, remainder dropped) or ``"random"``.
      chunk_size: steps per compiled chunk (progress and NaN checks happen between chunks).
      progress: ``True`` / ``False`` / ``None`` (show only in a terminal or notebook, not CI).
      checkpoint_dir: folder for orbax checkpoints (``None``: no checkpoints). It must be
        missing or empty and writable, which is checked (and the folder created) before
        any training; to continue the run saved in a folder, use :func:`resume`.
      checkpoint_every: save every this many steps, at the end, and on ``KeyboardInterrupt``.
      max_to_keep: how many checkpoints to keep (``None``: all).
      mesh: a ``jax.sharding.Mesh`` for data-parallel training: data and each minibatch
        are sharded over ``data_axis``, parameters replicated. The same code runs on one
        device (a 1-device mesh) or many; see :mod:`probgen.train.sharding`.
      data_axis: the mesh axis that shards the example / batch axis.

    Returns:
      A :class:`FitResult` (final params, optimizer state, history dict of numpy arrays
      of length ``steps``, step, key).

    Raises:
      NonFiniteLossError: the loss or a gradient became NaN / inf; the error names the
        step and the last finite loss, and ``err.result`` holds the last good state.
      SettingError: a bad count or mode, or a ``checkpoint_dir`` that already holds
        files or cannot be written (raised before any training).

    A loss and an optimizer that compute the same thing as in an earlier call (the same
    code, closed-over values and, for functions defined in a notebook or script, the
    globals they read; e.g. a fresh ``optax.adam(0.05)``) reuse its compiled program; the
    last few programs are kept. As with ``jax.jit``, what is compared by identity
    (functions and globals of imported modules, modules, large jax arrays) is read when
    the program is compiled, and numpy arrays must not be changed in place afterwards.
    Build the loss and the optimizer once, outside the cell that calls ``fit``, for reuse
    that never depends on comparing closures.

    Example:
        >>> import jax, jax.numpy as jnp, optax
        >>> import probgen as pg
        >>> data = {"x": jnp.linspace(-1, 1, 64)}
        >>> def loss(params, key, batch):
        ...     residual = batch["x"] * 2.0 + 1.0 - (params["w"] * batch["x"] + params["b"])
        ...     return jnp.mean(residual ** 2), {"w": params["w"]}
        >>> result = pg.train.fit(loss, {"w": 0.0, "b": 0.0}, optax.adam(0.1), jax.random.key(0),
        ...                       data=data, steps=300, batch_size=16, progress=False)
        >>> round(float(result.params["w"]), 2), result.history["loss"].shape
        (2.0, (300,))
    """
    steps, chunk_size, checkpoint_every, max_to_keep = _loop_settings(
        "fit", steps, chunk_size, checkpoint_every, max_to_keep
    )
    if checkpoint_every is not None and checkpoint_dir is None:
        raise SettingError("fit: checkpoint_every was given without checkpoint_dir")
    if checkpoint_every is None and checkpoint_dir is not None:
        checkpoint_every = steps
    if _is_traced(params, key, data):
        if checkpoint_dir is not None:
            raise SettingError(
                "fit was called under jit/vmap (e.g. in a sweep), where it cannot write "
                "checkpoints; drop checkpoint_dir (a sweep checkpoints all its members: "
                "pg.train.sweep(train_fn, checkpoint_dir=..., ...))"
            )
        return optimize(loss_fn, params, optimizer, key, data=data, steps=steps,
                        batch_size=batch_size, batching=batching)
    spec = batch_spec(data, batch_size, batching)
    params, static = split_params(params)
    params = _strong(params)
    opt_state = optimizer.init(params)
    batch_sharding = None
    if mesh is not None:
        if data is None:
            raise SettingError("fit: mesh was given but there is no data to shard")
        data, params, opt_state, key, batch_sharding = _data_parallel(
            data, params, opt_state, key, mesh, data_axis
        )
    run_config = None
    if checkpoint_dir is not None:
        # Before any training: a folder of another run, or one we cannot write, fails now.
        ckpt.prepare_checkpoint_dir(checkpoint_dir, where="fit")
        run_config = _run_config(spec, data, loss_fn, optimizer)
    state = FitState(params, opt_state, jnp.asarray(0, jnp.int32), key)
    return _run_module(
        static, loss_fn, optimizer, spec, data, state, {}, steps,
        chunk_size=chunk_size, progress=progress, checkpoint_dir=checkpoint_dir,
        checkpoint_every=checkpoint_every, max_to_keep=max_to_keep, batch_sharding=batch_sharding,
        run_config=run_config,
    )


def resume(
    loss_fn: LossFn,
    params: Any,
    optimizer: optax.GradientTransformation,
    checkpoint_dir: str | os.PathLike,
    *,
    data: Any = None,
    steps: int,
    batch_size: int | None = None,
    batching: str = "epoch",
    chunk_size: int = 100,
    progress: bool | None = None,
    checkpoint_every: int | None = None,
    max_to_keep: int | None = 3,
    step: int | None = None,
    mesh: Any = None,
    data_axis: str = "data",
) -> FitResult:
    """Continue a :func:`fit` run from its checkpoint, bit-for-bit as if never stopped.

    Restores params, optimizer state, base key, step and history from ``checkpoint_dir``
    and runs on to ``steps`` total steps with the same settings (``data``, ``batch_size``,
    ``batching``, ``loss_fn`` and ``optimizer`` must be those of the original run). The
    checkpoint records a fingerprint of the run: the parameter and optimizer-state
    structure, shapes and dtypes, the batch settings, the data's structure, shapes and
    dtypes, and digests of ``loss_fn`` and ``optimizer`` (their code and the values they
    close over, e.g. the learning rate; compared when saved under the same Python and
    optax versions). A run that differs is refused before any training.

    ``loss_fn``, ``optimizer``, ``data``, ``batch_size``, ``batching``, ``chunk_size``,
    ``progress``, ``mesh`` and ``data_axis`` are as in :func:`fit`.

    Args:
      params: parameters with the saved structure, shapes and dtypes (values unused),
        e.g. the initial parameters of the original run.
      checkpoint_dir: the folder the original run checkpointed into; new checkpoints go
        there too.
      steps: the *total* number of steps of the run (not the number still to do).
      checkpoint_every: as in :func:`fit` (``None``: only at the end).
      max_to_keep: as in :func:`fit`.
      step: which saved step to restore (``None``: the latest).

    Returns:
      A :class:`FitResult` whose history covers all ``steps`` steps.

    Raises:
      CheckpointError: no checkpoint, or a corrupted one.
      CheckpointMismatchError: the checkpoint was written by a different run; the message
        names what differs (a leaf, ``batch_size``, ``data``, ``loss_fn``, ``optimizer``).
      SettingError: ``step`` is not the latest step saved (continuing from it would write
        over later checkpoints), the checkpoint is past ``steps``, or the folder cannot be
        written; all raised before any training.

    Example:
        >>> import jax, jax.numpy as jnp, optax, tempfile
        >>> import probgen as pg
        >>> loss = lambda p, key, batch: jnp.sum((p - 1.0) ** 2)
        >>> folder = tempfile.mkdtemp()
        >>> half = pg.train.fit(loss, jnp.zeros(2), optax.sgd(0.1), jax.random.key(0), steps=5,
        ...                     checkpoint_dir=folder, progress=False)
        >>> rest = pg.train.resume(loss, jnp.zeros(2), optax.sgd(0.1), folder, steps=10, progress=False)
        >>> int(rest.step), rest.history["loss"].shape
        (10, (10,))
    """
    steps, chunk_size, checkpoint_every, max_to_keep = _loop_settings(
        "resume", steps, chunk_size, checkpoint_every, max_to_keep
    )
    if checkpoint_every is None:
        checkpoint_every = steps
    if step is not None:
        step = static_int(step, "step", "resume", minimum=0)
    params, static = split_params(params)
    params = _strong(params)
    spec = batch_spec(data, batch_size, batching)
    opt_state = optimizer.init(params)
    key = jax.random.key(0)
    batch_sharding = None
    if mesh is not None:
        data, params, opt_state, key, batch_sharding = _data_parallel(
            data, params, opt_state, key, mesh, data_axis
        )
    run_config = _run_config(spec, data, loss_fn, optimizer)
    state, history = ckpt.restore_checkpoint(checkpoint_dir, params, opt_state, step, run_config=run_config)
    start = int(state.step)
    if start > steps:
        raise SettingError(
            f"resume: the checkpoint in {os.fspath(checkpoint_dir)!r} is at step {start}, past "
            f"steps={steps} (steps is the total number of steps of the run)"
        )
    if start < steps:
        ckpt.prepare_checkpoint_dir(checkpoint_dir, where="resume", resume_from=start)
    if mesh is not None:
        state = state._replace(key=jax.device_put(state.key, key.sharding))
    return _run_module(
        static, loss_fn, optimizer, spec, data, state, history, steps,
        chunk_size=chunk_size, progress=progress, checkpoint_dir=checkpoint_dir,
        checkpoint_every=checkpoint_every, max_to_keep=max_to_keep, batch_sharding=batch_sharding,
        run_config=run_config,
    )

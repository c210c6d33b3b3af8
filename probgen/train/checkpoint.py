"""Checkpoints of a training run with orbax-checkpoint.

A checkpoint holds the parameters, optimizer state, base PRNG key, step and metrics
history of a :func:`probgen.train.fit` run, plus a JSON manifest with every leaf's path,
shape, dtype and SHA-256 digest. Restoring checks the manifest against the parameters
and optimizer you restore into and the digests against the bytes read back, so a
mismatched or corrupted checkpoint raises instead of restoring part of a state.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from probgen.train.errors import CheckpointError, CheckpointMismatchError
from probgen.train.state import FitState

FORMAT = "probgen.train.checkpoint/1"


def _manager(directory: str | os.PathLike, max_to_keep: int | None = None, create: bool = True):
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=create, enable_async_checkpointing=False
    )
    return ocp.CheckpointManager(os.path.abspath(os.fspath(directory)), options=options)


def _digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def _key_to_data(key: jax.Array) -> tuple[np.ndarray, str | None]:
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return np.asarray(jax.random.key_data(key)), str(jax.random.key_impl(key))
    return np.asarray(key), None


def _state_tree(state: FitState) -> dict:
    key_data, _ = _key_to_data(state.key)
    return {
        "params": state.params,
        "opt_state": state.opt_state,
        "key": key_data,
        "step": np.asarray(state.step, np.int32),
    }


def _flatten(tree: Any) -> tuple[list[str], list[np.ndarray], str]:
    leaves_with_path, treedef = jax.tree.flatten_with_path(tree)
    paths = [jax.tree_util.keystr(path) for path, _ in leaves_with_path]
    arrays = [np.asarray(leaf) for _, leaf in leaves_with_path]
    return paths, arrays, str(treedef)


def save_checkpoint(
    directory: str | os.PathLike,
    state: FitState,
    history: dict[str, Any] | None = None,
    *,
    max_to_keep: int | None = None,
    run_config: dict | None = None,
) -> int:
    """Save ``state`` (and the metrics ``history``) as step ``state.step`` under ``directory``.

    Args:
      directory: the run's checkpoint folder (created if missing); one sub-folder per step.
      state: a :class:`probgen.train.FitState`.
      history: dict of per-step metric arrays covering steps ``0 .. state.step - 1``.
      max_to_keep: keep only this many most recent checkpoints (``None``: keep all).
      run_config: JSON-able settings of the run (batch size, batching, data size) that a
        restore can check with its own ``run_config``.

    Returns:
      The step saved.

    Example:
        >>> import jax, jax.numpy as jnp, optax, tempfile
        >>> from probgen.train import FitState, save_checkpoint, latest_step
        >>> opt = optax.sgd(0.1); params = {"w": jnp.zeros(2)}
        >>> state = FitState(params, opt.init(params), jnp.int32(3), jax.random.key(0))
        >>> folder = tempfile.mkdtemp()
        >>> save_checkpoint(folder, state, {"loss": jnp.zeros(3)})
        3
        >>> latest_step(folder)
        3
    """
    step = int(state.step)
    _, key_impl = _key_to_data(state.key)
    paths, arrays, treedef = _flatten(_state_tree(state))
    history = {} if history is None else {str(k): np.asarray(v) for k, v in history.items()}
    for name, values in history.items():
        if values.shape[:1] != (step,):
            raise ValueError(
                f"save_checkpoint: history[{name!r}] has shape {values.shape}; expected a "
                f"leading axis of {step} (one entry per step done)"
            )
    manifest = {
        "format": FORMAT,
        "step": step,
        "key_impl": key_impl,
        "treedef": treedef,
        "paths": paths,
        "shapes": [list(a.shape) for a in arrays],
        "dtypes": [str(a.dtype) for a in arrays],
        "sha256": [_digest(a) for a in arrays],
        "run_config": run_config or {},
        "history": {
            name: {"shape": list(v.shape), "dtype": str(v.dtype), "sha256": _digest(v)}
            for name, v in history.items()
        },
    }
    leaves = {f"{i:06d}": a for i, a in enumerate(arrays)}
    with _manager(directory, max_to_keep) as manager:
        manager.save(
            step,
            args=ocp.args.Composite(
                leaves=ocp.args.StandardSave(leaves),
                history=ocp.args.StandardSave({"values": history}),
                manifest=ocp.args.JsonSave(manifest),
            ),
            force=True,
        )
        manager.wait_until_finished()
    return step


def latest_step(directory: str | os.PathLike) -> int | None:
    """The latest step saved under ``directory`` (``None`` if there is none).

    Example:
        >>> import tempfile
        >>> latest_step(tempfile.mkdtemp()) is None
        True
    """
    if not os.path.isdir(directory):
        return None
    with _manager(directory, create=False) as manager:
        return manager.latest_step()


def _mismatch_report(saved_paths, saved_shapes, saved_dtypes, paths, arrays) -> str:
    saved = set(saved_paths)
    expected = set(paths)
    lines = []
    missing = sorted(expected - saved)[:5]
    extra = sorted(saved - expected)[:5]
    if missing:
        lines.append(f"  in the given state but not in the checkpoint: {missing}")
    if extra:
        lines.append(f"  in the checkpoint but not in the given state: {extra}")
    if not lines:
        for path, shape, dtype, array in zip(saved_paths, saved_shapes, saved_dtypes, arrays):
            if tuple(shape) != array.shape or dtype != str(array.dtype):
                lines.append(
                    f"  {path}: checkpoint has shape {tuple(shape)} {dtype}, "
                    f"expected {array.shape} {array.dtype}"
                )
    if not lines:
        lines.append("  the tree structures differ (containers or optimizer state types)")
    return "\n".join(lines[:8])


def restore_checkpoint(
    directory: str | os.PathLike,
    params: Any,
    opt_state: Any,
    step: int | None = None,
    run_config: dict | None = None,
) -> tuple[FitState, dict[str, np.ndarray]]:
    """Restore a :class:`FitState` and the metrics history saved by :func:`save_checkpoint`.

    Args:
      directory: the checkpoint folder.
      params: parameters with the structure, shapes and dtypes of the saved ones (their
        values are ignored); restored leaves are placed like these (same sharding).
      opt_state: an optimizer state of the same structure (e.g. ``optimizer.init(params)``).
      step: the step to restore; ``None`` restores the latest.
      run_config: if given, each of its entries must equal the one saved with the
        checkpoint (e.g. ``batch_size``), else :class:`CheckpointMismatchError`.

    Returns:
      ``(state, history)``.

    Raises:
      CheckpointError: nothing saved, or the files are unreadable or corrupted.
      CheckpointMismatchError: the checkpoint's structure, shapes or dtypes differ from
        ``params`` / ``opt_state``; the message names the leaves.

    Example:
        >>> import jax, jax.numpy as jnp, optax, tempfile
        >>> from probgen.train import FitState, save_checkpoint, restore_checkpoint
        >>> opt = optax.sgd(0.1); params = {"w": jnp.ones(2)}
        >>> folder = tempfile.mkdtemp()
        >>> _ = save_checkpoint(folder, FitState(params, opt.init(params), jnp.int32(0), jax.random.key(0)))
        >>> state, history = restore_checkpoint(folder, {"w": jnp.zeros(2)}, opt.init(params))
        >>> state.params["w"].tolist(), int(state.step)
        ([1.0, 1.0], 0)
    """
    directory = os.path.abspath(os.fspath(directory))
    if not os.path.isdir(directory):
        raise CheckpointError(f"no checkpoint folder at {directory!r}")
    with _manager(directory, create=False) as manager:
        if step is None:
            step = manager.latest_step()
            if step is None:
                raise CheckpointError(f"no checkpoint saved in {directory!r}")
        elif step not in manager.all_steps():
            raise CheckpointError(
                f"no checkpoint for step {step} in {directory!r}; saved steps: {manager.all_steps()}"
            )
        try:
            manifest = manager.restore(
                step, args=ocp.args.Composite(manifest=ocp.args.JsonRestore())
            ).manifest
        except Exception as err:  # orbax raises many kinds; all mean "unreadable"
            raise CheckpointError(
                f"checkpoint at step {step} in {directory!r} has an unreadable manifest "
                f"(corrupted or not written by probgen.train): {type(err).__name__}: {err}"
            ) from err
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise CheckpointError(
                f"checkpoint at step {step} in {directory!r} is not a {FORMAT} checkpoint"
            )

        saved_config = manifest.get("run_config", {})
        differing = {
            name: (saved_config[name], value)
            for name, value in (run_config or {}).items()
            if name in saved_config and saved_config[name] != value
        }
        if differing:
            details = ", ".join(f"{n}: saved {a!r}, now {b!r}" for n, (a, b) in differing.items())
            raise CheckpointMismatchError(
                f"checkpoint at step {step} in {directory!r} was written by a run with other "
                f"settings ({details}); resume with the original settings"
            )

        # Check against the state we restore into before reading any array.
        saved_shapes = dict(zip(manifest["paths"], manifest["shapes"]))
        saved_dtypes = dict(zip(manifest["paths"], manifest["dtypes"]))
        template = {
            "params": params,
            "opt_state": opt_state,
            # The key's shape and dtype come from the checkpoint: it is the run's own key.
            "key": np.zeros(saved_shapes.get("['key']", (2,)), saved_dtypes.get("['key']", "uint32")),
            "step": np.int32(0),
        }
        paths, arrays, treedef = _flatten(jax.tree.map(np.asarray, template))
        shapes_match = [tuple(s) for s in manifest["shapes"]] == [a.shape for a in arrays]
        dtypes_match = manifest["dtypes"] == [str(a.dtype) for a in arrays]
        if treedef != manifest["treedef"] or paths != manifest["paths"] or not (
            shapes_match and dtypes_match
        ):
            raise CheckpointMismatchError(
                f"checkpoint at step {step} in {directory!r} does not match the given "
                "params / optimizer state:\n"
                + _mismatch_report(
                    manifest["paths"], manifest["shapes"], manifest["dtypes"], paths, arrays
                )
            )

        try:
            restored = manager.restore(
                step,
                args=ocp.args.Composite(
                    leaves=ocp.args.StandardRestore(), history=ocp.args.StandardRestore()
                ),
            )
        except Exception as err:
            raise CheckpointError(
                f"checkpoint at step {step} in {directory!r} could not be read "
                f"(corrupted or incomplete): {type(err).__name__}: {err}"
            ) from err

    leaves = restored.leaves
    names = [f"{i:06d}" for i in range(len(arrays))]
    if not isinstance(leaves, dict) or sorted(leaves) != names:
        raise CheckpointError(
            f"checkpoint at step {step} in {directory!r} is incomplete: expected "
            f"{len(names)} arrays, found {len(leaves) if isinstance(leaves, dict) else 0}"
        )
    values = []
    for name, path, expected_digest in zip(names, paths, manifest["sha256"]):
        value = np.asarray(leaves[name])
        if _digest(value) != expected_digest:
            raise CheckpointError(
                f"checkpoint at step {step} in {directory!r} is corrupted: the bytes of "
                f"{path} do not match the digest written with it"
            )
        values.append(value)

    history_in = (restored.history or {}).get("values", {}) or {}
    history = {}
    for name, info in manifest["history"].items():
        if name not in history_in:
            raise CheckpointError(
                f"checkpoint at step {step} in {directory!r} is incomplete: history[{name!r}] missing"
            )
        value = np.asarray(history_in[name])
        if _digest(value) != info["sha256"]:
            raise CheckpointError(
                f"checkpoint at step {step} in {directory!r} is corrupted: history[{name!r}] "
                "does not match the digest written with it"
            )
        history[name] = value

    template_leaves, template_def = jax.tree.flatten(template)

    def place(value, like):
        if isinstance(like, jax.Array) and not isinstance(like, jax.core.Tracer):
            return jax.device_put(value, like.sharding)
        return jnp.asarray(value)

    tree = jax.tree.unflatten(template_def, [place(v, t) for v, t in zip(values, template_leaves)])
    key = tree["key"]
    if manifest["key_impl"]:
        key = jax.random.wrap_key_data(key, impl=manifest["key_impl"])
    state = FitState(tree["params"], tree["opt_state"], jnp.asarray(tree["step"], jnp.int32), key)
    return state, history

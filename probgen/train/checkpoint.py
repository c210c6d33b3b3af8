"""Checkpoints of a training run with orbax-checkpoint.

A checkpoint holds the parameters, optimizer state, base PRNG key, step and metrics
history of a :func:`probgen.train.fit` run, plus a JSON manifest with every leaf's path,
shape, dtype and SHA-256 digest. Restoring checks the manifest against the parameters
and optimizer you restore into and the digests against the bytes read back, so a
mismatched or corrupted checkpoint raises instead of restoring part of a state.

A :func:`probgen.train.sweep` saves the same way the stacked state of all its members
(every leaf, ``step`` and ``key`` included, with leading member axes ``member_shape``;
histories ``(*member_shape, steps, ...)``) under the number of steps the sweep has done.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from probgen.core.checks import static_int
from probgen.core.errors import SettingError
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
    step: int | None = None,
) -> int:
    """Save ``state`` (and the metrics ``history``) as step ``state.step`` (or ``step``) under ``directory``.

    Args:
      directory: the run's checkpoint folder (created if missing); one sub-folder per step.
      state: a :class:`probgen.train.FitState`, or the stacked states of a sweep's members
        (``state.step`` of shape ``member_shape``).
      history: dict of per-step metric arrays covering steps ``0 .. step - 1``: shape
        ``(step, ...)`` for one run, ``(*member_shape, step, ...)`` for stacked members.
      max_to_keep: keep only this many most recent checkpoints (``None``: keep all).
      run_config: JSON-able settings of the run (batch size, batching, data size) that a
        restore can check with its own ``run_config``.
      step: the number the checkpoint is saved under (``None``: ``state.step``, which
        must then be a scalar); a sweep passes the steps it has done (a member that
        diverged stopped earlier).

    Returns:
      The step saved.

    Raises:
      SettingError: a history whose leading axes are not ``(*member_shape, step)``, or
        stacked states without ``step``.

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
    if max_to_keep is not None:
        max_to_keep = static_int(max_to_keep, "max_to_keep", "save_checkpoint")
    member_shape = tuple(np.shape(state.step))
    if step is None:
        if member_shape:
            raise SettingError(
                f"save_checkpoint: state.step has shape {member_shape} (stacked members); pass "
                "step=, the number of steps done, to name the checkpoint"
            )
        step = int(state.step)
    else:
        step = static_int(step, "step", "save_checkpoint", minimum=0)
    _, key_impl = _key_to_data(state.key)
    paths, arrays, treedef = _flatten(_state_tree(state))
    history = {} if history is None else {str(k): np.asarray(v) for k, v in history.items()}
    lead = member_shape + (step,)
    for name, values in history.items():
        if values.shape[:len(lead)] != lead:
            raise SettingError(
                f"save_checkpoint: history[{name!r}] has shape {values.shape}; expected leading "
                f"axes {lead} (the member axes, then one entry per step done)"
            )
    manifest = {
        "format": FORMAT,
        "step": step,
        "member_shape": list(member_shape),
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


def prepare_checkpoint_dir(
    directory: str | os.PathLike, *, where: str = "fit", resume_from: int | None = None,
    resume_with: str = "pg.train.resume",
) -> str:
    """Check, before any training, that a run can write its checkpoints into ``directory``.

    A new run (``resume_from=None``) needs a missing or empty folder, created here: a
    folder holding anything (another run's checkpoints) is refused, since saving into it
    would fail, or mix two runs, only after the training work is done. A run resumed from
    step ``resume_from`` needs that to be the latest step saved, so that no checkpoint
    is written over. Either way the folder must be writable.

    Args:
      directory: the checkpoint folder.
      where: the caller's name, for messages.
      resume_from: the step a resumed run continues from (``None``: a new run).
      resume_with: the function that continues a saved run, named in the message about a
        folder that is not empty (``"pg.train.resume_sweep"`` for a sweep).

    Returns:
      The folder's absolute path.

    Raises:
      SettingError: naming the folder and what is wrong with it.

    Example:
        >>> import os, tempfile
        >>> folder = os.path.join(tempfile.mkdtemp(), "run")
        >>> prepare_checkpoint_dir(folder) == folder and os.path.isdir(folder)
        True
        >>> open(os.path.join(folder, "notes.txt"), "w").close()
        >>> prepare_checkpoint_dir(folder)
        Traceback (most recent call last):
        ...
        probgen.core.errors.SettingError: fit: checkpoint_dir ... is not empty ...
    """
    directory = os.path.abspath(os.fspath(directory))
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise SettingError(f"{where}: checkpoint_dir {directory!r} is a file, not a folder")
    if resume_from is None:
        _check_empty(directory, where, resume_with)
    else:
        _check_latest(directory, where, resume_from)
    try:
        os.makedirs(directory, exist_ok=True)
        # orbax writes a temporary folder per checkpoint, then renames it: try the same.
        os.rmdir(tempfile.mkdtemp(dir=directory, prefix=".probgen-write-check-"))
    except OSError as err:
        raise SettingError(
            f"{where}: checkpoint_dir {directory!r} cannot be written ({type(err).__name__}: "
            f"{err.strerror or err}); choose a writable folder"
        ) from err
    return directory


def _check_empty(directory: str, where: str, resume_with: str) -> None:
    try:
        entries = sorted(os.listdir(directory)) if os.path.isdir(directory) else []
    except OSError as err:
        raise SettingError(
            f"{where}: checkpoint_dir {directory!r} cannot be read ({type(err).__name__}: "
            f"{err.strerror or err})"
        ) from err
    if entries:
        try:
            steps = latest_step(directory)
        except Exception:  # noqa: BLE001 -- not an orbax folder: name its entries instead
            steps = None
        held = f"checkpoints up to step {steps}" if steps is not None else f"{entries[:5]}"
        raise SettingError(
            f"{where}: checkpoint_dir {directory!r} is not empty (it holds {held}); a new run "
            f"needs an empty or new folder. To continue the run saved there, call "
            f"{resume_with} with its checkpoint_dir."
        )


def _check_latest(directory: str, where: str, resume_from: int) -> None:
    with _manager(directory, create=False) as manager:
        later = [s for s in manager.all_steps() if s > resume_from]
    if later:
        raise SettingError(
            f"{where}: step={resume_from} is not the latest checkpoint in {directory!r} "
            f"(later steps saved: {sorted(later)}); continuing from it would write over them. "
            "Resume from the latest step (step=None), or remove the later step folders first."
        )


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
    *,
    member_shape: tuple[int, ...] = (),
) -> tuple[FitState, dict[str, np.ndarray]]:
    """Restore a :class:`FitState` and the metrics history saved by :func:`save_checkpoint`.

    Args:
      directory: the checkpoint folder.
      params: parameters with the structure, shapes and dtypes of the saved ones (their
        values are ignored); restored leaves are placed like these (same sharding).
      opt_state: an optimizer state of the same structure (e.g. ``optimizer.init(params)``).
      step: the step to restore; ``None`` restores the latest.
      run_config: if given, each of its entries must equal the one saved with the
        checkpoint (e.g. ``batch_size``), else :class:`CheckpointMismatchError`; an entry
        that is a dict is compared on the keys both dicts have. A checkpoint written
        before an entry existed counts as having its default (``kind``: ``"fit"``).
      member_shape: the leading member axes of a sweep's stacked state (``()``: one run);
        ``params`` and ``opt_state`` then carry them too.

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
    if step is not None:
        step = static_int(step, "step", "restore_checkpoint", minimum=0)
    with _manager(directory, create=False) as manager:
        step = _chosen_step(manager, directory, step)
        where = f"checkpoint at step {step} in {directory!r}"
        manifest = _read_manifest(manager, step, where)
        _check_run_config(manifest.get("run_config", {}), run_config or {}, where)
        template = _template(params, opt_state, manifest, member_shape)
        paths = _check_structure(manifest, template, where)
        restored = _read_arrays(manager, step, where)
    values = _verified_leaves(restored.leaves, paths, manifest["sha256"], where)
    history = _verified_history(restored.history, manifest["history"], where)
    return _placed_state(template, values, manifest["key_impl"]), history


def _chosen_step(manager, directory: str, step: int | None) -> int:
    """``step``, or the latest saved step; a :class:`CheckpointError` if it is not saved."""
    if step is None:
        step = manager.latest_step()
        if step is None:
            raise CheckpointError(f"no checkpoint saved in {directory!r}")
    elif step not in manager.all_steps():
        raise CheckpointError(
            f"no checkpoint for step {step} in {directory!r}; saved steps: {manager.all_steps()}"
        )
    return step


def _read_manifest(manager, step: int, where: str) -> dict:
    try:
        manifest = manager.restore(step, args=ocp.args.Composite(manifest=ocp.args.JsonRestore())).manifest
    except Exception as err:  # orbax raises many kinds; all mean "unreadable"
        raise CheckpointError(
            f"{where} has an unreadable manifest (corrupted or not written by "
            f"probgen.train): {type(err).__name__}: {err}"
        ) from err
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CheckpointError(f"{where} is not a {FORMAT} checkpoint")
    return manifest


# Entries a checkpoint written before they existed is taken to have.
_CONFIG_DEFAULTS = {"kind": "fit"}


def _config_differences(saved: dict, given: dict) -> list[str]:
    """``name: saved .., now ..`` for each entry of ``given`` that ``saved`` has otherwise.

    Entries that are dicts compare on the keys both have (a fingerprint filed under other
    library versions is not compared); an entry ``saved`` lacks is not compared, unless
    it has a default (:data:`_CONFIG_DEFAULTS`).
    """
    differences = []
    for name, value in given.items():
        if name not in saved and name not in _CONFIG_DEFAULTS:
            continue
        old = saved.get(name, _CONFIG_DEFAULTS.get(name))
        if isinstance(value, dict) and isinstance(old, dict):
            differences += [
                f"{name}: saved {old[k]!r}, now {value[k]!r}"
                for k in value if k in old and old[k] != value[k]
            ]
        elif old != value:
            differences.append(f"{name}: saved {old!r}, now {value!r}")
    return differences


def _check_run_config(saved: dict, given: dict, where: str) -> None:
    given = json.loads(json.dumps(given))  # as saved: tuples become lists
    differences = _config_differences(saved, given)
    if differences:
        raise CheckpointMismatchError(
            f"{where} was written by a run with other settings ({'; '.join(differences)}); "
            "resume with the original settings, or start a new run in an empty folder (from "
            "restore_checkpoint(...)[0].params if you want its parameters)"
        )


def _template(params: Any, opt_state: Any, manifest: dict, member_shape: tuple[int, ...] = ()) -> dict:
    """The tree to restore into; the key's shape and dtype come from the checkpoint."""
    saved_shapes = dict(zip(manifest["paths"], manifest["shapes"]))
    saved_dtypes = dict(zip(manifest["paths"], manifest["dtypes"]))
    return {
        "params": params,
        "opt_state": opt_state,
        "key": np.zeros(saved_shapes.get("['key']", (2,)), saved_dtypes.get("['key']", "uint32")),
        "step": np.zeros(tuple(member_shape), np.int32),
    }


def _check_structure(manifest: dict, template: dict, where: str) -> list[str]:
    """The template's leaf paths, checked against the manifest before any array is read."""
    paths, arrays, treedef = _flatten(jax.tree.map(np.asarray, template))
    shapes_match = [tuple(s) for s in manifest["shapes"]] == [a.shape for a in arrays]
    dtypes_match = manifest["dtypes"] == [str(a.dtype) for a in arrays]
    if treedef != manifest["treedef"] or paths != manifest["paths"] or not (shapes_match and dtypes_match):
        raise CheckpointMismatchError(
            f"{where} does not match the given params / optimizer state:\n"
            + _mismatch_report(manifest["paths"], manifest["shapes"], manifest["dtypes"], paths, arrays)
        )
    return paths


def _read_arrays(manager, step: int, where: str) -> Any:
    try:
        return manager.restore(
            step,
            args=ocp.args.Composite(leaves=ocp.args.StandardRestore(), history=ocp.args.StandardRestore()),
        )
    except Exception as err:
        raise CheckpointError(
            f"{where} could not be read (corrupted or incomplete): {type(err).__name__}: {err}"
        ) from err


def _verified_leaves(leaves: Any, paths: list[str], digests: list[str], where: str) -> list[np.ndarray]:
    names = [f"{i:06d}" for i in range(len(paths))]
    if not isinstance(leaves, dict) or sorted(leaves) != names:
        raise CheckpointError(
            f"{where} is incomplete: expected {len(names)} arrays, found "
            f"{len(leaves) if isinstance(leaves, dict) else 0}"
        )
    values = []
    for name, path, expected_digest in zip(names, paths, digests):
        value = np.asarray(leaves[name])
        if _digest(value) != expected_digest:
            raise CheckpointError(
                f"{where} is corrupted: the bytes of {path} do not match the digest written with it"
            )
        values.append(value)
    return values


def _verified_history(restored: Any, saved: dict, where: str) -> dict[str, np.ndarray]:
    values = (restored or {}).get("values", {}) or {}
    history = {}
    for name, info in saved.items():
        if name not in values:
            raise CheckpointError(f"{where} is incomplete: history[{name!r}] missing")
        value = np.asarray(values[name])
        if _digest(value) != info["sha256"]:
            raise CheckpointError(
                f"{where} is corrupted: history[{name!r}] does not match the digest written with it"
            )
        history[name] = value
    return history


def _placed_state(template: dict, values: list[np.ndarray], key_impl: str | None) -> FitState:
    """The restored arrays, placed like the template's leaves (same sharding)."""
    template_leaves, template_def = jax.tree.flatten(template)

    def place(value, like):
        if isinstance(like, jax.Array) and not isinstance(like, jax.core.Tracer):
            return jax.device_put(value, like.sharding)
        return jnp.asarray(value)

    tree = jax.tree.unflatten(template_def, [place(v, t) for v, t in zip(values, template_leaves)])
    key = tree["key"]
    if key_impl:
        key = jax.random.wrap_key_data(key, impl=key_impl)
    return FitState(tree["params"], tree["opt_state"], jnp.asarray(tree["step"], jnp.int32), key)

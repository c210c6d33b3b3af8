"""Minibatches from in-memory arrays, chosen as a pure function of the step.

Selection depends only on ``(data_key, step)``, never on how many steps ran before in
the same compiled chunk, so a run split into chunks (or resumed from a checkpoint)
sees exactly the batches an unsplit run sees.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from probgen.core.checks import static_int
from probgen.core.errors import SettingError

BATCHING_MODES = ("epoch", "random")


class BatchSpec(NamedTuple):
    """Static minibatch settings (hashable, so they can be a ``jit`` static argument).

    Attributes:
      num_examples: size of the leading example axis of every data leaf (0: no data).
      batch_size: examples per step; ``None`` uses the whole data set every step.
      batching: ``"epoch"`` (a fresh permutation per epoch, remainder dropped) or
        ``"random"`` (indices drawn uniformly with replacement each step).
    """

    num_examples: int
    batch_size: int | None
    batching: str


def batch_spec(data: Any, batch_size: int | None, batching: str = "epoch") -> BatchSpec:
    """Check ``data`` and the batch settings; return the static :class:`BatchSpec`.

    Args:
      data: ``None`` or a pytree of arrays sharing a leading example axis.
      batch_size: ``None`` (full batch) or a positive int (NumPy ints too) no larger than
        the data set.
      batching: ``"epoch"`` or ``"random"``.

    Returns:
      A :class:`BatchSpec`.

    Example:
        >>> import jax.numpy as jnp
        >>> batch_spec({"x": jnp.zeros((10, 2))}, 4)
        BatchSpec(num_examples=10, batch_size=4, batching='epoch')
    """
    if batching not in BATCHING_MODES:
        raise SettingError(f"batch_spec: batching must be one of {BATCHING_MODES}, got {batching!r}")
    if batch_size is not None:
        batch_size = static_int(batch_size, "batch_size", "batch_spec")
    leaves, _ = jax.tree.flatten_with_path(data) if data is not None else ([], None)
    if not leaves:
        if batch_size is not None:
            raise SettingError("batch_spec: batch_size was given but data is None or has no arrays")
        return BatchSpec(0, None, batching)
    sizes = {}
    for path, leaf in leaves:
        shape = jnp.shape(leaf)
        if len(shape) == 0:
            raise SettingError(
                f"batch_spec: data{jax.tree_util.keystr(path)} is a scalar; every data leaf "
                "needs a leading example axis"
            )
        sizes[jax.tree_util.keystr(path)] = shape[0]
    if len(set(sizes.values())) != 1:
        raise SettingError(
            f"batch_spec: data leaves disagree on the number of examples (leading axis): {sizes}"
        )
    num_examples = int(next(iter(sizes.values())))
    if batch_size is not None and batch_size > num_examples:
        raise SettingError(
            f"batch_spec: batch_size={batch_size} is larger than the data set ({num_examples} examples)"
        )
    return BatchSpec(num_examples, batch_size, batching)


def epoch_permutation(data_key: jax.Array, step: jax.Array, spec: BatchSpec) -> jax.Array:
    """The example permutation of the epoch that contains ``step`` (``"epoch"`` batching)."""
    steps_per_epoch = spec.num_examples // spec.batch_size
    return jax.random.permutation(jax.random.fold_in(data_key, step // steps_per_epoch), spec.num_examples)


def batch_indices(
    data_key: jax.Array, step: jax.Array, spec: BatchSpec, permutation: jax.Array | None = None
) -> jax.Array:
    """Indices of the examples used at ``step``.

    Args:
      data_key: the run's data key.
      step: the global step (int scalar, may be traced).
      spec: the :class:`BatchSpec`.
      permutation: for ``"epoch"`` batching, the current epoch's permutation (computed
        from ``epoch_permutation`` when omitted).

    Returns:
      An int array of shape ``(batch_size,)``.

    Example:
        >>> import jax
        >>> spec = BatchSpec(10, 5, "epoch")
        >>> idx = batch_indices(jax.random.key(0), 0, spec)
        >>> idx2 = batch_indices(jax.random.key(0), 1, spec)
        >>> sorted(idx.tolist() + idx2.tolist()) == list(range(10))
        True
    """
    if spec.batching == "random":
        return jax.random.randint(
            jax.random.fold_in(data_key, step), (spec.batch_size,), 0, spec.num_examples
        )
    if permutation is None:
        permutation = epoch_permutation(data_key, step, spec)
    steps_per_epoch = spec.num_examples // spec.batch_size
    start = (step % steps_per_epoch) * spec.batch_size
    return jax.lax.dynamic_slice_in_dim(permutation, start, spec.batch_size)


def take_batch(data: Any, indices: jax.Array) -> Any:
    """Gather ``indices`` along the leading axis of every leaf of ``data``."""
    return jax.tree.map(lambda leaf: jnp.take(leaf, indices, axis=0), data)

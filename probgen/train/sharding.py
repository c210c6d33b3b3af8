"""Device meshes for data-, particle- and sweep-parallel work with JAX's own SPMD.

The same code runs on one device or many: build a mesh with :func:`make_mesh` (all
devices by default; a 1-device mesh on a laptop), then

- data-parallel training: ``pg.train.fit(..., mesh=mesh, data_axis="data")`` shards the
  data and every minibatch along the example axis and replicates the parameters; XLA
  inserts the gradient all-reduce;
- particle-parallel SMC / importance sampling: :func:`shard_leading` places particles
  (any pytree with a leading particle axis) across the mesh before a jitted sampler, and
  :func:`constrain_leading` keeps them sharded inside it (resampling gathers across
  devices automatically). For a particle filter shard the particle fields of its state,
  ``state._replace(carry=..., choices=..., log_weights=...)``; the scalar fields stay
  replicated. The same key gives the same particles and log evidence as on one device
  (up to float rounding): every particle draws from its own key (``jax.random`` values do
  not depend on the sharding, with ``jax_threefry_partitionable`` on or off), and ``pg.mc``'s
  resampling adds its weights in one fixed order, where XLA's ``sum``/``cumsum`` change
  their order with the sharding and, through one flipped ancestor, would send the run down
  another random path;
- sweeps: ``pg.train.sweep(..., mesh=mesh, axis_name=...)`` spreads sweep members.

Several hosts: call ``jax.distributed.initialize()`` (with ``coordinator_address``,
``num_processes`` and ``process_id`` where the cluster does not provide them) at the
start of the same script on every host, before any other JAX call. ``jax.devices()``
then lists the devices of all hosts and ``make_mesh()`` spans them; each host must load
the same data (or use ``jax.make_array_from_process_local_data`` for its own shard),
and checkpoints must be written to a folder every host can reach (orbax coordinates the
hosts).
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from probgen.core.errors import SettingError


def make_mesh(axis_name: str = "data", devices: Sequence[Any] | None = None) -> Mesh:
    """A 1-D mesh over ``devices`` (default: every device of every host).

    Args:
      axis_name: the mesh axis name (``"data"``, ``"particles"``, ``"sweep"``...).
      devices: the devices to use; default ``jax.devices()``.

    Returns:
      A ``jax.sharding.Mesh`` with one axis.

    Example:
        >>> mesh = make_mesh("particles")
        >>> mesh.axis_names
        ('particles',)
    """
    devices = jax.devices() if devices is None else list(devices)
    if not devices:
        raise SettingError("make_mesh: no devices given")
    return Mesh(np.asarray(devices), (axis_name,))


def _check_divisible(tree: Any, count: int, axis_name: str) -> None:
    for path, leaf in jax.tree.flatten_with_path(tree)[0]:
        shape = np.shape(leaf)
        if not shape or shape[0] % count:
            raise SettingError(
                f"leaf {jax.tree_util.keystr(path) or '<root>'} has shape {shape}; its leading "
                f"axis must be a multiple of the {count} devices on mesh axis {axis_name!r}"
            )


def shard_leading(tree: Any, mesh: Mesh, axis_name: str | None = None) -> Any:
    """Place every leaf of ``tree`` with its leading axis split across ``mesh``.

    Args:
      tree: pytree of arrays sharing a leading (batch / particle / member) axis whose
        size is a multiple of the mesh axis size.
      mesh: the mesh.
      axis_name: which mesh axis (default: the mesh's first).

    Returns:
      The same pytree, as sharded ``jax.Array`` s.

    Example:
        >>> import jax.numpy as jnp
        >>> x = shard_leading(jnp.zeros((8, 3)), make_mesh("particles"))
        >>> x.shape
        (8, 3)
    """
    axis_name = mesh.axis_names[0] if axis_name is None else axis_name
    if axis_name not in mesh.axis_names:
        raise SettingError(f"axis_name {axis_name!r} is not an axis of the mesh {mesh.axis_names}")
    _check_divisible(tree, mesh.shape[axis_name], axis_name)
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec(axis_name)))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Place a full copy of every leaf of ``tree`` on each device of ``mesh``.

    Example:
        >>> import jax.numpy as jnp
        >>> replicate(jnp.ones(2), make_mesh()).tolist()
        [1.0, 1.0]
    """
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def constrain_leading(tree: Any, mesh: Mesh, axis_name: str | None = None) -> Any:
    """Inside ``jit``: ask XLA to keep the leading axis of every leaf sharded over ``mesh``.

    Use it on the particle arrays inside an SMC step so propagation and weighting stay
    local to each device.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> mesh = make_mesh("particles")
        >>> f = jax.jit(lambda x: constrain_leading(x * 2.0, mesh))
        >>> f(jnp.ones(4)).tolist()
        [2.0, 2.0, 2.0, 2.0]
    """
    axis_name = mesh.axis_names[0] if axis_name is None else axis_name
    return jax.lax.with_sharding_constraint(tree, NamedSharding(mesh, PartitionSpec(axis_name)))

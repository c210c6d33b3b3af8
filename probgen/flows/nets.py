"""Small networks as plain pytrees of arrays: an MLP and a MADE (masked MLP).

Parameters are nested dicts/lists of arrays, never objects with hidden state, so they
pass as arguments of generative functions and ``jax.grad`` reaches them directly.
Structure (layer count, widths) is read from the array shapes, never stored apart.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from probgen.core.errors import SettingError


def init_mlp(key: jax.Array, sizes: Sequence[int], final_scale: float = 0.0) -> list[dict]:
    """Initialize an MLP with layer widths ``sizes`` (input first, output last).

    Args:
      key: PRNG key.
      sizes: layer widths including input and output.
      final_scale: scale of the last layer's weights (0 starts a flow at the identity).

    Returns:
      A list of ``{"w": (n_in, n_out), "b": (n_out,)}`` dicts.

    Example:
        >>> import jax, probgen as pg
        >>> p = pg.flows.init_mlp(jax.random.key(0), [2, 8, 3])
        >>> pg.flows.mlp(p, jax.numpy.ones(2)).shape
        (3,)
    """
    if len(sizes) < 2:
        raise SettingError(f"init_mlp: sizes needs at least input and output widths, got {sizes}")
    keys = jax.random.split(key, len(sizes) - 1)
    params = []
    for i, (k, n_in, n_out) in enumerate(zip(keys, sizes[:-1], sizes[1:])):
        last = i == len(sizes) - 2
        scale = final_scale if last else 1.0 / np.sqrt(n_in)
        params.append({"w": scale * jax.random.normal(k, (n_in, n_out)), "b": jnp.zeros(n_out)})
    return params


def mlp(params: list[dict], x: jax.Array, activation=jax.nn.gelu) -> jax.Array:
    """Apply an MLP built by :func:`init_mlp` (activation between layers, none at the end).

    Example:
        >>> import jax, probgen as pg
        >>> p = pg.flows.init_mlp(jax.random.key(0), [2, 4, 1], final_scale=1.0)
        >>> pg.flows.mlp(p, jax.numpy.zeros((5, 2))).shape
        (5, 1)
    """
    for layer in params[:-1]:
        x = activation(x @ layer["w"] + layer["b"])
    return x @ params[-1]["w"] + params[-1]["b"]


def made_masks(dim: int, hidden: Sequence[int], out_mult: int) -> list[np.ndarray]:
    """Masks of a MADE network (Germain et al., 2015) with input order ``0..dim-1``.

    Output ``j`` of each of the ``out_mult`` output blocks depends only on inputs ``< j``.
    Hidden degrees cycle through ``0..dim-2`` so every unit is used.
    """
    in_deg = np.arange(dim)
    degs = [in_deg]
    for h in hidden:
        degs.append(np.arange(h) % max(dim - 1, 1))
    masks = [(d_out[None, :] >= d_in[:, None]).astype(np.float32) for d_in, d_out in zip(degs[:-1], degs[1:])]
    out_deg = np.tile(in_deg, out_mult)
    masks.append((out_deg[None, :] > degs[-1][:, None]).astype(np.float32))
    return masks


def init_made(key: jax.Array, dim: int, hidden: Sequence[int], out_mult: int) -> list[dict]:
    """Initialize a MADE: ``dim`` inputs, ``out_mult * dim`` autoregressive outputs.

    Example:
        >>> import jax, probgen as pg
        >>> p = pg.flows.init_made(jax.random.key(0), 3, [16], 2)
        >>> pg.flows.made(p, jax.numpy.ones(3)).shape
        (6,)
    """
    return init_mlp(key, [dim, *hidden, out_mult * dim])


def made(params: list[dict], x: jax.Array, activation=jax.nn.gelu) -> jax.Array:
    """Apply a MADE; masks are rebuilt (static numpy) from the parameter shapes."""
    dim = params[0]["w"].shape[0]
    hidden = [layer["w"].shape[1] for layer in params[:-1]]
    out_mult = params[-1]["w"].shape[1] // dim
    masks = made_masks(dim, hidden, out_mult)
    for layer, m in zip(params[:-1], masks[:-1]):
        x = activation(x @ (layer["w"] * m) + layer["b"])
    return x @ (params[-1]["w"] * masks[-1]) + params[-1]["b"]

"""Particle keys: a key per particle that costs what one batched draw costs.

Particle methods run one generative-function trace per particle under ``jax.vmap``, and each
trace needs its own randomness. Splitting a threefry key into ``n`` keys costs a hash per
particle, each site's ``fold_in`` another, and the draw a third; a hand-written batched
filter spends one hash per value. :func:`particle_keys` removes the first two.

A particle key is the pair ``(k, i)``: a threefry key ``k`` shared by all particles and the
particle's index ``i``. It is a JAX key of its own implementation ("probgen_stream"), so
every ``jax.random`` function, numpyro and distrax accept it, and:

* ``split`` and ``fold_in`` act on ``k`` exactly as threefry's own (``jax_threefry_partitionable``)
  do, and keep ``i``. Under ``vmap`` the shared ``k`` is a broadcast, so XLA computes these
  derivations once for all particles instead of once per particle;
* ``random_bits`` hashes the counter ``(i, j)`` under ``k`` for the ``j``-th value, where a
  threefry key hashes ``(0, j)``. Particles, and the counters within a draw, never share an
  input to the hash, so no two particles' draws coincide.

The hash is threefry-2x32 with 20 rounds, written out unrolled: the rolled loop that JAX uses
on CPU carries a key array per particle through its iterations.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from probgen.core.checks import static_int
from probgen.core.errors import ArgumentError

_U32 = np.uint32
_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_LAST = np.uint32(0xFFFFFFFF)  # the counter word no draw reaches: it folds an index into a key
STREAM_IMPL_NAME = "probgen_stream"


def threefry2x32(k0, k1, x0, x1):
    """Threefry-2x32 (20 rounds) of the counter ``(x0, x1)`` under the key ``(k0, k1)``.

    Bit for bit the hash of ``jax.random`` (``threefry2x32_p``), unrolled so that XLA fuses it
    and folds a broadcast key into scalars. Arguments broadcast against each other. One jitted
    function: lowered once per program and shape, however many keys a program derives.
    """
    return _threefry2x32(*(jnp.asarray(a, _U32) for a in (k0, k1, x0, x1)))


@jax.jit
def _threefry2x32(k0, k1, x0, x1):
    ks = (k0, k1, k0 ^ k1 ^ _U32(0x1BD11BDA))
    x0, x1 = x0 + ks[0], x1 + ks[1]
    for block in range(5):
        for r in _ROTATIONS[block % 2]:
            x0 = x0 + x1
            x1 = x0 ^ ((x1 << _U32(r)) | (x1 >> _U32(32 - r)))
        x0 = x0 + ks[(block + 1) % 3]
        x1 = x1 + ks[(block + 2) % 3] + _U32(block + 1)
    return x0, x1


def _seed(seed):
    data = jax.random.key_data(jax.random.key(seed, impl="threefry2x32"))
    return jnp.concatenate([data, jnp.zeros((1,), _U32)])


def _split(data, shape):
    shape = tuple(shape)
    lo = lax.iota(_U32, math.prod(shape)).reshape(shape)
    b0, b1 = threefry2x32(data[0], data[1], jnp.zeros(shape, _U32), lo)
    return jnp.stack([b0, b1, jnp.broadcast_to(data[2], shape)], axis=-1)


def _fold_in(data, value):
    b0, b1 = threefry2x32(data[0], data[1], _U32(0), jnp.asarray(value, _U32))
    return jnp.stack([b0, b1, data[2]])


def _random_bits(data, bit_width, shape):
    shape = tuple(shape)
    size = math.prod(shape)
    if size >= 2**32 - 1:
        raise ArgumentError(
            f"a particle key draws fewer than 2**32 - 1 values at once, asked for shape {shape}; "
            "split the draw over several keys")
    lo = lax.iota(_U32, size).reshape(shape)
    b0, b1 = threefry2x32(data[0], data[1], jnp.broadcast_to(data[2], shape), lo)
    if bit_width == 64:
        return (b0.astype(np.uint64) << np.uint64(32)) | b1.astype(np.uint64)
    bits = b0 ^ b1
    return bits if bit_width == 32 else bits.astype({8: np.uint8, 16: np.uint16}[bit_width])


STREAM_IMPL = jax.extend.random.define_prng_impl(
    key_shape=(3,), seed=_seed, split=_split, random_bits=_random_bits, fold_in=_fold_in,
    name=STREAM_IMPL_NAME, tag="pgs")


def is_particle_key(key) -> bool:
    """Whether ``key`` is a key made by :func:`particle_keys`."""
    dtype = getattr(key, "dtype", None)
    return (dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key)
            and jax.random.key_impl(key) == STREAM_IMPL)


def _typed(key, where: str):
    """``key`` as a typed key (a raw ``PRNGKey`` becomes a threefry key)."""
    key = jnp.asarray(key) if not hasattr(key, "dtype") else key
    if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape[-1:] != (2,) or key.dtype != jnp.uint32:
            raise ArgumentError(
                f"{where}: key must be a JAX PRNG key (jax.random.key), got a {key.dtype} "
                f"array of shape {tuple(key.shape)}")
        key = jax.random.wrap_key_data(key, impl="threefry2x32")
    return key


def stream_key(key: jax.Array) -> jax.Array:
    """A threefry ``key`` as the particle-key implementation's index 0: the same draws and
    derivations bit for bit, hashed by the unrolled :func:`threefry2x32` (faster to compile
    and to run on CPU than JAX's rolled loop). Other keys are returned as they are."""
    if key is None:
        return None
    key = _typed(key, "stream_key")
    if str(jax.random.key_impl(key)) != "threefry2x32":
        return key
    data = jax.random.key_data(key)
    index = jnp.zeros(data.shape[:-1] + (1,), _U32)
    return jax.random.wrap_key_data(jnp.concatenate([data, index], axis=-1), impl=STREAM_IMPL)


def _shared(data):
    """The threefry key data a particle key's stream stands for: index 0 is the key itself,
    another index is folded in (at the counter word no draw reaches)."""
    folded = jnp.stack(threefry2x32(data[..., 0], data[..., 1], data[..., 2], _LAST), axis=-1)
    return jnp.where((data[..., 2] == 0)[..., None], data[..., :2], folded)


def threefry_key(key: jax.Array) -> jax.Array:
    """A particle key as a plain threefry key with a stream of its own, for the few
    ``jax.random`` functions that accept no other implementation (``poisson``). A key of
    index 0 (:func:`stream_key`) gives back the threefry key it was made from."""
    if not is_particle_key(key):
        return key
    return jax.random.wrap_key_data(_shared(jax.random.key_data(key)), impl="threefry2x32")


def particle_keys(key: jax.Array, n: int) -> jax.Array:
    """``n`` independent keys, one per particle, for ``jax.vmap`` over particles.

    A drop-in for ``jax.random.split(key, n)`` where each key feeds one member of a
    ``vmap``: a particle of SMC or importance sampling, a sample of an IWAE bound, a member
    of a ``pg.vmap`` plate. Particle ``i`` gets the pair (``key``, ``i``): derivations
    (``split``, ``fold_in``) are shared by all particles and draws hash the particle index,
    so a vmapped draw costs what ``jax.random.normal(key, (n,))`` costs, where split keys
    cost about three times as much. Every ``jax.random`` function accepts the keys; the same
    ``key`` always gives the same draws, and no two particles share one.

    ``key`` is a threefry key (``jax.random.key``, the default, or a raw ``PRNGKey``) or a
    particle key itself (nested particle systems: its index is folded into the shared key
    first). Other implementations (``rbg``, ``unsafe_rbg``) get ``jax.random.split``.

    Example:
        >>> import jax, probgen as pg
        >>> keys = pg.particle_keys(jax.random.key(0), 4)
        >>> x = jax.vmap(jax.random.normal)(keys)
        >>> x.shape, bool(len(set(x.tolist())) == 4)
        ((4,), True)
    """
    n = static_int(n, "n", "particle_keys", minimum=1)
    if n >= 2**32 - 1:
        raise ArgumentError(f"particle_keys: n={n} particles; at most 2**32 - 2 fit in a key's index")
    key = _typed(key, "particle_keys")
    if key.shape != ():
        raise ArgumentError(
            f"particle_keys takes one key, got a key array of shape {tuple(key.shape)} "
            "(vmap over it to make particles for each)")
    impl = jax.random.key_impl(key)
    if impl == STREAM_IMPL:
        shared = _shared(jax.random.key_data(key))
    elif str(impl) == "threefry2x32":
        shared = jax.random.key_data(key)
    else:
        return jax.random.split(key, n)
    index = lax.iota(_U32, n) + _U32(1)  # index 0 would repeat the shared key's own stream
    data = jnp.concatenate([jnp.broadcast_to(shared, (n, 2)), index[:, None]], axis=1)
    return jax.random.wrap_key_data(data, impl=STREAM_IMPL)

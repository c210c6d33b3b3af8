"""Bit sequences: build a binary string of length ``n`` word by word (k bits per action).

The task of Malkin et al. (2022): a sequence of ``n / k`` words is built by appending (and,
in the non-autoregressive variant of Shen et al. 2023, also prepending) one ``k``-bit word
per step; the reward is ``exp(-beta * d)`` with ``d`` the smallest Hamming distance to a
set of modes. :func:`bitseq_modes` draws a mode set the way the paper does, by
concatenating 8-bit blocks from a fixed alphabet.

References: Malkin et al., "Trajectory balance: Improved credit assignment in GFlowNets",
NeurIPS 2022; Shen et al., "Towards Understanding and Improving GFlowNet Training", ICML 2023.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from probgen.core.checks import static_int
from probgen.core.errors import ArgumentError, SettingError
from probgen.gfn.envs import Environment, default_float, environment

# The 8-bit blocks from which Malkin et al. (2022) build their modes.
_BLOCKS = np.array([
    [0, 0, 0, 0, 0, 0, 0, 0],
    [1, 1, 1, 1, 1, 1, 1, 1],
    [1, 1, 1, 1, 0, 0, 0, 0],
    [0, 0, 0, 0, 1, 1, 1, 1],
    [0, 0, 1, 1, 1, 1, 0, 0],
], np.int32)

_MAX_LISTED_STATES = 1 << 22


def bitseq_modes(seed: int, num_modes: int, length: int) -> jax.Array:
    """``num_modes`` distinct bit strings of ``length`` bits, each a concatenation of 8-bit blocks.

    Each mode is ``length / 8`` blocks drawn uniformly from the five blocks of Malkin et
    al. (2022) (``00000000``, ``11111111``, ``11110000``, ``00001111``, ``00111100``),
    distinct modes drawn with a NumPy generator seeded by ``seed`` (a static mode set).

    Args:
      seed: the seed of the draw.
      num_modes: how many modes (at most ``5^(length/8)``).
      length: the number of bits, a multiple of 8.

    Returns:
      An int32 array of shape ``(num_modes, length)`` of 0/1.

    Example:
        >>> import probgen as pg
        >>> pg.gfn.bitseq_modes(0, 3, 16).shape
        (3, 16)
    """
    num_modes = static_int(num_modes, "num_modes", "bitseq_modes")
    length = static_int(length, "length", "bitseq_modes")
    if length % 8:
        raise SettingError(f"bitseq_modes: length={length} is not a multiple of 8 (the block size)")
    blocks = length // 8
    if num_modes > 5 ** blocks:
        raise SettingError(f"bitseq_modes: only 5^{blocks} = {5 ** blocks} distinct modes of {length} bits exist, "
                           f"asked for {num_modes}")
    rng = np.random.default_rng(seed)
    chosen: dict[tuple, None] = {}
    while len(chosen) < num_modes:
        chosen.setdefault(tuple(rng.integers(0, 5, blocks).tolist()))
    indices = np.asarray(list(chosen), np.int64)
    return jnp.asarray(_BLOCKS[indices].reshape(num_modes, length))


def bit_sequence(modes: jax.Array, word_size: int = 1, *, beta: float = 1.0, prepend: bool = True) -> Environment:
    """Build a bit string of the modes' length, ``word_size`` bits per step; ``R = exp(-beta d)``.

    The state is ``{"words": int32[length / word_size]}``, filled from the left, ``-1``
    for an empty slot. Forward action ``w < 2^k`` appends word ``w``; with ``prepend``,
    action ``2^k + w`` prepends it. A full sequence is terminal (``max_steps`` is the number
    of words; there is no exit action). Backward action 0 removes the last word and, with
    ``prepend``, backward action 1 the first (at one word both lead to the empty sequence:
    they are two edges, one per forward action). ``log R(x) = -beta * min_m Hamming(x, m)``
    over the rows of ``modes``. Features are the one-hot encodings of the slots (empty
    included). States are listable when there are at most 2^22 of them.

    Args:
      modes: the mode set, ``(num_modes, length)`` of 0/1 (e.g. :func:`bitseq_modes`).
      word_size: bits per action ``k``; it must divide ``length``.
      beta: the reward sharpness.
      prepend: also allow prepending (the non-autoregressive variant); else append only
        (the state graph is then a tree).

    Returns:
      An :class:`Environment`.

    Example:
        >>> import jax.numpy as jnp, probgen as pg
        >>> env = pg.gfn.bit_sequence(jnp.array([[0, 1, 1, 0]]), word_size=2)
        >>> full = {"words": jnp.array([1, 3], jnp.int32)}    # bits 01 11
        >>> float(env.log_reward(full)), env.num_actions, env.num_states
        (-1.0, 8, 21)
    """
    modes = jnp.asarray(modes)
    if modes.ndim != 2 or (not jnp.issubdtype(modes.dtype, jnp.integer) and modes.dtype != jnp.bool_):
        raise ArgumentError(f"bit_sequence: modes must be an integer array (num_modes, length) of 0/1, got "
                            f"{modes.dtype}{list(modes.shape)}")
    modes = modes.astype(jnp.int32)
    if not isinstance(modes, jax.core.Tracer) and not bool(jnp.all((modes == 0) | (modes == 1))):
        raise ArgumentError("bit_sequence: modes must hold only 0 and 1")
    length = modes.shape[1]
    word_size = static_int(word_size, "word_size", "bit_sequence")
    if length % word_size:
        raise SettingError(f"bit_sequence: word_size={word_size} does not divide the modes' length {length}")
    if not beta > 0:
        raise SettingError(f"bit_sequence: beta must be positive, got {beta}")
    num_words = length // word_size
    vocab = 2 ** word_size
    shifts = jnp.arange(word_size - 1, -1, -1, dtype=jnp.int32)

    def count(state):
        return jnp.sum(state["words"] >= 0).astype(jnp.int32)

    def forward_mask(state):
        open_ = count(state) < num_words
        return jnp.full(vocab * (2 if prepend else 1), open_)

    def step(state, action):
        action = jnp.asarray(action)
        words, n = state["words"], count(state)
        word = (action % vocab).astype(jnp.int32)
        appended = words.at[n].set(word, mode="drop")
        prepended = jnp.concatenate([word[None], words[:-1]])
        return {"words": jnp.where(action >= vocab, prepended, appended)}

    def backward_mask(state):
        return jnp.full(2 if prepend else 1, count(state) > 0)

    def backward_step(state, action):
        action = jnp.asarray(action)
        words, n = state["words"], count(state)
        without_last = words.at[n - 1].set(-1, mode="drop")
        without_first = jnp.concatenate([words[1:], jnp.full(1, -1, jnp.int32)])
        return {"words": jnp.where(action == 1, without_first, without_last)}

    def backward_action(state, action):
        return (jnp.asarray(action) >= vocab).astype(jnp.int32)

    def forward_action(state, backward):
        words, n = state["words"], count(state)
        last = words[jnp.maximum(n - 1, 0)]
        return jnp.where(backward == 1, vocab + words[0], last).astype(jnp.int32)

    def bits(state):
        words = state["words"]
        b = (words[:, None] >> shifts) & 1
        return jnp.where(words[:, None] >= 0, b, -1).reshape(-1)

    def log_reward(state):
        distance = jnp.min(jnp.sum(bits(state)[None, :] != modes, axis=1))
        return -beta * distance.astype(default_float())

    def features(state):
        return jax.nn.one_hot(state["words"] + 1, vocab + 1, dtype=default_float()).reshape(-1)

    sizes = [vocab ** n for n in range(num_words + 1)]
    num_states = sum(sizes)
    listable = num_states <= _MAX_LISTED_STATES
    if listable:
        offsets = jnp.asarray(np.concatenate([[0], np.cumsum(sizes)[:-1]]), jnp.int32)
        powers = jnp.asarray([vocab ** i for i in range(num_words)], jnp.int32)

    def state_index(state):
        words = state["words"]
        return offsets[count(state)] + jnp.sum(jnp.where(words >= 0, words, 0) * powers)

    def all_states():
        rows = []
        for n, size in enumerate(sizes):
            codes = np.arange(size)[:, None] // np.asarray([vocab ** i for i in range(n)], np.int64) % vocab
            rows.append(np.concatenate([codes.reshape(size, n), -np.ones((size, num_words - n), np.int64)], axis=1))
        return {"words": jnp.asarray(np.concatenate(rows), jnp.int32)}

    initial = {"words": jnp.full(num_words, -1, jnp.int32)}
    return environment(
        initial, forward_mask=forward_mask, step=step, backward_mask=backward_mask,
        backward_step=backward_step, is_terminal=lambda s: count(s) == num_words, log_reward=log_reward,
        num_actions=vocab * (2 if prepend else 1), num_backward_actions=2 if prepend else 1,
        max_steps=num_words, features=features, backward_action=backward_action, forward_action=forward_action,
        num_states=num_states if listable else None, all_states=all_states if listable else None,
        state_index=state_index if listable else None,
        name=f"bit_sequence(length={length}, word_size={word_size})",
    )

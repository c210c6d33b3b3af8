"""Bit sequences: rewards against brute-force Hamming distances, append/prepend transitions,
the mode construction, and the definition check of both variants."""

from itertools import product

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import probgen as pg


def test_log_reward_is_minus_beta_times_the_smallest_hamming_distance():
    modes = np.array([[0, 1, 1, 0, 1, 0], [1, 1, 1, 1, 1, 1], [0, 0, 0, 1, 1, 1]])
    env = pg.gfn.bit_sequence(jnp.asarray(modes), word_size=2, beta=0.7)
    strings = np.array(list(product([0, 1], repeat=6)))
    words = strings.reshape(-1, 3, 2) @ np.array([2, 1])          # most significant bit first
    got = np.asarray(jax.vmap(env.log_reward)({"words": jnp.asarray(words, jnp.int32)}))
    expected = -0.7 * (strings[:, None, :] != modes[None]).sum(-1).min(1)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert bool(jnp.all(jax.vmap(env.is_terminal)({"words": jnp.asarray(words, jnp.int32)})))


def test_append_and_prepend_build_the_sequence():
    env = pg.gfn.bit_sequence(jnp.zeros((1, 6), jnp.int32), word_size=2)
    state = env.initial_state
    for action in (2, 4 + 3, 1):          # append 10, prepend 11, append 01
        state = env.step(state, action)
    assert state["words"].tolist() == [3, 2, 1] and bool(env.is_terminal(state))
    assert not bool(env.forward_mask(state).any())
    # Backward: remove the last (0) or the first (1) word; the edge maps match.
    assert env.backward_step(state, 0)["words"].tolist() == [3, 2, -1]
    assert env.backward_step(state, 1)["words"].tolist() == [2, 1, -1]
    assert int(env.forward_action(state, 0)) == 1 and int(env.forward_action(state, 1)) == 4 + 3
    assert int(env.backward_action(env.initial_state, 5)) == 1
    for variant in (env, pg.gfn.bit_sequence(jnp.zeros((1, 4), jnp.int32), word_size=1, prepend=False)):
        pg.gfn.check_environment(variant)


def test_modes_are_distinct_concatenations_of_the_blocks():
    blocks = {"00000000", "11111111", "11110000", "00001111", "00111100"}
    modes = np.asarray(pg.gfn.bitseq_modes(0, 20, 24))
    assert modes.shape == (20, 24) and len({m.tobytes() for m in modes}) == 20
    for mode in modes:
        text = "".join(map(str, mode))
        assert {text[i:i + 8] for i in range(0, 24, 8)} <= blocks
    np.testing.assert_array_equal(pg.gfn.bitseq_modes(0, 20, 24), modes)    # seeded
    with pytest.raises(pg.SettingError, match="multiple of 8"):
        pg.gfn.bitseq_modes(0, 2, 12)
    with pytest.raises(pg.SettingError, match="distinct modes"):
        pg.gfn.bitseq_modes(0, 6, 8)


def test_bad_modes_and_sizes_are_refused():
    with pytest.raises(pg.SettingError, match="does not divide"):
        pg.gfn.bit_sequence(jnp.zeros((1, 6), jnp.int32), word_size=4)
    with pytest.raises(pg.ArgumentError, match="only 0 and 1"):
        pg.gfn.bit_sequence(jnp.full((1, 4), 2), word_size=2)
    with pytest.raises(pg.ArgumentError, match="num_modes, length"):
        pg.gfn.bit_sequence(jnp.zeros(4, jnp.int32))
    big = pg.gfn.bit_sequence(jnp.zeros((1, 120), jnp.int32), word_size=8)
    assert big.all_states is None and big.max_steps == 15     # too many states to list

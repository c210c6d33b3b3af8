"""Set generation: the Ising energy against a brute-force double sum, rewards, the size limit,
and the definition check."""

import jax.numpy as jnp
import numpy as np
import pytest

import probgen as pg


def test_ising_energy_is_the_pairwise_sum():
    rng = np.random.default_rng(0)
    j = rng.normal(size=(5, 5))
    j = (j + j.T) / 2
    np.fill_diagonal(j, 0.0)
    h = rng.normal(size=5)
    energy = pg.gfn.ising_energy(jnp.asarray(j), jnp.asarray(h))
    for x in rng.integers(0, 2, size=(8, 5)):
        s = 2 * x - 1
        pairs = sum(j[a, b] * s[a] * s[b] for a in range(5) for b in range(a + 1, 5))
        assert float(energy(jnp.asarray(x, jnp.float32))) == pytest.approx(-pairs - h @ s, rel=1e-5)
    with pytest.raises(pg.ArgumentError, match="square"):
        pg.gfn.ising_energy(jnp.zeros((2, 3)))
    with pytest.raises(pg.ArgumentError, match="field"):
        pg.gfn.ising_energy(jnp.zeros((2, 2)), jnp.zeros(3))


def test_sets_rewards_and_size_limit():
    energy = pg.gfn.ising_energy(jnp.ones((3, 3)) - jnp.eye(3))
    env = pg.gfn.set_generation(3, energy, max_size=2)
    pg.gfn.check_environment(env)
    state = env.step(env.step(env.initial_state, 2), 0)
    assert state["members"].tolist() == [True, False, True]
    assert env.forward_mask(state).tolist() == [False, False, False, True]     # full: only exit
    done = env.step(state, 3)
    assert bool(env.is_terminal(done)) and env.backward_mask(done).tolist() == [False, False, False, True]
    # spins (+1, -1, +1): E = -(s0 s1 + s0 s2 + s1 s2) = 1
    assert float(env.log_reward(done)) == pytest.approx(-1.0)
    with pytest.raises(pg.ArgumentError, match="max_size"):
        pg.gfn.set_generation(3, energy, max_size=4)
    assert pg.gfn.set_generation(21, lambda x: x.sum()).all_states is None

"""pg.particle_keys: the hash, the derivations, independence of particles and sites, errors."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import probgen as pg
from probgen.core.keys import STREAM_IMPL, is_particle_key, threefry2x32


def test_threefry_is_bit_exact():
    rng = np.random.default_rng(0)
    k0, k1, x0, x1 = (jnp.asarray(rng.integers(0, 2**32, size=1000, dtype=np.uint64), jnp.uint32) for _ in range(4))
    ours = threefry2x32(k0, k1, x0, x1)
    theirs = jax.extend.random.threefry2x32_p.bind(k0, k1, x0, x1)
    np.testing.assert_array_equal(ours[0], theirs[0])
    np.testing.assert_array_equal(ours[1], theirs[1])


def _stream(key, index):
    data = jnp.concatenate([jax.random.key_data(key), jnp.asarray([index], jnp.uint32)])
    return jax.random.wrap_key_data(data, impl=STREAM_IMPL)


def test_derivations_mirror_threefry_and_keep_the_index():
    key = jax.random.key(7)
    stream = _stream(key, 5)
    split = jax.random.key_data(jax.random.split(stream, 3))
    np.testing.assert_array_equal(split[:, :2], jax.random.key_data(jax.random.split(key, 3)))
    np.testing.assert_array_equal(split[:, 2], 5)
    folded = jax.random.key_data(jax.random.fold_in(stream, 11))
    np.testing.assert_array_equal(folded[:2], jax.random.key_data(jax.random.fold_in(key, 11)))
    assert int(folded[2]) == 5
    # Index 0 is the shared key's own stream (particle_keys never hands it out).
    for bits in (8, 16, 32, 64) if jax.config.jax_enable_x64 else (8, 16, 32):
        dtype = jnp.dtype(f"uint{bits}")
        np.testing.assert_array_equal(jax.random.bits(_stream(key, 0), (9,), dtype), jax.random.bits(key, (9,), dtype))
    assert not np.array_equal(jax.random.bits(stream, (9,)), jax.random.bits(key, (9,)))


def test_vmap_matches_one_particle_at_a_time_and_jit():
    keys = pg.particle_keys(jax.random.key(0), 6)
    assert keys.shape == (6,) and is_particle_key(keys)

    def draw(k):
        k1, k2 = jax.random.split(jax.random.fold_in(k, 3))
        return jax.random.normal(k1, (2,)) + jax.random.gamma(k2, 2.0)

    batched = jax.jit(jax.vmap(draw))(keys)
    one_by_one = np.stack([draw(keys[i]) for i in range(6)])
    np.testing.assert_allclose(batched, one_by_one, rtol=1e-6)
    np.testing.assert_allclose(batched, jax.vmap(draw)(pg.particle_keys(jax.random.key(0), 6)), rtol=1e-6)
    np.testing.assert_array_equal(batched, jax.jit(jax.vmap(draw))(pg.particle_keys(jax.random.key(0), 6)))


def _bits64(keys, sites):
    """64-bit words: particles x sites x 3 values, through fold_in, split and a nested scan."""

    def one(k):
        per_site = []
        for s in range(sites):
            ks = jax.random.fold_in(k, s)
            per_site.append(jax.random.bits(jax.random.split(ks, 2)[1], (3,), jnp.uint64))
        return jnp.stack(per_site)

    return jax.vmap(one)(keys)


@pytest.mark.skipif(not jax.config.jax_enable_x64, reason="64-bit words need jax_enable_x64")
def test_no_two_particles_or_sites_share_a_draw():
    key = jax.random.key(1)
    flat = _bits64(pg.particle_keys(key, 512), 4).ravel()
    nested = jax.vmap(lambda k: _bits64(pg.particle_keys(k, 16), 2))(pg.particle_keys(key, 32)).ravel()
    words = np.concatenate([np.asarray(flat), np.asarray(nested)])
    assert len(np.unique(words)) == words.size


def test_uint32_draws_do_not_repeat_beyond_chance():
    # 2**16 particles x 2 sites: under independence about n^2 / 2^33 = 2 repeated 32-bit words.
    keys = pg.particle_keys(jax.random.key(2), 2**16)
    words = jax.vmap(lambda k: jnp.stack([jax.random.bits(jax.random.fold_in(k, s)) for s in range(2)]))(keys)
    repeats = words.size - len(np.unique(np.asarray(words)))
    assert repeats <= 12  # Poisson(2): P(>12) < 1e-6


def _correlation_z(samples):
    """z-scores of the off-diagonal correlations of the columns of ``samples`` (R x m)."""
    r = samples.shape[0]
    c = np.corrcoef(samples, rowvar=False)
    return c[np.triu_indices_from(c, k=1)] * math.sqrt(r)


@pytest.mark.parametrize("nested", [False, True])
def test_particles_and_sites_are_uncorrelated(nested):
    """Over R independent seeds, every pair of (particle, site) normals has correlation ~ N(0, 1/R)."""
    replicates, particles, sites = 4000, 16, 4

    def one_seed(key):
        if nested:  # 4 outer particles x 4 inner ones (an SMC inside an IWAE sample)
            keys = jax.vmap(lambda k: pg.particle_keys(k, 4))(pg.particle_keys(key, 4)).reshape(-1)
        else:
            keys = pg.particle_keys(key, particles)
        return jax.vmap(lambda k: jnp.stack([jax.random.normal(jax.random.fold_in(k, s)) for s in range(sites)]))(keys)

    draws = jax.jit(jax.vmap(one_seed))(jax.random.split(jax.random.key(3), replicates))
    draws = np.asarray(draws).reshape(replicates, particles * sites)
    z = _correlation_z(draws)
    m = z.size
    # the mean of z^2 is 1 with standard error sqrt(2 / m); the largest |z| of m ~ N(0, 1)
    assert abs(np.mean(z**2) - 1) < 4 * math.sqrt(2 / m)
    assert np.max(np.abs(z)) < math.sqrt(2 * math.log(m)) + 1.5
    # marginals: standard normal
    assert abs(draws.mean()) < 4 / math.sqrt(draws.size)
    assert abs(draws.var() - 1) < 4 * math.sqrt(2 / draws.size)


def test_plate_members_draw_independently():
    @pg.gen
    def member(_):
        return pg.sample("x", pg.Normal(0.0, 1.0))

    plate = pg.vmap(member)
    xs = jax.vmap(lambda k: plate.simulate(k, jnp.zeros(8)).choices["x"])(jax.random.split(jax.random.key(4), 4000))
    z = _correlation_z(np.asarray(xs))
    assert np.max(np.abs(z)) < math.sqrt(2 * math.log(z.size)) + 1.5
    assert abs(np.mean(z**2) - 1) < 4 * math.sqrt(2 / z.size)


def test_same_key_same_particle_filter():
    @pg.gen
    def step(z, _):
        z = pg.sample("z", pg.Normal(0.9 * z, 1.0))
        pg.sample("y", pg.Normal(z, 0.5))
        return z, None

    model = pg.scan(step, length=5)
    ys = {"y": jnp.linspace(-1.0, 1.0, 5)}
    a = pg.mc.smc(jax.random.key(0), model, ys, 0.0, num_particles=64)
    b = pg.mc.smc(jax.random.key(0), model, ys, 0.0, num_particles=64)
    c = pg.mc.smc(jax.random.key(1), model, ys, 0.0, num_particles=64)
    np.testing.assert_array_equal(a.log_evidence, b.log_evidence)
    assert a.log_evidence != c.log_evidence
    # no two particles share a proposal draw at the first step (before any resampling)
    first = np.asarray(a.states.choices["z"][0])
    assert len(np.unique(first)) == first.size


def test_other_key_implementations_and_bad_keys():
    rbg = pg.particle_keys(jax.random.key(0, impl="unsafe_rbg"), 3)
    assert str(jax.random.key_impl(rbg)) == "unsafe_rbg" and rbg.shape == (3,)
    raw = pg.particle_keys(jax.random.PRNGKey(0), 3)
    np.testing.assert_array_equal(jax.random.key_data(raw), jax.random.key_data(pg.particle_keys(jax.random.key(0), 3)))
    with pytest.raises(pg.ArgumentError, match="one key"):
        pg.particle_keys(jax.random.split(jax.random.key(0), 2), 3)
    with pytest.raises(pg.SettingError, match="n must be"):
        pg.particle_keys(jax.random.key(0), 0)
    with pytest.raises(pg.ArgumentError, match="PRNG key"):
        pg.particle_keys(jnp.zeros(3), 2)


def test_models_draw_what_plain_threefry_keys_draw():
    # the interpreter hashes with its unrolled threefry (stream_key): the draws are those of
    # the user's threefry key, site key fold_in(key, site number), bit for bit
    @pg.gen
    def model():
        a = pg.sample("a", pg.Normal(0.0, 1.0))
        b = pg.sample("b", pg.Gamma(2.0, 1.0))
        return a + b

    key = jax.random.key(11)
    trace = model.simulate(key)
    np.testing.assert_array_equal(trace["a"], jax.random.normal(jax.random.fold_in(key, 1)))
    np.testing.assert_array_equal(trace["b"], pg.Gamma(2.0, 1.0).sample(jax.random.fold_in(key, 2)))


def test_poisson_sites_take_particle_keys():
    # jax.random.poisson accepts threefry keys only; particle keys fall back to the plain
    # threefry key their stream stands for, still one stream per particle
    @pg.gen
    def counts(rate):
        return pg.sample("n", pg.Poisson(rate))

    draws = jax.jit(jax.vmap(lambda k: counts.simulate(k, 3.0)["n"]))(pg.particle_keys(jax.random.key(5), 4000))
    draws = np.asarray(draws, float)
    assert abs(draws.mean() - 3.0) < 4 * math.sqrt(3.0 / draws.size)
    assert abs(draws.var() - 3.0) < 0.3
    plain = counts.simulate(jax.random.key(6), 3.0)["n"]
    assert int(plain) == int(counts.simulate(pg.core.keys.stream_key(jax.random.key(6)), 3.0)["n"])

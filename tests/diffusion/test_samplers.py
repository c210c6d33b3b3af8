import functools
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import probgen as pg
from probgen.diffusion.samplers import SamplerState

D = pg.diffusion
TARGET = D.gaussian_mixture([0.35, 0.65], [[-1.5, 0.5], [1.5, -0.5]],
                            [[[0.3, 0.1], [0.1, 0.2]], [[0.25, -0.05], [-0.05, 0.4]]])
NUM_PARTICLES = 2000

CASES = [
    ("vp", "euler_maruyama", 200, {}),
    ("vp", "predictor_corrector", 150, {"snr": 0.1}),
    ("vp", "ddpm", 200, {}),
    ("vp", "ddim", 100, {"eta": 0.0}),
    ("vp", "ddim", 150, {"eta": 0.5}),
    ("vp", "probability_flow", 200, {"method": "euler"}),
    ("vp", "probability_flow", 60, {"method": "heun"}),
    ("subvp", "euler_maruyama", 200, {}),
    ("vp_cosine", "ddpm", 150, {}),
    ("ve", "euler_maruyama", 300, {}),
    ("ve", "ddim", 100, {}),
]
SDES = {"vp": D.vp(), "vp_cosine": D.vp_cosine(), "ve": D.ve(sigma_max=20.0), "subvp": D.subvp()}


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _draw(key, sde_name, sampler, num_steps, options):
    sde = SDES[sde_name]
    return D.sample(key, sde, D.gmm_score(TARGET, sde), (NUM_PARTICLES, 2), sampler, num_steps, **dict(options))


@pytest.mark.parametrize("sde_name,sampler,num_steps,options", CASES,
                         ids=[f"{c[0]}-{c[1]}-{c[3]}" for c in CASES])
def test_sampler_matches_target(sde_name, sampler, num_steps, options, check):
    # A fixed seed per case: Python's str hash is salted per process, crc32 is not.
    key = jax.random.key(zlib.crc32(f"{sde_name}-{sampler}-{num_steps}".encode()) % 1000)
    x = _draw(key, sde_name, sampler, num_steps, tuple(options.items()))
    check(x, TARGET, key)


def test_wrong_score_is_detected(check):
    """The same checks reject a sampler run with a subtly wrong score (a test that can fail)."""
    sde = SDES["vp"]
    wrong = D.gaussian_mixture([0.5, 0.5], TARGET.means, TARGET.covs)
    x = jax.jit(lambda k: D.sample(k, sde, D.gmm_score(wrong, sde), (NUM_PARTICLES, 2), "ddim", 100))(
        jax.random.key(3))
    with pytest.raises(AssertionError):
        check(x, TARGET, jax.random.key(3))


def test_ddim_eta_one_equals_ddpm_in_distribution_and_formula():
    """DDIM with eta = 1 and DDPM ancestral take the same Gaussian step."""
    sde = SDES["vp"]
    score = D.gmm_score(TARGET, sde)
    x = TARGET.noised(sde, 0.5).sample(jax.random.key(0), 5)
    state = SamplerState(x, jnp.array(3, jnp.int32))
    k1 = D.ddim(sde, score, 10, eta=1.0)
    k2 = D.ddpm(sde, score, 10)
    # Same key -> same normal draw -> same step when the two updates agree.
    a, _ = jax.jit(k1.step)(jax.random.key(1), state)
    b, _ = jax.jit(k2.step)(jax.random.key(1), state)
    np.testing.assert_allclose(a.x, b.x, rtol=1e-4, atol=1e-5)


def test_keep_last_does_not_store_the_trajectory():
    """1,000 steps with keep='last': outputs carry no step axis and compiled memory stays O(1)."""
    sde = SDES["vp"]
    kernel = D.euler_maruyama(sde, D.gmm_score(TARGET, sde), 1000)
    state = kernel.init(jnp.zeros((1000, 2)))
    sizes = {}
    for keep in ("last", "all"):
        fn = jax.jit(lambda k, s, keep=keep: pg.run(kernel, k, s, 1000, keep=keep))
        out_shapes = jax.eval_shape(fn, jax.random.key(0), state)
        mem = fn.lower(jax.random.key(0), state).compile().memory_analysis()
        sizes[keep] = (out_shapes, mem.temp_size_in_bytes + mem.output_size_in_bytes)
    trajectory_bytes = 1000 * 1000 * 2 * 4
    final, info = sizes["last"][0]
    assert final.x.shape == (1000, 2) and info.time.shape == ()
    assert sizes["last"][1] < trajectory_bytes / 20
    assert sizes["all"][1] >= trajectory_bytes  # the check itself can tell the difference


def test_kernels_vmap_over_independent_runs():
    sde = SDES["vp"]
    kernel = D.ddim(sde, D.gmm_score(TARGET, sde), 20)
    x_T = jax.random.normal(jax.random.key(0), (3, 16, 2))
    run = jax.jit(jax.vmap(lambda k, x: pg.run(kernel, k, kernel.init(x), 20)[0].x))
    out = run(jax.random.split(jax.random.key(1), 3), x_T)
    single = pg.run(kernel, jax.random.key(9), kernel.init(x_T[1]), 20)[0].x
    np.testing.assert_allclose(out[1], single, rtol=1e-4, atol=1e-4)


def test_bad_inputs_raise_clear_errors():
    sde = SDES["vp"]
    with pytest.raises(ValueError, match="num_steps"):
        D.euler_maruyama(sde, lambda x, t: -x, 0)
    with pytest.raises(ValueError, match="t_min"):
        D.ddim(sde, lambda x, t: -x, 10, t_min=2.0)
    with pytest.raises(ValueError, match="eta"):
        D.ddim(sde, lambda x, t: -x, 10, eta=2.0)
    with pytest.raises(ValueError, match="num_particles"):
        D.ddpm(sde, lambda x, t: -x, 10).init(jnp.zeros(5))
    with pytest.raises(ValueError, match="unknown sampler"):
        D.sample(jax.random.key(0), sde, lambda x, t: -x, (4, 1), "rk4")
    with pytest.raises(TypeError, match="SDE"):
        D.euler_maruyama("vp", lambda x, t: -x, 10)


def test_score_with_wrong_shape_is_reported_at_trace_time():
    sde = SDES["vp"]
    kernel = D.euler_maruyama(sde, lambda x, t: x[:, :1], 10)
    with pytest.raises(ValueError, match="euler_maruyama: score_fn"):
        jax.eval_shape(lambda s: pg.run(kernel, jax.random.key(0), s, 10), kernel.init(jnp.zeros((4, 2))))

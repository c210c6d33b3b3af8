import functools
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import probgen as pg

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
    ("vp", "probability_flow", 30, {"method": "rk4"}),
    ("subvp", "euler_maruyama", 200, {}),
    ("vp_cosine", "ddpm", 150, {}),
    ("ve", "euler_maruyama", 300, {}),
    ("ve", "ddim", 100, {}),
]
SDES = {"vp": D.vp(), "vp_cosine": D.vp_cosine(), "ve": D.ve(sigma_max=20.0), "subvp": D.subvp()}


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _draw(key, sde_name, sampler, num_steps, options):
    sde = SDES[sde_name]
    return D.reverse_sample(key, sde, D.gmm_score(TARGET, sde), (NUM_PARTICLES, 2), sampler, num_steps, **dict(options))


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
    x = jax.jit(lambda k: D.reverse_sample(k, sde, D.gmm_score(wrong, sde), (NUM_PARTICLES, 2), "ddim", 100))(
        jax.random.key(3))
    with pytest.raises(AssertionError):
        check(x, TARGET, jax.random.key(3))


def test_ddim_eta_one_equals_ddpm_in_distribution_and_formula():
    """DDIM with eta = 1 and DDPM ancestral take the same Gaussian step."""
    sde = SDES["vp"]
    score = D.gmm_score(TARGET, sde)
    x = TARGET.noised(sde, 0.5).sample(jax.random.key(0), 5)
    state = pg.dynamics.IntegratorState(x, D.time_grid(sde, 10)(3), jnp.array(3, jnp.int32))
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
        D.reverse_sample(jax.random.key(0), sde, lambda x, t: -x, (4, 1), "rk4")
    with pytest.raises(TypeError, match="SDE"):
        D.euler_maruyama("vp", lambda x, t: -x, 10)


def test_score_with_wrong_shape_is_reported_at_trace_time():
    sde = SDES["vp"]
    kernel = D.euler_maruyama(sde, lambda x, t: x[:, :1], 10)
    with pytest.raises(ValueError, match="euler_maruyama: score_fn"):
        jax.eval_shape(lambda s: pg.run(kernel, jax.random.key(0), s, 10), kernel.init(jnp.zeros((4, 2))))


# ---- fixed horizon (no silent extrapolation past t_min) and float64 -------------------------

def _fkc(sde, score, num_steps):
    return D.feynman_kac(sde, [score], [1.0], num_steps)


def _likelihood(sde, score, num_steps):
    return D.likelihood_kernel(sde, score, num_steps)


FIXED_HORIZON = {
    "euler_maruyama": D.euler_maruyama,
    "predictor_corrector": D.predictor_corrector,
    "ddpm": D.ddpm,
    "ddim": D.ddim,
    "probability_flow": D.probability_flow,
    "feynman_kac": _fkc,
    "likelihood": _likelihood,
}


@pytest.mark.parametrize("name", list(FIXED_HORIZON))
def test_running_a_sampler_past_its_num_steps_is_refused(name):
    """Regression: a 50-step sampler run 60 steps walked to t = -0.2 (NaN for VP) silently."""
    sde = SDES["vp"]
    kernel = FIXED_HORIZON[name](sde, D.gmm_score(TARGET, sde), 50)
    assert kernel.horizon == 50
    state = kernel.init(TARGET.sample(jax.random.key(0), 8))
    # (a) at trace time: pg.run knows num_steps statically
    with pytest.raises(pg.SettingError, match="num_steps=60 exceeds the kernel's horizon of 50"):
        pg.run(kernel, jax.random.key(1), state, 60)
    # (b) at run time under pg.validate: resuming a finished run for one more step
    checked = pg.validate(lambda s, k: pg.run(kernel, k, s, 50))
    final, _ = checked(state, jax.random.key(1))  # exactly the horizon: fine
    assert np.all(np.isfinite(np.asarray(final.x)))
    with pytest.raises(pg.ValidationError, match=f"{name}: step index 50 is past the kernel's horizon of 50"):
        pg.validate(lambda s, k: pg.run(kernel, k, s, 1))(final, jax.random.key(2))


def test_extrapolation_is_what_the_horizon_prevents():
    """What the unchecked program does one step past t_min: the time leaves [t_min, t_max]."""
    sde = SDES["vp"]
    kernel = D.euler_maruyama(sde, D.gmm_score(TARGET, sde), 50, t_min=0.0)
    final, _ = pg.run(kernel, jax.random.key(1), kernel.init(jnp.zeros((4, 2))), 50)
    _, info = pg.run(kernel, jax.random.key(2), final, 10)  # unchecked resume: no validate
    assert float(info.time) < 0.0  # t = -0.2, outside the SDE's domain


@pytest.mark.parametrize("name", list(FIXED_HORIZON))
def test_float64_runs_keep_float64_and_end_exactly_at_t_min(name):
    with jax.enable_x64(True):
        sde = SDES["vp"]
        target = D.gaussian_mixture(np.asarray([0.4, 0.6]), np.asarray([[-1.0, 0.5], [1.0, -0.5]]), 0.5)
        assert target.means.dtype == jnp.float64
        kernel = FIXED_HORIZON[name](sde, D.gmm_score(target, sde), 333)
        x = target.sample(jax.random.key(0), 16)
        assert x.dtype == jnp.float64
        final, (states, infos) = jax.jit(lambda s, k: pg.run(kernel, k, s, 333, keep="all"))(
            kernel.init(x), jax.random.key(1))
        for leaf in jax.tree.leaves((final, infos)):
            if jnp.issubdtype(leaf.dtype, jnp.floating):
                assert leaf.dtype == jnp.float64, (name, leaf.dtype)
        times = infos.time if hasattr(infos, "time") else None
        if times is not None:
            end = sde.t_max if name == "likelihood" else 1e-3
            assert times.dtype == jnp.float64 and float(times[-1]) == end
            # every grid time is within a few ulps of t_max + i (t_min - t_max) / n
            i = np.arange(1, 334)
            exact = sde.t_max + i * (1e-3 - sde.t_max) / 333 if name != "likelihood" else 1e-3 + i * (
                sde.t_max - 1e-3) / 333
            np.testing.assert_allclose(np.asarray(times), exact, rtol=0, atol=4e-16)
        # a float32 run under x64 stays float32 (the caller's dtype, not the default float)
        final32, info32 = pg.run(kernel, jax.random.key(1), kernel.init(x.astype(jnp.float32)), 333)
        assert final32.x.dtype == jnp.float32
        if hasattr(info32, "time"):
            assert info32.time.dtype == jnp.float32


def test_float64_ddim_matches_its_recursion_to_float64_precision():
    """float64 DDIM (eta = 0) on a Gaussian target against the same recursion in NumPy float64.

    For p_0 = N(0, s0^2), p_t = N(0, v_t) with v_t = alpha_t^2 s0^2 + sigma_t^2 and each DDIM
    step multiplies x by (alpha_s alpha_t s0^2 + sigma_s sigma_t) / v_t. Any float32 on the way
    (the mixture's parameters, the time grid) shows up as a relative error near 1e-7.
    """
    num_steps, t_min, s0 = 1000, 1e-3, 0.7
    with jax.enable_x64(True):
        sde = SDES["vp"]
        gmm = D.gaussian_mixture([1.0], [[0.0]], s0)  # Python lists: the default float, float64 here
        kernel = D.ddim(sde, D.gmm_score(gmm, sde), num_steps, t_min=t_min)
        x_T = jnp.linspace(-2.0, 2.0, 5, dtype=jnp.float64)[:, None]
        final, _ = pg.run(kernel, jax.random.key(0), kernel.init(x_T), num_steps)
    beta_min, beta_max = 0.1, 20.0  # vp() defaults
    times = 1.0 + np.arange(num_steps + 1) * (t_min - 1.0) / num_steps
    integral = beta_min * times + 0.5 * (beta_max - beta_min) * times**2
    alpha, sigma = np.exp(-0.5 * integral), np.sqrt(-np.expm1(-integral))
    v = alpha**2 * s0**2 + sigma**2
    factor = np.prod((alpha[1:] * alpha[:-1] * s0**2 + sigma[1:] * sigma[:-1]) / v[:-1])
    assert final.x.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(final.x), np.asarray(x_T) * factor, rtol=1e-11)

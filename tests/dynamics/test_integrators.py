"""Integrator kernels: CNF log-density of a linear flow, fixed horizon, float64 end points."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
import scipy.stats

import probgen as pg

A = np.array([[-0.4, 0.9], [0.2, 0.3]])


def _linear(t, x):
    return jnp.asarray(A, x.dtype) @ x


def _base_log_prob(z):
    return jax.scipy.stats.norm.logpdf(z).sum()


@pytest.mark.parametrize("method", ["heun", "rk4"])
def test_cnf_log_prob_of_a_linear_flow_is_the_gaussian_density(method):
    """dx/dt = A x from z ~ N(0, I) at t = 0: x(1) = e^A z ~ N(0, e^A e^{A^T})."""
    cov = scipy.linalg.expm(A) @ scipy.linalg.expm(A).T
    pts = jax.random.normal(jax.random.key(0), (6, 2)) * 1.5
    exact = scipy.stats.multivariate_normal(np.zeros(2), cov).logpdf(np.asarray(pts))
    lp = jax.jit(jax.vmap(lambda x: pg.dynamics.cnf_log_prob(_linear, x, _base_log_prob, 40, method)))(pts)
    # global error O(h^2) for Heun (h = 1/40), O(h^4) for RK4 (then float32 rounding)
    np.testing.assert_allclose(lp, exact, rtol=1e-4 if method == "heun" else 1e-5, atol=1e-5)
    # Hutchinson: z^T A z varies with the probe (A is not diagonal); its mean is the same.
    hutch = jax.jit(jax.vmap(lambda k: pg.dynamics.cnf_log_prob(_linear, pts[0], _base_log_prob, 40, method,
                                                                "hutchinson", k, num_probes=2)))(
        jax.random.split(jax.random.key(1), 2000))
    se = float(hutch.std()) / np.sqrt(hutch.size)
    assert abs(float(hutch.mean()) - float(lp[0])) < 4 * se + 1e-6


def test_batched_cnf_equals_the_vmapped_point_cnf():
    """One batched kernel (rows independent) gives each point's result."""
    pts = jax.random.normal(jax.random.key(2), (5, 2))
    batched = pg.dynamics.cnf_integrator(lambda t, x: x @ jnp.asarray(A, x.dtype).T + jnp.sin(x), num_steps=30,
                                         batched=True)
    single = pg.dynamics.cnf_integrator(lambda t, x: jnp.asarray(A, x.dtype) @ x + jnp.sin(x), num_steps=30)
    fb, _ = pg.run(batched, jax.random.key(0), batched.init(pts), 30)
    fs = jax.vmap(lambda x: pg.run(single, jax.random.key(0), single.init(x), 30)[0])(pts)
    assert fb.delta_log_prob.shape == (5,)
    np.testing.assert_allclose(fb.x, fs.x, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fb.delta_log_prob, fs.delta_log_prob, rtol=1e-5, atol=1e-6)
    with pytest.raises(pg.SettingError, match="num_points"):
        batched.init(jnp.zeros(3))


def test_grid_kernel_walks_the_grid_from_the_step_index():
    kernel = pg.dynamics.grid_kernel(lambda key, x, t, s, i: x + (s - t), 1.0, 0.0, 8, name="walk")
    final, (states, infos) = pg.run(kernel, jax.random.key(0), kernel.init(jnp.zeros(())), 8, keep="all")
    np.testing.assert_allclose(infos.time, 1.0 - np.arange(1, 9) / 8, atol=1e-7)
    assert float(final.t) == 0.0 and int(final.step) == 8 and abs(float(final.x) + 1.0) < 1e-6
    assert kernel.init(jnp.zeros((), jnp.int32)).x.dtype == jnp.result_type(float)  # integer points become float


# ---- fixed horizon and float64 -----------------------------------------------------------------

KERNELS = {
    "ode_integrator": (lambda n: pg.dynamics.ode_integrator(lambda t, x: -x, num_steps=n), 1.0),
    "sde_integrator": (lambda n: pg.dynamics.sde_integrator(lambda t, x: -0.5 * x, 1.0, num_steps=n), 1.0),
    "cnf_integrator": (lambda n: pg.dynamics.cnf_integrator(lambda t, x: -x, num_steps=n), 0.0),
    "grid_kernel": (lambda n: pg.dynamics.grid_kernel(lambda k, x, t, s, i: x, 0.0, 1.0, n), 1.0),
}


@pytest.mark.parametrize("name", list(KERNELS))
def test_integrators_refuse_to_run_past_their_horizon(name):
    build, end = KERNELS[name]
    kernel = build(50)
    assert kernel.horizon == 50
    with pytest.raises(pg.SettingError, match="num_steps=60 exceeds the kernel's horizon of 50"):
        pg.run(kernel, jax.random.key(0), kernel.init(jnp.ones(2)), 60)
    final, _ = pg.validate(lambda s, k: pg.run(kernel, k, s, 50))(kernel.init(jnp.ones(2)), jax.random.key(0))
    assert float(final.t) == end  # the end of the grid, exactly
    with pytest.raises(pg.ValidationError, match=f"{name}: step index 50 is past the kernel's horizon of 50"):
        pg.validate(lambda s, k: pg.run(kernel, k, s, 1))(final, jax.random.key(1))


@pytest.mark.parametrize("t0,t1", [(0.0, 1.0), (1.0, 0.0)])
def test_float64_ode_keeps_its_dtype_and_float64_accuracy(t0, t1):
    """RK4 on dx/dt = cos(t): error ~ h^4 ~ 1e-12 at 1,000 steps, if time is not rounded to float32."""
    with jax.enable_x64(True):
        kernel = pg.dynamics.ode_integrator(lambda t, x: jnp.cos(t) * jnp.ones_like(x), t0, t1, 1000, "rk4")
        final, (states, _) = jax.jit(lambda s: pg.run(kernel, jax.random.key(0), s, 1000, keep="all"))(
            kernel.init(jnp.zeros(1, jnp.float64)))
        assert final.x.dtype == final.t.dtype == states.t.dtype == jnp.float64
        assert float(final.t) == t1
        assert abs(float(final.x[0]) - (np.sin(t1) - np.sin(t0))) < 1e-12
        # ...and a float32 point stays float32 under x64 (time in float32 too)
        final32, _ = pg.run(kernel, jax.random.key(0), kernel.init(jnp.zeros(1, jnp.float32)), 1000)
        assert final32.x.dtype == final32.t.dtype == jnp.float32 and float(final32.t) == t1


def test_float64_sde_and_cnf_keep_float64():
    with jax.enable_x64(True):
        x = jnp.ones(2, jnp.float64)
        sde = pg.dynamics.sde_integrator(lambda t, x: -0.5 * x, 1.0, num_steps=300)
        final, info = pg.run(sde, jax.random.key(0), sde.init(x), 300)
        assert final.x.dtype == final.t.dtype == info.time.dtype == jnp.float64 and float(final.t) == 1.0
        cnf = pg.dynamics.cnf_integrator(lambda t, x: -x, num_steps=300)
        final, _ = pg.run(cnf, jax.random.key(0), cnf.init(x), 300)
        assert final.x.dtype == final.delta_log_prob.dtype == final.t.dtype == jnp.float64
        assert float(final.t) == 0.0
        assert abs(float(final.delta_log_prob) - 2.0) < 1e-12  # -int_1^0 div(-x) dt = dim, exactly linear
        lp = pg.dynamics.cnf_log_prob(_linear, x, _base_log_prob, 200, "rk4")
        cov = scipy.linalg.expm(A) @ scipy.linalg.expm(A).T
        assert lp.dtype == jnp.float64
        assert abs(float(lp) - scipy.stats.multivariate_normal(np.zeros(2), cov).logpdf(np.ones(2))) < 1e-9


def test_cnf_settings_are_checked():
    with pytest.raises(pg.SettingError, match="cnf_integrator: divergence must be one of"):
        pg.dynamics.cnf_integrator(lambda t, x: x, divergence="trace")
    with pytest.raises(pg.SettingError, match="cnf_integrator: method"):
        pg.dynamics.cnf_integrator(lambda t, x: x, method="rk45")
    with pytest.raises(pg.SettingError, match="cnf_log_prob: divergence='hutchinson' needs a key"):
        pg.dynamics.cnf_log_prob(lambda t, x: x, jnp.ones(2), _base_log_prob, divergence="hutchinson")
    with pytest.raises(pg.SettingError, match="num_steps"):
        pg.dynamics.sde_integrator(lambda t, x: x, num_steps=0)

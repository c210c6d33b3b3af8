"""The kernel protocol and its scan driver."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import probgen as pg
from probgen.kernels import check_horizon, grid_time


def ar1(rho):
    def step(key, x):
        x = rho * x + jax.random.normal(key, (), jnp.result_type(x))  # keeps the state's dtype
        return x, {"x": x}

    return pg.Kernel(init=jnp.asarray, step=step)


def test_run_all_matches_manual_loop():
    kernel = ar1(0.5)
    key = jax.random.key(0)
    final, (states, infos) = jax.jit(lambda k: pg.run(kernel, k, kernel.init(1.0), 7, keep="all"))(key)
    x = 1.0
    for t in range(7):  # the documented key schedule: step i uses fold_in(key, i)
        x, _ = kernel.step(jax.random.fold_in(key, t), x)
        assert float(states[t]) == pytest.approx(float(x), rel=1e-6)
    assert float(final) == pytest.approx(float(x), rel=1e-6)
    assert np.allclose(infos["x"], states)


def test_run_last_equals_all_final_and_stores_nothing_per_step():
    kernel = ar1(0.9)
    key = jax.random.key(1)
    final_all, (states, _) = pg.run(kernel, key, kernel.init(0.0), 50, keep="all")
    final_last, last_info = pg.run(kernel, key, kernel.init(0.0), 50, keep="last")
    assert float(final_all) == float(final_last) == float(last_info["x"])
    out = jax.eval_shape(lambda k: pg.run(kernel, k, kernel.init(0.0), 1000, keep="last"), key)
    assert all(leaf.shape == () for leaf in jax.tree.leaves(out))


def test_stationary_variance_of_ar1():
    # AR(1) with rho=0.5 has stationary variance 1 / (1 - rho^2); vmap over chains.
    kernel = ar1(0.5)
    keys = jax.random.split(jax.random.key(2), 4000)
    finals, _ = jax.vmap(lambda k: pg.run(kernel, k, kernel.init(0.0), 30))(keys)
    var = float(jnp.var(finals))
    target = 1 / (1 - 0.25)
    # se of a sample variance of a Gaussian: var * sqrt(2 / n)
    assert abs(var - target) < 4 * target * np.sqrt(2 / 4000)


def test_bad_arguments():
    kernel = ar1(0.5)
    for bad in (0, 2.0, True, jnp.int32(3)):
        with pytest.raises(pg.SettingError, match="run: num_steps"):
            pg.run(kernel, jax.random.key(0), 0.0, bad)
    with pytest.raises(pg.SettingError, match="keep"):
        pg.run(kernel, jax.random.key(0), 0.0, 3, keep="every")
    final, _ = pg.run(kernel, jax.random.key(0), jnp.float32(0.0), np.int64(3))  # NumPy ints are counts
    assert final.shape == ()


def _shapes_in(jaxpr):
    """Every array shape appearing in a jaxpr, its sub-jaxprs (the scan body) included."""
    shapes = [v.aval.shape for v in list(jaxpr.invars) + list(jaxpr.constvars) if hasattr(v.aval, "shape")]
    for eqn in jaxpr.eqns:
        shapes += [v.aval.shape for v in list(eqn.invars) + list(eqn.outvars) if hasattr(v.aval, "shape")]
        for param in eqn.params.values():
            for sub in param if isinstance(param, (list, tuple)) else [param]:
                inner = getattr(sub, "jaxpr", sub)
                if isinstance(inner, jax.extend.core.Jaxpr):
                    shapes += _shapes_in(inner)
    return shapes


def test_keep_last_builds_no_per_step_key_array():
    """Regression: run used to materialise split(key, num_steps), 8-16 bytes per step."""
    kernel = ar1(0.5)
    num_steps = 12345  # a size no other array in the program has
    jaxpr = jax.make_jaxpr(lambda k: pg.run(kernel, k, jnp.float32(0.0), num_steps))(jax.random.key(0))
    shapes = _shapes_in(jaxpr.jaxpr)
    assert shapes, "the walker found no arrays"
    assert not [s for s in shapes if num_steps in s], [s for s in shapes if num_steps in s]
    # ...while keep="all" does hold the (num_steps,) trajectory: the walker can tell.
    jaxpr_all = jax.make_jaxpr(lambda k: pg.run(kernel, k, jnp.float32(0.0), num_steps, keep="all"))(
        jax.random.key(0))
    assert (num_steps,) in _shapes_in(jaxpr_all.jaxpr)


def test_same_key_same_answer_for_every_keep_and_prefix():
    kernel = ar1(0.7)
    key = jax.random.key(5)
    final_last, info_last = pg.run(kernel, key, jnp.float32(0.3), 40)
    final_all, (states, infos) = pg.run(kernel, key, jnp.float32(0.3), 40, keep="all")
    assert float(final_last) == float(final_all) == float(states[-1]) == float(info_last["x"])
    # the first 25 steps of a 40-step run are the 25-step run
    assert float(pg.run(kernel, key, jnp.float32(0.3), 25)[0]) == float(states[24])
    # and under vmap over keys, each member equals its own unbatched run
    keys = jax.random.split(key, 3)
    batched, _ = jax.vmap(lambda k: pg.run(kernel, k, jnp.float32(0.3), 40))(keys)
    assert float(batched[2]) == float(pg.run(kernel, keys[2], jnp.float32(0.3), 40)[0])


def counter(horizon):
    """A fixed-horizon kernel: its state is the step index, checked against the horizon."""

    def step(key, index):
        check_horizon(index, horizon, "counter")
        return index + 1, index

    return pg.Kernel(init=lambda start: jnp.asarray(start, jnp.int32), step=step, horizon=horizon)


def test_kernel_without_horizon_is_backward_compatible():
    kernel = pg.Kernel(jnp.asarray, lambda k, x: (x + 1.0, x))
    assert kernel.horizon is None and len(kernel) == 3
    assert float(pg.run(kernel, jax.random.key(0), kernel.init(0.0), 10_000)[0]) == 10_000.0


def test_run_refuses_to_drive_a_kernel_past_its_horizon():
    kernel = counter(5)
    final, _ = pg.run(kernel, jax.random.key(0), kernel.init(0), 5)
    assert int(final) == 5
    with pytest.raises(pg.SettingError, match=r"num_steps=6 exceeds the kernel's horizon of 5"):
        pg.run(kernel, jax.random.key(0), kernel.init(0), 6)
    with pytest.raises(pg.SettingError, match="horizon"):
        jax.jit(lambda s: pg.run(kernel, jax.random.key(0), s, 6, keep="all"))(kernel.init(0))


def test_validate_catches_a_resumed_run_past_the_horizon():
    kernel = counter(5)
    checked = pg.validate(lambda s, key: pg.run(kernel, key, s, 3)[0])
    assert int(checked(jnp.int32(2), jax.random.key(0))) == 5  # steps 2, 3, 4: inside
    with pytest.raises(pg.ValidationError, match="counter: step index 5 is past the kernel's horizon of 5"):
        checked(jnp.int32(3), jax.random.key(0))
    # without validate the same program runs unchecked
    assert int(pg.run(kernel, jax.random.key(0), jnp.int32(3), 3)[0]) == 6


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_grid_time_is_exact_at_both_ends_and_accurate_inside(dtype):
    with jax.enable_x64(True):
        for n in (1, 3, 7, 50, 333, 1000, 4097):
            steps = jnp.arange(n + 1)
            times = jax.jit(lambda i, n=n: grid_time(i, n, 1.0, 1e-3, dtype))(steps)
            assert times.dtype == dtype
            assert float(times[0]) == 1.0 and float(times[-1]) == float(np.asarray(1e-3, dtype))
            exact = 1.0 + np.arange(n + 1) * (1e-3 - 1.0) / n  # float64 reference
            ulp = float(np.finfo(dtype).eps)
            np.testing.assert_allclose(np.asarray(times, np.float64), exact, rtol=0, atol=4 * ulp)


# --- one kernel shape: typed init / step, the same Info names for the same quantity ---

def test_kernel_is_typed_by_the_init_and_step_protocols():
    import typing

    import probgen.kernels as kernels

    hints = typing.get_type_hints(pg.Kernel)
    assert hints["init"] is kernels.InitFn and hints["step"] is kernels.StepFn
    assert {"InitFn", "StepFn", "Kernel", "run"} <= set(kernels.__all__)
    assert all(hasattr(kernels, name) for name in kernels.__all__)


@pg.gen
def _normal_model():
    z = pg.sample("z", pg.Normal(0.0, 1.0))
    pg.sample("x", pg.Normal(z, 1.0))


@pg.gen
def _lg_step(z, _):
    z = pg.sample("z", pg.Normal(0.9 * z, 1.0))
    pg.sample("y", pg.Normal(z, 0.5))
    return z, None


def _mc_kernels():
    """Every mc kernel, with the starting point its init takes first."""
    trace, _ = _normal_model.generate(jax.random.key(0), {"x": 0.5})
    prior = jax.vmap(_normal_model.simulate)(jax.random.split(jax.random.key(1), 16)).choices
    mh = pg.mc.mh(pg.select("z"))
    return {
        "mh": (mh, trace),
        "mala": (pg.mc.mala(pg.select("z"), 0.1), trace),
        "hmc": (pg.mc.hmc(pg.select("z"), 0.1, 3), trace),
        "regenerate": (pg.mc.regenerate(pg.select("z")), trace),
        "particle_filter": (pg.mc.particle_filter(pg.scan(_lg_step, length=3), {"y": jnp.zeros(3)}, num_particles=16,
                                                  rejuvenation=mh), 0.0),
        "tempered_smc": (pg.mc.tempered_smc_kernel(_normal_model, {"x": 0.5}, num_particles=16), prior),
    }


@pytest.mark.parametrize("name", ["mh", "mala", "hmc", "regenerate", "particle_filter", "tempered_smc"])
def test_every_mc_kernel_starts_from_its_position_and_reports_acceptance_rate(name):
    kernel, start = _mc_kernels()[name]
    assert isinstance(kernel, pg.Kernel)
    state = kernel.init(start)  # one pattern: init(position_or_particles)
    final, info = jax.jit(lambda k, s: pg.run(kernel, k, s, 2))(jax.random.key(2), state)
    assert isinstance(info, tuple) and hasattr(info, "_fields")  # a NamedTuple
    assert "acceptance_rate" in info._fields
    assert 0.0 <= float(info.acceptance_rate) <= 1.0
    assert jax.tree.structure(final) == jax.tree.structure(state)


def test_run_keeps_a_function_of_the_state():
    # A state that carries a large constant (observed data) next to the position: keep
    # stores only what it returns, and it equals the same part of keep="all".
    data = jnp.arange(1000.0)

    def step(key, state):
        x, d = state
        x = 0.9 * x + jax.random.normal(key) + d[0]
        return (x, d), {"x": x}

    walk = pg.Kernel(init=lambda x0: (jnp.asarray(x0), data), step=step)
    final_all, (states, infos_all) = pg.run(walk, jax.random.key(0), walk.init(0.0), 20, keep="all")
    final, (kept, infos) = pg.run(walk, jax.random.key(0), walk.init(0.0), 20, keep=lambda s: s[0])
    assert states[1].shape == (20, 1000) and kept.shape == (20,)
    np.testing.assert_array_equal(kept, states[0])
    np.testing.assert_array_equal(final[0], final_all[0])
    np.testing.assert_array_equal(infos["x"], infos_all["x"])
    with pytest.raises(pg.SettingError, match="keep must be"):
        pg.run(walk, jax.random.key(0), walk.init(0.0), 2, keep="some")

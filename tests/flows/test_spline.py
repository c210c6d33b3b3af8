"""Rational-quadratic splines: values, inverses and log-determinants against distrax's
``RationalQuadraticSpline`` (same parametrization), Jacobians, gradients, dtypes, errors."""

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import probgen as pg
from probgen.flows import bijectors
from probgen.flows.nets import mlp

BOUND = 5.0
forward = jax.jit(lambda p, x: pg.flows.rq_spline_forward(p, x, BOUND))
inverse = jax.jit(lambda p, y: pg.flows.rq_spline_inverse(p, y, BOUND))


def _distrax(params):
    return distrax.RationalQuadraticSpline(params, -BOUND, BOUND)


@jax.jit
def _distrax_knots(params):
    spline = _distrax(params)
    return spline.x_pos, spline.y_pos, spline.knot_slopes


@jax.jit
def _distrax_both(params, xs, ys):
    spline = _distrax(params)
    return spline.forward_and_log_det(xs), spline.inverse_and_log_det(ys)


@jax.jit
def _ours_with_slopes(params, xs, ys):
    """forward at xs, inverse at ys, forward at inverse(ys): (value, log_det, d log_det / d input)."""

    def run(fn, values):
        (out, log_det), (_, slope) = jax.jvp(lambda v: fn(params, v), (values,), (jnp.ones_like(values),))
        return out, log_det, slope

    inv = run(pg.flows.rq_spline_inverse, ys)
    return run(pg.flows.rq_spline_forward, xs), inv, run(pg.flows.rq_spline_forward, inv[0])


def _case(num_bins, seed=0):
    """64 splines from all-zero to extreme parameters, each with its knots, both ends, points
    just and far outside, and uniform points inside; and a tolerance per spline."""
    rng = np.random.default_rng(seed)
    scales = np.repeat([0.0, 1.0, 3.0, 10.0], 16)  # 10: most bins at the minimum size, slopes ~1e-4
    params = jnp.asarray(scales[:, None, None] * rng.standard_normal((64, 1, 3 * num_bins + 1)), jnp.result_type(float))
    x_pos, y_pos, _ = (np.asarray(a) for a in _distrax_knots(params))
    inside = rng.uniform(-BOUND, BOUND, (64, 6))
    ends = np.broadcast_to([-BOUND, BOUND, -BOUND - 2.0, BOUND + 3.0, -BOUND - 1e-3, BOUND + 1e-3], (64, 6))
    xs = jnp.asarray(np.concatenate([x_pos[:, 0], inside, ends], -1), params.dtype)
    ys = jnp.asarray(np.concatenate([y_pos[:, 0], inside, ends], -1), params.dtype)
    # Knot positions computed in different batch layouts agree to a few ulps of the bound; in a
    # bin of relative size w that moves everything by ~eps / w, so tolerances scale with it.
    smallest = np.minimum(np.diff(x_pos, axis=-1).min(-1), np.diff(y_pos, axis=-1).min(-1))
    tol = 16 * np.finfo(params.dtype).eps * (1.0 + BOUND / smallest)
    return params, xs, ys, tol


def _assert_close(value, expected, sensitivity, tol, what):
    value, expected, sensitivity = (np.asarray(a, np.float64) for a in (value, expected, sensitivity))
    scale = 1.0 + np.abs(expected) + BOUND * np.abs(sensitivity)
    worst = float(np.max(np.abs(value - expected) / (scale * tol)))
    assert worst <= 1.0, f"{what}: error {worst:.3g} x tolerance"


@pytest.mark.parametrize("num_bins", [1, 8, 16])
def test_matches_distrax_values_inverses_and_log_dets(num_bins):
    params, xs, ys, tol = _case(num_bins)
    (y, log_det, slope), (x, inv_log_det, inv_slope), (y_back, log_det_back, back_slope) = _ours_with_slopes(params, xs, ys)
    (y_ref, log_det_ref), (x_ref, inv_log_det_ref) = _distrax_both(params, xs, ys)
    _assert_close(y, y_ref, np.exp(log_det), tol, "forward value")
    _assert_close(log_det, log_det_ref, slope, tol, "forward log-det")
    _assert_close(x, x_ref, np.exp(inv_log_det), tol, "inverse value")
    _assert_close(inv_log_det, inv_log_det_ref, inv_slope, tol, "inverse log-det")
    # The round trip through the well-conditioned direction holds for every spline, and the
    # two log-dets are negatives of each other at matching points (two passes' rounding).
    _assert_close(y_back, ys, 0.0, 2 * tol, "forward(inverse(y))")
    _assert_close(log_det_back, -inv_log_det, np.abs(back_slope) + np.abs(inv_slope), 2 * tol, "log-dets")
    assert y.dtype == log_det.dtype == x.dtype == params.dtype


def test_round_trip_linear_tails_and_identity_at_zero_parameters():
    rng = np.random.default_rng(3)
    params = jnp.asarray(rng.standard_normal((3, 1, 3 * 8 + 1)), jnp.result_type(float))
    x = jnp.linspace(-8.0, 8.0, 200)
    y, log_det = (np.asarray(a) for a in forward(params, x))
    x_back, inv_log_det = inverse(params, y)
    # Rounding in y comes back multiplied by dx/dy = exp(-log_det).
    tol = 1000 * np.finfo(y.dtype).eps * (1.0 + np.abs(x)) * np.maximum(1.0, np.exp(-log_det))
    assert np.all(np.abs(x_back - np.asarray(x)) <= tol)
    np.testing.assert_allclose(inv_log_det, -np.asarray(forward(params, x_back)[1]), atol=1e-5, rtol=1e-5)
    assert np.min(np.abs(y - x)) < 0.1 < np.max(np.abs(y - x))  # not the identity

    # Outside [-bound, bound] the map continues with the end knots' slopes.
    slopes = np.asarray(_distrax_knots(params)[2])[:, 0][:, [0, -1]]
    x = np.asarray(x)
    below, above = x < -BOUND, x > BOUND
    np.testing.assert_allclose(y[:, below], -BOUND + slopes[:, :1] * (x[below] + BOUND), rtol=1e-5)
    np.testing.assert_allclose(y[:, above], BOUND + slopes[:, 1:] * (x[above] - BOUND), rtol=1e-5)
    np.testing.assert_allclose(log_det[:, below], np.broadcast_to(np.log(slopes[:, :1]), (3, below.sum())), rtol=1e-5)
    np.testing.assert_allclose(log_det[:, above], np.broadcast_to(np.log(slopes[:, 1:]), (3, above.sum())), rtol=1e-5)

    y0, log_det0 = forward(jnp.zeros_like(params), x)
    np.testing.assert_allclose(y0, np.broadcast_to(x, y0.shape), atol=1e-5)
    np.testing.assert_allclose(log_det0, 0.0, atol=1e-6)


def test_coupling_log_det_matches_jacobian_and_the_distrax_layer():
    dim, num_bins = 5, 8
    layer = bijectors.SplineCoupling(parity=1, bound=BOUND)
    kept, moved = bijectors.halves(dim, 1)
    net = pg.flows.init_mlp(jax.random.key(5), [len(kept), 16, len(moved) * (3 * num_bins + 1)], final_scale=0.1)
    x = jnp.asarray(4.0 * np.random.default_rng(6).standard_normal((4, dim)), jnp.result_type(float))  # some outside

    def distrax_layer(v):
        spline = _distrax(mlp(net, v[kept]).reshape(len(moved), -1))
        out, log_det = spline.forward_and_log_det(v[moved])
        return v.at[moved].set(out), jnp.sum(log_det)

    @jax.jit
    def run(params, x):
        y, log_det = jax.vmap(lambda v: layer.forward(params, v))(x)
        jac = jax.vmap(jax.jacfwd(lambda v: layer.forward(params, v)[0]))(x)
        return (y, log_det), jnp.linalg.slogdet(jac)[1], jax.vmap(lambda v: layer.inverse(params, v))(y), jax.vmap(distrax_layer)(x)

    (y, log_det), slogdet, (x_back, inv_log_det), (y_ref, log_det_ref) = run({"net": net}, x)
    np.testing.assert_allclose(log_det, slogdet, atol=1e-4, rtol=1e-5)
    np.testing.assert_allclose(x_back, x, atol=1e-4)
    np.testing.assert_allclose(inv_log_det, -log_det, atol=1e-4)
    # The same parameters mean the same layer as the distrax-based one it replaces.
    np.testing.assert_allclose(y, y_ref, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(log_det, log_det_ref, atol=1e-4, rtol=1e-5)


def test_gradients_finite_at_knots_ends_and_outside_and_match_distrax_inside():
    params, xs, ys, _ = _case(8, seed=2)

    def total(fn):
        return jax.grad(lambda p, v: jnp.sum(sum(fn(p, v))), argnums=(0, 1))

    ours = jax.jit(lambda p, x, y: (total(pg.flows.rq_spline_forward)(p, x), total(pg.flows.rq_spline_inverse)(p, y)))
    for grad in jax.tree.leaves(ours(params, xs, ys)):
        assert np.all(np.isfinite(grad))
    # Inside bins (away from knots) both gradients are distrax's; same shapes, no new compile.
    moderate = jnp.concatenate([params[16:32]] * 4)  # scale 1
    inside = xs.at[:, :9].set(xs[:, 9:10])  # knots replaced by an interior point
    (ours_p, ours_x), _ = ours(moderate, inside, ys)
    distrax_total = jax.jit(total(lambda p, v: _distrax(p).forward_and_log_det(v)))
    theirs_p, theirs_x = distrax_total(moderate, inside)
    for ours_grad, their_grad in ((ours_p, theirs_p), (ours_x, theirs_x)):  # entries up to ~20
        np.testing.assert_allclose(ours_grad, their_grad, rtol=1e-3, atol=1e-4 * np.abs(their_grad).max())


def test_jit_vmap_broadcast_and_dtype():
    params = jnp.asarray(np.random.default_rng(9).standard_normal((7, 3 * 4 + 1)), jnp.result_type(float))
    x = jnp.linspace(-6.0, 6.0, 7)

    @jax.jit
    def run(params, x):
        return forward(params, x), jax.vmap(forward)(params, x), forward(params[0], x)

    (y, log_det), (y_vmap, log_det_vmap), (y_shared, _) = run(params, x)
    np.testing.assert_allclose(y_vmap, y, rtol=1e-6, atol=1e-6)  # one scalar per call
    np.testing.assert_allclose(log_det_vmap, log_det, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(y_shared[0], y[0], rtol=1e-6)  # one spline for all points
    assert forward(params.astype(jnp.float32), x.astype(jnp.float32))[0].dtype == jnp.float32
    default = inverse(jnp.zeros(13, jnp.int32), 1)[0]  # integers: the default float
    assert default.dtype == jnp.result_type(float) and float(default) == 1.0


def test_bad_settings_raise_setting_errors():
    with pytest.raises(pg.SettingError, match="3 \\* num_bins \\+ 1"):
        pg.flows.rq_spline_forward(jnp.zeros((2, 6)), jnp.zeros(2))
    with pytest.raises(pg.SettingError, match="do not fit y of shape"):
        pg.flows.rq_spline_inverse(jnp.zeros((3, 13)), jnp.zeros(2))
    with pytest.raises(pg.SettingError, match="bound"):
        pg.flows.rq_spline_forward(jnp.zeros(13), 0.0, bound=-1.0)
    with pytest.raises(pg.SettingError, match="min_bin_size"):
        pg.flows.rq_spline_forward(jnp.zeros(13), 0.0, bound=1.0, min_bin_size=0.5)
    with pytest.raises(pg.SettingError, match="min_slope"):
        pg.flows.rq_spline_forward(jnp.zeros(13), 0.0, min_slope=1.0)

"""The path integral sampler on a 2-D Gaussian mixture with a known normalizing constant."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import probgen as pg

D = pg.flows
LOG_Z = float(np.log(3.0))
MODES = jnp.array([[-3.0, 0.0], [3.0, 0.0]])


def target_log_prob(x):
    comp = jax.scipy.stats.norm.logpdf(x[None, :], MODES, 0.7).sum(-1)
    return LOG_Z + jax.nn.logsumexp(comp + jnp.log(0.5))


def _train_sampler(loss_factory, steps=300):
    params = D.init_pis(jax.random.key(0), 2, (32, 32))
    loss_fn = loss_factory(target_log_prob, 2, 64, 16, 4.0)  # loss(params, key, batch)
    opt = optax.adam(3e-3)

    def body(carry, k):
        p, s = carry
        g = jax.grad(loss_fn)(p, k, None)
        upd, s = opt.update(g, s, p)
        return (optax.apply_updates(p, upd), s), None

    (params, _), _ = jax.jit(lambda p, ks: jax.lax.scan(body, (p, opt.init(p)), ks))(
        params, jax.random.split(jax.random.key(1), steps))
    return params


@pytest.mark.slow  # a long statistical run: the float64 pass skips it
def test_learned_sampler_log_normalizer_and_modes():
    results = {}
    for name, loss in [("reverse_kl", D.pis_reverse_kl), ("log_variance", D.pis_log_variance)]:
        params = _train_sampler(loss)
        log_z, se, elbo = jax.jit(D.pis_log_normalizer, static_argnums=(2, 3, 4, 5, 6))(
            jax.random.key(2), params, target_log_prob, 2, 2000, 16, 4.0)
        x, _ = D.pis_sample(jax.random.key(3), params, target_log_prob, 2, 2000, 16, 4.0)
        right = float(jnp.mean(x[:, 0] > 0))
        results[name] = right
        print(f"{name}: log Z {float(log_z):.4f} +- {float(se):.4f} (true {LOG_Z:.4f}), ELBO {float(elbo):.4f}, "
              f"mass right mode {right:.3f}")
        # Unbiased weights: within 4 se of the truth (se by the delta method), and the ELBO below it.
        assert abs(float(log_z) - LOG_Z) < 4 * float(se) + 0.02
        assert float(elbo) < LOG_Z + 4 * float(se)
    # The log-variance loss keeps both modes (true mass 0.5 each).
    assert 0.3 < results["log_variance"] < 0.7


def test_losses_follow_the_fit_convention():
    """``pg.fit`` takes the loss factories' output directly (no data: batch is None)."""
    loss = D.pis_log_variance(target_log_prob, 2, num_particles=16, num_steps=4, sigma=4.0)
    result = pg.fit(loss, D.init_pis(jax.random.key(0), 2, (8,)), optax.adam(1e-3), jax.random.key(1), steps=3,
                    progress=False)
    assert np.all(np.isfinite(result.history["loss"]))
    with pytest.raises(pg.SettingError, match="pis_reverse_kl: num_particles"):
        D.pis_reverse_kl(target_log_prob, 2, num_particles=0)


def test_untrained_sampler_weights_are_exact_for_a_gaussian_target():
    """With u = 0 the path is the reference process, so log w = log pi~(X_K) - log N(X_K; 0, sigma^2):
    for pi~ = Z N(0, sigma^2) every weight equals log Z exactly."""
    params = jax.tree.map(jnp.zeros_like, D.init_pis(jax.random.key(0), 2, (8,)))
    log_target = lambda x: 0.7 + jax.scipy.stats.norm.logpdf(x, 0.0, 2.0).sum()  # noqa: E731
    _, log_w = D.pis_sample(jax.random.key(1), params, log_target, 2, 64, 10, sigma=2.0)
    np.testing.assert_allclose(log_w, 0.7, atol=1e-5)


def _pis(num_steps):
    params = D.init_pis(jax.random.key(0), 2, hidden=(8,))
    return D.pis_sampler(params, lambda x: -0.5 * x @ x, 2, num_steps)


def test_pis_sampler_refuses_to_run_past_its_horizon():
    kernel = _pis(50)
    assert kernel.horizon == 50
    with pytest.raises(pg.SettingError, match="num_steps=60 exceeds the kernel's horizon of 50"):
        pg.run(kernel, jax.random.key(0), kernel.init(), 60)
    final, _ = pg.validate(lambda s, k: pg.run(kernel, k, s, 50))(kernel.init(), jax.random.key(0))
    with pytest.raises(pg.ValidationError, match="pis_sampler: step index 50 is past the kernel's horizon of 50"):
        pg.validate(lambda s, k: pg.run(kernel, k, s, 1))(final, jax.random.key(1))


def test_float64_path_sampler_keeps_float64():
    with jax.enable_x64(True):
        pis = _pis(20)
        final, _ = pg.run(pis, jax.random.key(0), pis.init(), 20)
        assert final.x.dtype == final.log_weight.dtype == jnp.float64

"""The showcase behind ``make demo``: probgen's main jobs end to end on built-in data.

1. A VAE on scikit-learn's 8x8 digits trained with the ELBO and with IWAE (K=8), compared
   on held-out IWAE-1000 log-likelihood.
2. A particle filter on a linear-Gaussian state-space model, checked against the Kalman filter.
3. Diffusion sampling of a 2-D mixture with several samplers, and Feynman–Kac annealing.

Run ``python examples/showcase.py [--out demo_output]``; it prints a results table and writes
its plots to the folder it names.
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import probgen as pg

LATENT, HIDDEN = 8, 64


def _mlp_init(key, sizes):
    """Tanh-MLP weights scaled 1/sqrt(fan-in) in every layer, the last one included."""
    return pg.flows.init_mlp(key, sizes, final_scale=1.0 / np.sqrt(sizes[-2]))


def _mlp(params, x):
    return pg.flows.mlp(params, x, activation=jnp.tanh)


@pg.gen
def vae_model(decoder):
    z = pg.sample("z", pg.Normal(jnp.zeros(LATENT), 1.0))
    pg.sample("x", pg.Bernoulli(logits=_mlp(decoder, z)))


@pg.gen
def vae_guide(encoder, x):
    out = _mlp(encoder, x)
    pg.sample("z", pg.Normal(out[:LATENT], jax.nn.softplus(out[LATENT:]) + 1e-3))


def _digits():
    from sklearn.datasets import load_digits

    binary = (load_digits().data > 7).astype(np.float32)
    binary = binary[np.random.default_rng(0).permutation(len(binary))]
    return jnp.asarray(binary[200:]), jnp.asarray(binary[:200])


def run_vae(steps: int = 800):
    """Train ELBO and IWAE-8 VAEs; return rows and the trained parameters."""
    train, test = _digits()
    k1, k2 = jax.random.split(jax.random.key(0))
    init = {"decoder": _mlp_init(k1, [LATENT, HIDDEN, 64]), "encoder": _mlp_init(k2, [64, HIDDEN, 2 * LATENT])}
    held_out = pg.vi.iwae(vae_model, vae_guide, 1000)

    @jax.jit
    def test_log_likelihood(params):
        keys = jax.random.split(jax.random.key(99), test.shape[0])
        bounds = jax.vmap(
            lambda k, x: held_out.estimate(k, {"x": x}, (params["decoder"],), (params["encoder"], x))
        )(keys, test)
        return jnp.mean(bounds)

    rows, trained = [], {}
    for name, objective in [("ELBO", pg.vi.elbo(vae_model, vae_guide)), ("IWAE K=8", pg.vi.iwae(vae_model, vae_guide, 8))]:
        def loss(params, key, batch, objective=objective):
            keys = jax.random.split(key, batch.shape[0])
            return jnp.mean(jax.vmap(
                lambda k, x: objective.loss(k, {"x": x}, (params["decoder"],), (params["encoder"], x))
            )(keys, batch))

        start = time.perf_counter()
        result = pg.fit(loss, init, optax.adam(3e-3), jax.random.key(1), data=train,
                        steps=steps, batch_size=100, progress=False)
        seconds = time.perf_counter() - start
        trained[name] = result
        rows.append((f"VAE trained with {name}", "held-out IWAE-1000 log p(x)",
                     f"{float(test_log_likelihood(result.params)):.2f} nats", f"{seconds:.1f} s"))
    rows.insert(0, ("VAE untrained", "held-out IWAE-1000 log p(x)", f"{float(test_log_likelihood(init)):.2f} nats", ""))
    return rows, trained, test


def _kalman_1d(ys, rho, q, r):
    """Exact log evidence and filtering means of z_t = rho z_{t-1} + q e, y_t = z_t + r e'."""

    def body(carry, y):
        mean, var, log_z = carry
        mean, var = rho * mean, rho**2 * var + q**2
        s = var + r**2
        log_z = log_z + pg.Normal(mean, jnp.sqrt(s)).log_prob(y)
        gain = var / s
        mean, var = mean + gain * (y - mean), (1 - gain) * var
        return (mean, var, log_z), mean

    (_, _, log_z), means = jax.lax.scan(body, (0.0, 0.0, 0.0), ys)
    return log_z, means


def run_smc():
    """Particle filter vs the exact Kalman filter on a 1-D linear-Gaussian model."""
    T, rho, q, r = 100, 0.9, 1.0, 0.5

    @pg.gen
    def step(z, _):
        z = pg.sample("z", pg.Normal(rho * z, q))
        pg.sample("y", pg.Normal(z, r))
        return z, None

    model = pg.scan(step, length=T)
    ys = model.simulate(jax.random.key(5), 0.0, None)["y"]
    exact_log_z, exact_means = _kalman_1d(ys, rho, q, r)
    run = jax.jit(lambda key: pg.mc.smc(key, model, {"y": ys}, 0.0, num_particles=1000))
    start = time.perf_counter()
    result = jax.block_until_ready(run(jax.random.key(6)))
    seconds = time.perf_counter() - start
    weights = jax.vmap(pg.mc.normalize_weights)(result.states.log_weights)
    pf_means = jnp.sum(weights * result.states.choices["z"], axis=1)
    rmse = float(jnp.sqrt(jnp.mean((pf_means - exact_means) ** 2)))
    rows = [
        ("particle filter (1000 particles, 100 steps)", "log evidence (Kalman exact)",
         f"{float(result.log_evidence):.2f} ({float(exact_log_z):.2f})", f"{seconds:.1f} s"),
        ("particle filter", "RMSE of filtering means vs Kalman", f"{rmse:.3f}", ""),
    ]
    return rows, (ys, pf_means, exact_means)


def run_diffusion():
    """Samplers on a 2-D mixture with its exact score; FKC annealing vs score scaling."""
    D = pg.diffusion
    sde = D.vp()
    target = D.gaussian_mixture([0.3, 0.7], [[-2.0, 0.0], [2.0, 1.0]], [0.5, 0.7])
    score = D.gmm_score(target, sde)
    rows, samples = [], {}
    for name in ["euler_maruyama", "ddim", "probability_flow"]:
        start = time.perf_counter()
        x = jax.block_until_ready(D.reverse_sample(jax.random.key(2), sde, score, (4000, 2), name, 300))
        samples[name] = x
        rows.append((f"diffusion {name} (300 steps)", "right-mode mass (exact 0.70)",
                     f"{float(jnp.mean(x[:, 0] > 0)):.3f}", f"{time.perf_counter() - start:.1f} s"))
    tempered = D.mixture_product(target, target)
    exact = float(jnp.mean(tempered.sample(jax.random.key(9), 40000)[:, 0] > 0))
    scores, betas = D.anneal(score, 2.0)
    x, log_w = D.fkc_sample(jax.random.key(6), sde, scores, betas, (4000, 2), 300)
    fkc_mass = float(pg.mc.normalize_weights(log_w) @ (x[:, 0] > 0))
    rows.append(("Feynman-Kac annealing p^2", f"right-mode mass (exact {exact:.3f})", f"{fkc_mass:.3f}", ""))
    return rows, samples


def _plots(out, trained, test, smc, samples):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for name, result in trained.items():
        axes[0].plot(np.convolve(result.history["loss"], np.ones(20) / 20, mode="valid"), label=name)
    axes[0].set_title("VAE training loss (moving average)")
    axes[0].legend()
    params = trained["IWAE K=8"].params
    z = jax.random.normal(jax.random.key(3), (8, LATENT))
    images = jax.nn.sigmoid(jax.vmap(lambda zi: _mlp(params["decoder"], zi))(z)).reshape(8, 8, 8)
    axes[1].imshow(np.concatenate(list(images), axis=1), cmap="gray")
    axes[1].set_title("samples from the IWAE-trained VAE")
    axes[1].axis("off")
    fig.savefig(os.path.join(out, "vae.png"), dpi=100, bbox_inches="tight")

    ys, pf_means, kalman_means = smc
    fig, ax = plt.subplots(figsize=(10, 3))
    ax.plot(ys, ".", ms=3, label="observations")
    ax.plot(kalman_means, label="Kalman filter mean")
    ax.plot(pf_means, "--", label="particle filter mean")
    ax.legend()
    fig.savefig(os.path.join(out, "smc.png"), dpi=100, bbox_inches="tight")

    fig, axes = plt.subplots(1, len(samples), figsize=(4 * len(samples), 3.5), sharex=True, sharey=True)
    for ax, (name, x) in zip(axes, samples.items()):
        ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.3)
        ax.set_title(name)
    fig.savefig(os.path.join(out, "diffusion.png"), dpi=100, bbox_inches="tight")
    plt.close("all")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo_output", help="folder for the plots")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    start = time.perf_counter()
    vae_rows, trained, test = run_vae()
    smc_rows, smc = run_smc()
    diffusion_rows, samples = run_diffusion()
    _plots(args.out, trained, test, smc, samples)
    rows = vae_rows + smc_rows + diffusion_rows
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    header = ("job", "measure", "result", "time")
    print("\nprobgen showcase (" + jax.devices()[0].platform + ")")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
    print(f"\nplots written to {os.path.abspath(args.out)}/ (vae.png, smc.png, diffusion.png)")
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()

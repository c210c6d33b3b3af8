"""Benchmark: probgen adaptive tempered SMC vs Blackjax adaptive tempered SMC.

Target: Bayesian logistic regression, 25 weights with a N(0, 1) prior, 200 synthetic
points (fixed seed). Both samplers start from the prior, pick the next inverse temperature
by bisection so the ESS of the incremental weights is 0.5 N, resample systematically
every stage and rejuvenate with HMC (unit mass, same step size, leapfrog steps and moves
per stage: probgen's fixed moves, ``adapt=False``). Blackjax moves first (at the old
temperature) then reweights; probgen reweights, resamples, then moves at the new
temperature: both are valid SMC samplers of
the same schedule rule, so the numbers of stages and log-evidence estimates should agree
up to Monte Carlo error.

Reported per particle count: median wall time of a full run after compile (calls
interleaved), compile times, the number of tempering stages, the log-evidence estimate
(mean ± sd over seeds) of each, and a per-stage profile: one tempering step of each at a
fixed mid-run state, and the same step with probgen's GF density replaced by the
hand-written one (isolates GF overhead from algorithm cost).

Run: ``.venv/bin/python benchmarks/mc_tempered.py [--quick]``.
"""

from __future__ import annotations

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

import probgen as pg
from probgen.mc.mcmc import mh_accept

sys.path.insert(0, os.path.dirname(__file__))
from common import compile_seconds, interleaved_seconds, print_table  # noqa: E402

DIM, NUM_DATA = 25, 200
TARGET_ESS, STEP_SIZE, LEAPFROG, MCMC_STEPS = 0.5, 0.05, 10, 5


def make_data(seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(NUM_DATA, DIM)).astype(np.float32)
    w_true = rng.normal(size=DIM).astype(np.float32)
    y = (rng.uniform(size=NUM_DATA) < 1 / (1 + np.exp(-x @ w_true))).astype(np.float32)
    return jnp.asarray(x), jnp.asarray(y)


@pg.gen
def logreg(x):
    w = pg.sample("w", pg.Normal(jnp.zeros(DIM), 1.0))
    pg.sample("y", pg.Bernoulli(logits=x @ w))


def probgen_run(x, y, num_particles):
    def run(key):
        result = pg.mc.tempered_smc(key, logreg, {"y": y}, x, num_particles=num_particles,
                                    target_ess=TARGET_ESS, move="hmc", step_size=STEP_SIZE,
                                    num_leapfrog_steps=LEAPFROG, num_mcmc_steps=MCMC_STEPS,
                                    scheme="systematic", adapt=False)
        return result.log_evidence, result.num_steps

    return run


# -- Blackjax --------------------------------------------------------------------------------


def log_prior(w):
    return jnp.sum(-0.5 * w**2 - 0.5 * jnp.log(2 * jnp.pi))


def make_log_likelihood(x, y):
    def log_likelihood(w):
        logits = x @ w
        # y * logits - softplus(logits): one transcendental per point, as numpyro's Bernoulli(logits)
        return jnp.sum(y * logits - jax.nn.softplus(logits))

    return log_likelihood


def blackjax_sampler(x, y):
    import blackjax
    from blackjax.smc import resampling
    from blackjax.smc.base import extend_params

    params = extend_params({"step_size": jnp.asarray(STEP_SIZE), "inverse_mass_matrix": jnp.ones(DIM),
                            "num_integration_steps": jnp.asarray(LEAPFROG)})
    return blackjax.adaptive_tempered_smc(
        log_prior, make_log_likelihood(x, y), blackjax.hmc.build_kernel(), blackjax.hmc.init, params,
        resampling.systematic, TARGET_ESS, num_mcmc_steps=MCMC_STEPS,
    )


def blackjax_run(x, y, num_particles):
    sampler = blackjax_sampler(x, y)

    def run(key):
        k_init, k_run = jax.random.split(key)
        state = sampler.init(jax.random.normal(k_init, (num_particles, DIM)))

        def cond(carry):
            s, _, n = carry
            return (s.tempering_param < 1.0) & (n < 200)

        def body(carry):
            s, log_z, n = carry
            s, info = sampler.step(jax.random.fold_in(k_run, n), s)
            return s, log_z + info.log_likelihood_increment, n + 1

        _, log_z, n = jax.lax.while_loop(cond, body, (state, jnp.zeros(()), jnp.zeros((), jnp.int32)))
        return log_z, n

    return run


# -- per-stage profile -------------------------------------------------------------------------


def stage_fns(x, y, num_particles, beta):
    """One tempering step of each implementation from a state at inverse temperature ``beta``."""
    import blackjax.smc.tempered as bj_tempered

    kernel = pg.mc.tempered_smc_kernel(logreg, {"y": y}, x, num_particles=num_particles, target_ess=TARGET_ESS,
                                       move="hmc", step_size=STEP_SIZE, num_leapfrog_steps=LEAPFROG,
                                       num_mcmc_steps=MCMC_STEPS, adapt=False)
    log_lik = make_log_likelihood(x, y)
    pos = 0.3 * jax.random.normal(jax.random.key(7), (num_particles, DIM))
    pg_state = kernel.init({"w": pos})._replace(beta=jnp.asarray(beta))
    sampler = blackjax_sampler(x, y)
    bj_state = bj_tempered.TemperedSMCState(pos, jnp.ones(num_particles) / num_particles, jnp.asarray(beta))

    def hand_hmc_move(key, w, b):
        """The same per-particle HMC rejuvenation with the hand-written log density."""
        def logdensity(z):
            return log_prior(z) + b * log_lik(z)

        def one(z, k):
            k_prop, k_acc = jax.random.split(k)
            proposed, log_alpha = pg.mc.hmc_proposal(k_prop, z, logdensity, STEP_SIZE, LEAPFROG)
            return mh_accept(k_acc, log_alpha, proposed, z)[0], None

        return jax.lax.scan(one, w, jax.random.split(key, MCMC_STEPS))[0]

    return {
        "probgen": lambda k: kernel.step(k, pg_state)[0].latents["w"],
        "blackjax": lambda k: sampler.step(k, bj_state)[0].particles,
        "probgen_move_hand_density": lambda k: jax.vmap(hand_hmc_move, (0, 0, None))(
            jax.random.split(k, num_particles), pos, beta),
    }


def main(quick: bool = False) -> list[dict]:
    """Rows (name, probgen_s, baseline_s, ratio, notes); baseline is Blackjax."""
    x, y = make_data()
    sizes = (256,) if quick else (256, 1024)
    seeds = 3 if quick else 8
    repeats = 3 if quick else 10
    rows = []
    for n in sizes:
        fns = {"probgen": probgen_run(x, y, n), "blackjax": blackjax_run(x, y, n)}
        key = jax.random.key(0)
        compiles = {name: compile_seconds(f, key) for name, f in fns.items()}
        t = interleaved_seconds(fns, key, repeats=repeats)
        estimates = {}
        for name, f in fns.items():
            jitted = jax.jit(f)
            out = [jitted(jax.random.key(100 + s)) for s in range(seeds)]
            log_z = np.array([float(o[0]) for o in out])
            steps = np.array([int(o[1]) for o in out])
            estimates[name] = (log_z.mean(), log_z.std(ddof=1), steps.mean())
        (pz, psd, pst), (bz, bsd, bst) = estimates["probgen"], estimates["blackjax"]
        rows.append(dict(
            name=f"tempered SMC logreg D={DIM} N={n} vs Blackjax", probgen_s=t["probgen"], baseline_s=t["blackjax"],
            ratio=t["probgen"] / t["blackjax"],
            notes=(f"log Z {pz:.2f}±{psd:.2f} vs {bz:.2f}±{bsd:.2f} ({seeds} seeds); stages {pst:.1f} vs {bst:.1f}; "
                   f"compile {compiles['probgen']:.2f}s vs {compiles['blackjax']:.2f}s"),
        ))
        stage = interleaved_seconds(stage_fns(x, y, n, 0.3), key, repeats=repeats * 3)
        rows.append(dict(
            name=f"  one tempering stage N={n} (beta=0.3)", probgen_s=stage["probgen"], baseline_s=stage["blackjax"],
            ratio=stage["probgen"] / stage["blackjax"],
            notes=(f"probgen's HMC move with hand-written density alone: {stage['probgen_move_hand_density']:.4g}s "
                   f"(ratio to blackjax {stage['probgen_move_hand_density'] / stage['blackjax']:.2f})"),
        ))
    return rows


if __name__ == "__main__":
    print_table(main(quick="--quick" in sys.argv), "tempered SMC: probgen vs Blackjax")

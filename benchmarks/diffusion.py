"""Benchmark: reverse-SDE Euler–Maruyama sampling, probgen kernel vs hand-written lax.scan vs diffrax.

VP SDE, analytic 2-D Gaussian-mixture score (the same function in all three), 1,000 steps,
10,000 particles (``--quick``: 1,000 steps, 2,000 particles, fewer repeats). Reports the median
run time of several timed runs after warm-up (``block_until_ready``) and compile times.

Run: ``.venv/bin/python benchmarks/diffusion.py [--quick]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp

import probgen as pg

sys.path.insert(0, os.path.dirname(__file__))
from common import interleaved_calls, print_table  # noqa: E402

D = pg.diffusion
T_MIN = 1e-3


def _problem():
    sde = D.vp()
    gmm = D.gaussian_mixture([0.3, 0.7], [[-2.0, 0.0], [2.0, 1.0]], [0.5, 0.8])
    return sde, D.gmm_score(gmm, sde)


def probgen_sampler(sde, score_fn, num_steps):
    kernel = D.euler_maruyama(sde, score_fn, num_steps, T_MIN, denoise_final=False)

    def fn(key, x_T):
        final, _ = pg.run(kernel, key, kernel.init(x_T), num_steps)
        return final.x

    return fn


def handwritten_sampler(sde, score_fn, num_steps):
    dt = (T_MIN - sde.t_max) / num_steps

    def fn(key, x_T):
        def body(x, inputs):
            k, i = inputs
            t = sde.t_max + dt * i
            drift = sde.f(t) * x - sde.g2(t) * score_fn(x, t)
            x = x + drift * dt + jnp.sqrt(-sde.g2(t) * dt) * jax.random.normal(k, x.shape)
            return x, None

        steps = jnp.arange(num_steps, dtype=jnp.float32)
        x, _ = jax.lax.scan(body, x_T, (jax.random.split(key, num_steps), steps))
        return x

    return fn


def diffrax_sampler(sde, score_fn, num_steps):
    import diffrax
    import lineax

    span = sde.t_max - T_MIN

    def fn(key, x_T):
        shape = x_T.shape
        # Reverse time u = t_max - t runs forward, as diffrax expects.
        def drift(u, y, args):
            x = y.reshape(shape)
            t = sde.t_max - u
            return -(sde.f(t) * x - sde.g2(t) * score_fn(x, t)).reshape(-1)

        def diffusion(u, y, args):
            return lineax.DiagonalLinearOperator(jnp.full(y.shape, jnp.sqrt(sde.g2(sde.t_max - u))))

        bm = diffrax.VirtualBrownianTree(0.0, span, tol=span / num_steps / 2, shape=(x_T.size,), key=key)
        terms = diffrax.MultiTerm(diffrax.ODETerm(drift), diffrax.ControlTerm(diffusion, bm))
        sol = diffrax.diffeqsolve(terms, diffrax.Euler(), 0.0, span, span / num_steps, x_T.reshape(-1),
                                  saveat=diffrax.SaveAt(t1=True), max_steps=num_steps + 1,
                                  stepsize_controller=diffrax.ConstantStepSize())
        return sol.ys[-1].reshape(shape)

    return fn


def _compile(fn, args):
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - t0
    out = jax.block_until_ready(compiled(*args))  # warm-up
    return compiled, compile_s, out


def main(quick: bool = False) -> list[dict]:
    num_steps = 1000
    num_particles = 2000 if quick else 10000
    repeats = 5 if quick else 9
    sde, score_fn = _problem()
    key, k_prior = jax.random.split(jax.random.key(0))
    x_T = sde.prior_sample(k_prior, (num_particles, 2))
    args = (key, x_T)
    pg_f, pg_c, pg_x = _compile(probgen_sampler(sde, score_fn, num_steps), args)
    hw_f, hw_c, hw_x = _compile(handwritten_sampler(sde, score_fn, num_steps), args)
    t, _ = interleaved_calls({"pg": lambda: pg_f(*args), "hw": lambda: hw_f(*args)}, repeats, warmup=0)
    pg_s, hw_s = t["pg"], t["hw"]
    size = f"{num_steps} steps x {num_particles} particles, 2-D"
    rows = [
        {"name": "EM reverse SDE: run", "probgen_s": pg_s, "baseline_s": hw_s, "ratio": pg_s / hw_s,
         "notes": f"vs hand-written lax.scan; {size}; max |x_pg - x_hw| = {float(jnp.max(jnp.abs(pg_x - hw_x))):.1e}"},
        {"name": "EM reverse SDE: compile", "probgen_s": pg_c, "baseline_s": hw_c, "ratio": pg_c / hw_c,
         "notes": "vs hand-written lax.scan"},
    ]
    try:
        dx_f, dx_c, _ = _compile(diffrax_sampler(sde, score_fn, num_steps), args)
        dx_s = interleaved_calls({"dx": lambda: dx_f(*args)}, max(1, repeats // 2), warmup=0)[0]["dx"]
        import diffrax
        rows += [
            {"name": "EM reverse SDE: run", "probgen_s": pg_s, "baseline_s": dx_s, "ratio": pg_s / dx_s,
             "notes": f"vs diffrax {diffrax.__version__} Euler + VirtualBrownianTree; {size}"},
            {"name": "EM reverse SDE: compile", "probgen_s": pg_c, "baseline_s": dx_c, "ratio": pg_c / dx_c,
             "notes": "vs diffrax"},
        ]
    except ImportError:
        rows.append({"name": "diffrax", "probgen_s": float("nan"), "baseline_s": float("nan"),
                     "ratio": float("nan"), "notes": "diffrax not installed; skipped"})
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    print_table(main(parser.parse_args().quick), "diffusion")

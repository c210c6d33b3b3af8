"""Benchmark: probgen ``pg.vi`` vs GenJAX 0.10 VI (ADEV) on the cases of ``benchmarks/vi.py``.

GenJAX 0.10.x pins jax 0.5, so it lives in its own virtualenv ``.venv-genjax`` and this file
has two halves:

* ``--genjax-worker [--quick]`` (run with the ``.venv-genjax`` python; never imports
  probgen): times GenJAX's ``genjax.vi.ELBO`` gradient estimator on the VAE step (64-dim
  binary data, 2-layer tanh MLPs with 128 hidden units, latent 8, batch 128; per-datapoint
  estimator vmapped over the batch, plus an Adam update) and the compile time of the ELBO
  gradient of the linear-Gaussian state-space model of ``vi.py`` (GenJAX's ADEV has no
  loop primitive here, so the model is unrolled over T steps) at T = 10, 100 and, if
  T = 100 compiled fast enough, 1000. It prints one JSON row per line.
* ``main(quick)`` (the ``.venv`` python): runs the worker in a subprocess, runs the probgen
  counterparts in-process (reusing ``vi.py``), and reports probgen/GenJAX ratios.

Setup: ``.venv/bin/python benchmarks/genjax_vi.py --setup`` creates ``.venv-genjax`` with
``genjax==0.10.3``. Run: ``.venv/bin/python benchmarks/genjax_vi.py [--quick]``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
GENJAX_VENV = os.path.join(os.path.dirname(HERE), ".venv-genjax")
GENJAX_PYTHON = os.path.join(GENJAX_VENV, "bin", "python")
GENJAX_VERSION = "0.10.3"
DATA_DIM, HIDDEN, LATENT, BATCH = 64, 128, 8, 128
MISSING_NOTE = "genjax venv missing: run benchmarks/genjax_vi.py --setup"


# -- GenJAX worker (runs in .venv-genjax; must not import probgen) -----------------------------


def _worker(quick: bool) -> None:
    import jax
    import jax.numpy as jnp
    import numpy as np

    import genjax
    from genjax import ChoiceMap, Target

    def mlp_init(key, sizes):
        keys = jax.random.split(key, len(sizes) - 1)
        return [{"w": jax.random.normal(k, (a, b)) / np.sqrt(a), "b": jnp.zeros(b)}
                for k, a, b in zip(keys, sizes[:-1], sizes[1:])]

    def mlp(params, x):
        for layer in params[:-1]:
            x = jnp.tanh(x @ layer["w"] + layer["b"])
        return x @ params[-1]["w"] + params[-1]["b"]

    k1, k2 = jax.random.split(jax.random.key(0))
    params = {"decoder": mlp_init(k1, [LATENT, HIDDEN, HIDDEN, DATA_DIM]),
              "encoder": mlp_init(k2, [DATA_DIM, HIDDEN, HIDDEN, 2 * LATENT])}

    @genjax.gen
    def vae_model(params, x):
        z = genjax.mv_normal_diag(jnp.zeros(LATENT), jnp.ones(LATENT)) @ "z"
        genjax.bernoulli(mlp(params["decoder"], z)) @ "x"

    @genjax.marginal()
    @genjax.gen
    def vae_guide(target):
        params, x = target.args
        out = mlp(params["encoder"], x)
        genjax.vi.mv_normal_diag_reparam(out[:LATENT], jax.nn.softplus(out[LATENT:]) + 1e-3) @ "z"

    # ADEV hands ``make_target`` the flattened leaves of the argument tuple: rebuild (params, x).
    treedef = jax.tree.structure((params, jnp.zeros(DATA_DIM)))

    def make_target(*leaves):
        p, x = jax.tree.unflatten(treedef, leaves)
        return Target(vae_model, (p, x), ChoiceMap.d({"x": x}))

    elbo_grad = genjax.vi.ELBO(vae_guide, make_target)

    def step(params, opt, key, x):
        keys = jax.random.split(key, x.shape[0])
        grads, _ = jax.vmap(lambda k, xi: elbo_grad(k, (params, xi)), (0, 0))(keys, x)
        grads = jax.tree.unflatten(jax.tree.structure(params), jax.tree.leaves(grads))
        grads = jax.tree.map(lambda g: jnp.mean(g, 0), grads)
        m, v, t = opt  # Adam(1e-3), written out (optax is not in the genjax venv)
        t = t + 1
        m = jax.tree.map(lambda a, g: 0.9 * a + 0.1 * g, m, grads)
        v = jax.tree.map(lambda a, g: 0.999 * a + 0.001 * g * g, v, grads)
        params = jax.tree.map(lambda p, a, b: p - 1e-3 * (a / (1 - 0.9**t)) / (jnp.sqrt(b / (1 - 0.999**t)) + 1e-8),
                              params, m, v)
        return params, (m, v, t)

    x = (jax.random.uniform(jax.random.key(3), (BATCH, DATA_DIM)) < 0.3).astype(jnp.float32)
    zeros = jax.tree.map(jnp.zeros_like, params)
    opt = (zeros, zeros, jnp.zeros((), jnp.float32))
    key = jax.random.key(1)
    def grad_norm(params, key, x):  # sanity check against probgen's gradient at the same init
        keys = jax.random.split(key, x.shape[0])
        grads, _ = jax.vmap(lambda k, xi: elbo_grad(k, (params, xi)), (0, 0))(keys, x)
        return {part: jnp.sqrt(sum(jnp.sum(jnp.mean(g, 0) ** 2) for g in jax.tree.leaves(grads[part])))
                for part in ("decoder", "encoder")}

    parts = jax.jit(grad_norm)(params, jax.random.key(5), x)
    norm = float(jnp.sqrt(parts["decoder"] ** 2 + parts["encoder"] ** 2))
    if os.environ.get("GENJAX_VI_DEBUG"):
        print({k: float(v) for k, v in parts.items()}, file=sys.stderr)
    start = time.perf_counter()
    compiled = jax.jit(step).lower(params, opt, key, x).compile()
    compile_s = time.perf_counter() - start
    jax.block_until_ready(compiled(params, opt, key, x))
    times = []
    for i in range(5 if quick else 20):
        k = jax.random.fold_in(key, i)
        start = time.perf_counter()
        params, opt = compiled(params, opt, k, x)
        jax.block_until_ready(params)
        times.append(time.perf_counter() - start)
    print(json.dumps({"case": f"vae elbo step B={BATCH}", "seconds": statistics.median(times),
                      "compile_s": compile_s, "grad_norm": norm, "grad_norm_decoder": float(parts["decoder"]),
                      "grad_norm_encoder": float(parts["encoder"]), "genjax": genjax.__version__ if hasattr(genjax, "__version__")
                      else GENJAX_VERSION, "jax": jax.__version__}), flush=True)

    def ssm_compile(steps):
        @genjax.gen
        def ssm(locs):
            z = 0.0
            for t in range(steps):
                z = genjax.normal(0.9 * z, 1.0) @ f"z{t}"
                genjax.normal(z, 0.5) @ f"y{t}"

        @genjax.marginal()
        @genjax.gen
        def ssm_guide(target):
            (locs,) = target.args
            z = 0.0
            for t in range(steps):
                z = genjax.vi.normal_reparam(locs[t] + 0.5 * z, 0.8) @ f"z{t}"

        obs = ChoiceMap.d({f"y{t}": 0.0 for t in range(steps)})
        grad = genjax.vi.ELBO(ssm_guide, lambda locs: Target(ssm, (locs,), obs))
        start = time.perf_counter()
        jax.jit(grad).lower(jax.random.key(0), (jnp.zeros(steps),)).compile()
        return time.perf_counter() - start

    for steps in (10, 100, 1000):
        seconds = ssm_compile(steps)
        print(json.dumps({"case": f"ssm compile T={steps}", "seconds": seconds, "compile_s": seconds}), flush=True)
        if steps == 100 and seconds * 10 > 120:  # T=1000 would take over 2 minutes: skip
            print(json.dumps({"case": "ssm compile T=1000", "seconds": None,
                              "note": f"skipped: T=100 took {seconds:.1f}s, unrolled T=1000 would exceed 2 min"}))
            break


# -- probgen side (runs in .venv) --------------------------------------------------------------


def _run_worker(quick: bool, timeout: float) -> tuple[dict[str, dict], str]:
    if not os.path.exists(GENJAX_PYTHON):
        return {}, MISSING_NOTE
    cmd = [GENJAX_PYTHON, os.path.abspath(__file__), "--genjax-worker"] + (["--quick"] if quick else [])
    env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        out, err = proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as e:
        out, err = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or ""), "timeout"
    rows = {}
    for line in out.splitlines():
        if line.startswith("{"):
            row = json.loads(line)
            rows[row["case"]] = row
    note = "" if rows else f"genjax worker failed: {err.strip().splitlines()[-1] if err.strip() else 'no output'}"
    return rows, note


def main(quick: bool = False) -> list[dict]:
    """Rows (name, probgen_s, baseline_s, ratio, notes); baseline is GenJAX 0.10 in its own venv."""
    sys.path.insert(0, HERE)
    import jax
    import jax.numpy as jnp

    import probgen as pg
    import vi

    genjax_rows, note = _run_worker(quick, timeout=240 if quick else 600)
    x = (jax.random.uniform(jax.random.key(3), (BATCH, DATA_DIM)) < 0.3).astype(jnp.float32)
    pg_step, optimizer = vi.make_step(vi.probgen_loss(pg.vi.elbo(vi.model, vi.guide)))
    repeats = 20 if quick else 100  # GenJAX runs in another process: nothing to interleave with
    step = vi.prepare_step(pg_step, optimizer, x, repeats)
    pg_s, pg_compile = vi.interleaved_calls({"probgen": step.call}, repeats)[0]["probgen"], step.compile_s
    rows = []

    def add(name, probgen_s, case, extra):
        g = genjax_rows.get(case)
        if g is None or g.get("seconds") is None:
            rows.append(dict(name=name, probgen_s=probgen_s, baseline_s=None, ratio=None,
                             notes=(g or {}).get("note") or note or "genjax case missing"))
        else:
            rows.append(dict(name=name, probgen_s=probgen_s, baseline_s=g["seconds"],
                             ratio=probgen_s / g["seconds"], notes=extra(g)))

    loss = vi.probgen_loss(pg.vi.elbo(vi.model, vi.guide))
    grads = jax.jit(jax.grad(loss))(vi.init_params(), jax.random.key(5), x)
    norm = {part: float(jnp.sqrt(sum(jnp.sum(g**2) for g in jax.tree.leaves(grads[part]))))
            for part in ("decoder", "encoder")}
    add(f"vae elbo step B={BATCH} vs GenJAX ELBO", pg_s, f"vae elbo step B={BATCH}",
        lambda g: f"compile {pg_compile:.2f}s vs {g['compile_s']:.2f}s; |grad| at init decoder {norm['decoder']:.3g} vs "
                  f"{g['grad_norm_decoder']:.3g}, encoder {norm['encoder']:.3g} vs {g['grad_norm_encoder']:.3g}; genjax {g.get('genjax')} on jax {g.get('jax')} (separate process)")
    for steps in (10, 100, 1000):
        pg_compile_s, _ = vi.ssm_compile_times(steps)
        add(f"ssm ELBO-grad compile T={steps} vs GenJAX", pg_compile_s, f"ssm compile T={steps}",
            lambda g: "compile time (s); probgen pg.scan vs GenJAX unrolled")
    return rows


def setup() -> int:
    """Create ``.venv-genjax`` with GenJAX 0.10.3 (and the jax it pins)."""
    subprocess.run([sys.executable if sys.version_info >= (3, 10) else "python3", "-m", "venv", GENJAX_VENV], check=True)
    pip = os.path.join(GENJAX_VENV, "bin", "pip")
    return subprocess.run([pip, "install", f"genjax=={GENJAX_VERSION}"]).returncode


if __name__ == "__main__":
    if "--genjax-worker" in sys.argv:
        _worker("--quick" in sys.argv)
    elif "--setup" in sys.argv:
        sys.exit(setup())
    else:
        sys.path.insert(0, HERE)
        from common import print_table

        print_table(main(quick="--quick" in sys.argv), "VI: probgen vs GenJAX 0.10")

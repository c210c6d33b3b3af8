"""Shared timing helpers for the benchmark scripts (side-by-side, one process)."""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import jax


def compile_seconds(fn: Callable, *args: Any) -> float:
    """Wall time to trace, lower and compile ``fn`` for ``args`` (no execution).

    A fresh wrapper defeats JAX's in-process caches, so each call measures a cold compile.
    """
    fresh = lambda *a: fn(*a)  # noqa: E731
    start = time.perf_counter()
    jax.jit(fresh).lower(*args).compile()
    return time.perf_counter() - start


def run_seconds(fn: Callable, *args: Any, repeats: int = 20, warmup: int = 2) -> float:
    """Median wall time of one call of the jitted ``fn`` after warm-up."""
    jitted = jax.jit(fn)
    for _ in range(warmup):
        jax.block_until_ready(jitted(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(jitted(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_seconds(fns: dict[str, Callable], *args: Any, repeats: int = 20) -> dict[str, float]:
    """Median times of several jitted functions, calls interleaved so drift hits all alike."""
    jitted = {name: jax.jit(f) for name, f in fns.items()}
    for f in jitted.values():
        jax.block_until_ready(f(*args))
        jax.block_until_ready(f(*args))
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, f in jitted.items():
            start = time.perf_counter()
            jax.block_until_ready(f(*args))
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def flops(fn: Callable, *args: Any) -> float | None:
    """XLA's cost-analysis flop count of the compiled ``fn``, when the backend reports one."""
    analysis = jax.jit(fn).lower(*args).compile().cost_analysis()
    if isinstance(analysis, list):
        analysis = analysis[0] if analysis else {}
    return None if not analysis else analysis.get("flops")


def print_table(rows: list[dict], title: str) -> None:
    print(f"\n== {title} ({jax.devices()[0].device_kind}, jax {jax.__version__}) ==")
    if not rows:
        return
    cols = list(rows[0].keys())
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in cols}
    print("  ".join(c.ljust(widths[c]) for c in cols))
    for r in rows:
        print("  ".join(_fmt(r.get(c)).ljust(widths[c]) for c in cols))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)

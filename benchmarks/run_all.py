"""Run every benchmark side by side in one process and print one report.

    .venv/bin/python benchmarks/run_all.py --quick     # under 5 minutes
    .venv/bin/python benchmarks/run_all.py             # full sizes; prints its own duration

Each script (core_overhead, vi, mc, diffusion, flows, gfn, train) exposes ``main(quick) -> rows``
and can also be run alone. Ratios are probgen time / baseline time (< 1 is faster).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(__file__))
from common import print_table  # noqa: E402

SUITES = ["core_overhead", "vi", "mc", "mc_tempered", "mcmc", "genjax_vi", "diffusion", "flows", "gfn", "train"]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", nargs="*", default=None, help="subset of: " + ", ".join(SUITES))
    args = parser.parse_args()
    failures = 0
    start = time.perf_counter()
    for name in args.only or SUITES:
        t0 = time.perf_counter()
        try:
            module = importlib.import_module(name)
            rows = module.main(args.quick)
            print_table(rows, f"{name} ({time.perf_counter() - t0:.0f} s)")
        except Exception:  # keep going: one broken suite should not hide the others
            failures += 1
            print(f"\n== {name}: FAILED ==")
            traceback.print_exc()
    print(f"\nall benchmarks: {time.perf_counter() - start:.0f} s ({'quick' if args.quick else 'full'} mode)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

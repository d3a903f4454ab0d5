"""How often the Brevitas float32 forward and the integer contract disagree, and why.

For every bit width x scale mode, a small actor is calibrated (300-step warm-up), exported, and
compared stage by stage on Gaussian, uniform, tie-grid and grid inputs. Prints one row per
configuration; every first disagreement is classified as a float tie or not (see qpolicy_hw.verify).

    .venv/bin/python bench/tie_rate.py [--width 32] [--n 10000]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from conftest import make_bundle  # noqa: E402  (the same fixture the tests use)

from qpolicy_hw.bundle import load_bundle  # noqa: E402
from qpolicy_train.float_reference import float_vs_int  # noqa: E402
from qpolicy_train.quant_actor import QuantSpec  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--n", type=int, default=10_000, help="vectors per input kind (4 kinds)")
    a = p.parse_args()
    print(f"{'mode':5} {'bits':>4} {'vectors':>8} {'all codes':>10} {'mism':>5} {'rate':>9} "
          f"{'out codes':>9} {'out mism':>8} {'at ties':>7} {'not ties':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("float", "po2"):
            for bits in (2, 3, 4, 6, 8):
                spec = QuantSpec(bits, bits, bits, a.width, 2, mode)
                bundle = load_bundle(make_bundle(Path(tmp), spec, seed=bits, name=f"{mode}{bits}"))
                r = float_vs_int(bundle, n_random=a.n, seed=bits)
                print(f"{mode:5} {bits:>4} {r['vectors']:>8} {r['all_stage_codes']:>10} "
                      f"{r['all_stage_mismatches']:>5} {r['rate']:>9.2e} {r['codes']:>9} {r['mismatches']:>8} "
                      f"{r['first_disagreements_at_float_ties']:>7} {r['first_disagreements_not_at_ties']:>8}",
                      flush=True)


if __name__ == "__main__":
    main()

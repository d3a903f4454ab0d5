"""Rung 2: qonnx execute_onnx of the exported graph vs the Brevitas forward: bit-identical."""
from __future__ import annotations

import pytest

from qpolicy_hw.bundle import load_bundle
from qpolicy_train.float_reference import qonnx_vs_float
from qpolicy_train.quant_actor import QuantSpec


@pytest.mark.parametrize("spec", [QuantSpec(6, 2, 8, 16, 2, "float"), QuantSpec(8, 4, 8, 32, 2, "po2"),
                                  QuantSpec(3, 3, 3, 16, 1, "float")])
def test_qonnx_execution_is_exact(bundle_factory, spec):
    result = qonnx_vs_float(load_bundle(bundle_factory(spec)), n=200)
    assert result["vectors"] == 200
    assert result["mismatches"] == 0 and result["max_abs_diff"] == 0.0


def test_export_prints_no_warning_of_an_unused_cuda_kernel(tmp_path):
    """Importing Brevitas' exporter warns that a CUDA-only Hadamard kernel is missing; export never uses it,
    so users of `qpolicy export`/`ship` (and the sweep's log) should not see it. A fresh process: Python
    shows a warning only once per process."""
    import subprocess
    import sys
    from pathlib import Path

    tests = Path(__file__).resolve().parent
    code = ("import sys, pathlib; sys.path.insert(0, sys.argv[1]); from conftest import make_bundle; "
            "from qpolicy_train.quant_actor import QuantSpec; "
            "make_bundle(pathlib.Path(sys.argv[2]), QuantSpec(width=16, core_bits=2, input_bits=6))")
    run = subprocess.run([sys.executable, "-W", "default", "-c", code, str(tests), str(tmp_path)],
                         cwd=tests.parent, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "bundle" / "bundle.json").exists()
    assert "fast_hadamard_transform" not in run.stderr

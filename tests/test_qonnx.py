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

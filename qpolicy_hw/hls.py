"""The hls4ml project of a bundle (QONNX route, ``io_parallel``), for users with Vitis HLS.

hls4ml is bit-exact with the integer contract only for power-of-two scales with an integer bias (the
``po2`` scale mode) and with ``global_in`` set to the input quantizer's fixed-point format; bundles
with float scales are refused with that reason. Its g++ C simulation runs here; ``build()`` needs Vitis.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from qpolicy_hw.bundle import ONNX_FILE, Bundle
from qpolicy_hw.errors import QpolicyError


def check_exact(bundle: Bundle) -> None:
    if not bundle.is_integer or bundle.meta["quant"]["scale_mode"] != "po2":
        raise QpolicyError("hls4ml is exact only for power-of-two scales with an integer bias; this bundle uses "
                           "float scales. Use the RTL core (qpolicy hw) or train with --scale-mode po2")


def input_precision(bundle: Bundle) -> str:
    bits = bundle.bits["input"]
    frac = -int(round(math.log2(float(bundle.input_scale))))
    return f"fixed<{bits},{bits - frac},RND_CONV,SAT>"


def build_hls(bundle: Bundle, out_dir: str | Path, backend: str = "Vitis", part: str = "xc7a15tfgg484-1",
              clock_mhz: float = 100.0):
    """Write and compile (g++) the hls4ml project for ``part`` at ``clock_mhz``; returns the hls4ml model."""
    import hls4ml
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.channels_last import ConvertToChannelsLastAndClean
    from qonnx.transformation.gemm_to_matmul import GemmToMatMul
    from qonnx.util.cleanup import cleanup_model

    check_exact(bundle)
    model = cleanup_model(ModelWrapper(str(bundle.path / ONNX_FILE)))
    model = model.transform(ConvertToChannelsLastAndClean())
    model = cleanup_model(model.transform(GemmToMatMul()))  # hls4ml's ONNX front end takes MatMul + Add
    config = hls4ml.utils.config.config_from_onnx_model(model, granularity="name", backend=backend,
                                                        default_precision="fixed<32,16>")
    config["LayerName"]["global_in"]["Precision"] = input_precision(bundle)
    hls_model = hls4ml.converters.convert_from_onnx_model(model, output_dir=str(out_dir), io_type="io_parallel",
                                                          backend=backend, hls_config=config, part=part,
                                                          clock_period=1000.0 / clock_mhz)
    hls_model.compile()
    return hls_model


def hls_codes(bundle: Bundle, hls_model, q_in: np.ndarray) -> np.ndarray:
    """Output codes of the hls4ml C simulation for input codes (fed as the exact values q * s_in)."""
    x = (np.asarray(q_in, dtype=np.float64) * float(bundle.input_scale)).astype(np.float32)
    y = np.asarray(hls_model.predict(np.ascontiguousarray(x)), dtype=np.float64).reshape(len(x), -1)
    return np.rint(y / float(bundle.output_scale)).astype(np.int64)

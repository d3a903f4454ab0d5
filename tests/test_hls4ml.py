"""Rung 3: hls4ml's C simulation (g++) vs the int reference; build() needs Vitis HLS."""
from __future__ import annotations

import pytest

from qpolicy_hw.bundle import load_bundle
from qpolicy_hw.errors import QpolicyError
from qpolicy_hw.verify import hls4ml_vs_int
from qpolicy_train.quant_actor import QuantSpec


@pytest.mark.parametrize("spec", [QuantSpec(6, 3, 8, 16, 2, "po2"), QuantSpec(4, 2, 4, 16, 2, "po2")])
def test_hls4ml_csim_matches_int_on_every_code(bundle_factory, spec):
    result = hls4ml_vs_int(load_bundle(bundle_factory(spec)), n_random=10_000)
    assert result["vectors"] >= 10_000 and result["mismatches"] == 0


def test_float_scale_bundles_are_refused_with_the_reason(bundle_factory):
    from qpolicy_hw.hls import build_hls

    bundle = load_bundle(bundle_factory(QuantSpec(6, 2, 8, 16, 2, "float")))
    with pytest.raises(QpolicyError, match="exact only for power-of-two scales"):
        build_hls(bundle, "/tmp/never-written")
    assert "skipped" in hls4ml_vs_int(bundle)


@pytest.mark.vivado
def test_vitis_hls_builds_the_project(bundle_factory, tmp_path):  # pragma: no cover - needs Vitis HLS
    import shutil

    if shutil.which("vitis_hls") is None and shutil.which("vivado_hls") is None:
        pytest.skip("Vitis HLS is not installed here")
    from qpolicy_hw.hls import build_hls

    hls_model = build_hls(load_bundle(bundle_factory(QuantSpec(6, 3, 8, 16, 2, "po2"))), tmp_path / "hls")
    report = hls_model.build(csim=False, synth=True)
    assert report

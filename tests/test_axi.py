"""Rung 5: the register map, the Python driver over the Verilated AXI-Lite wrapper, and the pynq backend."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from qpolicy_hw.bundle import load_bundle
from qpolicy_hw.errors import BackendUnavailable
from qpolicy_hw.register_map import REGISTERS, c_header, layout
from qpolicy_train.quant_actor import QuantSpec

needs_verilator = pytest.mark.skipif(shutil.which("verilator") is None, reason="verilator is not installed")


def test_register_map_is_the_one_source_of_the_header():
    regs = layout(11, 3)
    header = c_header(11, 3, 6, 8, 5, "ab" * 32)
    for r in REGISTERS:
        assert f"QPOLICY_{r.name}_OFFSET 0x{r.offset:03X}u" in header
    assert regs["IN10"] == 0x100 + 40 and regs["OUT2"] == 0x208
    assert len(set(regs.values())) == len(regs)        # no two registers share an offset
    with pytest.raises(ValueError):
        layout(100, 3)


@needs_verilator
def test_driver_over_verilated_axi_matches_int(bundle_factory):
    from qpolicy_hw.verify import axi_driver_vs_int

    bundle = load_bundle(bundle_factory(QuantSpec(6, 2, 8, 16, 2, "float")))
    result = axi_driver_vs_int(bundle, n_random=10_000)
    assert result["mismatches"] == 0 and result["vectors"] >= 10_000
    assert result["register_transactions"] > 10_000 * 11   # every code really went through AXI writes/reads
    assert result["cycles_start_to_done"] >= 1


def test_pynq_backend_without_an_overlay_says_why(bundle_factory):
    from qpolicy_hw.runtime import make_policy

    with pytest.raises(BackendUnavailable, match="no FPGA overlay at"):
        make_policy(bundle_factory(), "pynq")


@pytest.mark.board
def test_pynq_backend_on_the_board(bundle_factory):  # pragma: no cover - needs a PYNQ-Z2 with the overlay
    from qpolicy_hw.runtime import make_policy

    path = bundle_factory()
    try:
        board = make_policy(path, "pynq")
    except BackendUnavailable as exc:
        pytest.skip(f"no board here: {exc}")
    ref = make_policy(path, "int")
    for obs in np.random.default_rng(0).normal(size=(1000, 11)):
        assert np.array_equal(board.act(obs), ref.act(obs))

"""The ``pynq`` backend: the policy core on a Zynq board, through ``pynq.Overlay`` + MMIO.

Host float steps are the ``int`` runtime's; ``codes()`` goes through :class:`PolicyCoreDriver`. pynq is
imported only when this backend is built without an explicit ``mmio`` (tests pass a Verilated one).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from qpolicy_hw.axi import PolicyCoreDriver
from qpolicy_hw.bundle import Bundle
from qpolicy_hw.errors import BackendUnavailable
from qpolicy_hw.runtime.int_backend import IntegerPolicy

OVERLAY_ENV = "QPOLICY_OVERLAY"
"""Path of the overlay's .bit (with its .hwh beside it); default: BUNDLE/overlay/qpolicy.bit."""
OVERLAY_BIT = "overlay/qpolicy.bit"
OVERLAY_HWH = "overlay/qpolicy.hwh"
"""The one overlay location: ``qpolicy hw --target pynq-z2 --out DIR`` makes Vivado write DIR/overlay/, and the
backend (and ``qpolicy agent``) look in BUNDLE/overlay/: copy DIR/overlay into the bundle on the board."""
IP_NAME = "qpolicy_axi_0"


def open_overlay_mmio(bundle: Bundle):
    bitfile = Path(os.environ.get(OVERLAY_ENV) or bundle.path / OVERLAY_BIT)
    if not bitfile.exists():
        raise BackendUnavailable(f"no FPGA overlay at {bitfile} (set {OVERLAY_ENV} or build one for this bundle)")
    try:
        import pynq
    except ImportError:
        raise BackendUnavailable("pynq is not installed (it belongs on the board: pip install -r "
                                 "requirements/board.txt)") from None
    try:
        overlay = pynq.Overlay(str(bitfile))
        ip = overlay.ip_dict[IP_NAME]
        return pynq.MMIO(ip["phys_addr"], ip["addr_range"])
    except (RuntimeError, KeyError, OSError) as exc:  # e.g. "No Devices Found" off the board
        raise BackendUnavailable(f"cannot open the overlay {bitfile}: {exc}") from None


class PynqPolicy(IntegerPolicy):
    backend = "pynq"

    def __init__(self, bundle: Bundle, mmio=None):
        super().__init__(bundle)
        mmio = mmio if mmio is not None else open_overlay_mmio(bundle)
        self.driver = PolicyCoreDriver(mmio, self.obs_dim, self.act_dim, bundle.bits["input"],
                                       bundle.bits["output"], digest=bundle.digest)

    def codes(self, q_in: np.ndarray) -> np.ndarray:
        q = self.check_codes(q_in)
        rows = q.reshape(-1, self.obs_dim)
        return np.array([self.driver.infer(r) for r in rows]).reshape(q.shape[:-1] + (self.act_dim,))

"""The ``rtl`` backend: the bundle's RTL core, Verilated, serving one observation at a time.

The core is the one ``qpolicy verify`` checks: da4ml's unrolled core where it fits the XC7A15T by the
cost model, else the model's folded core (``fold_cost.default_plan``).

The host float steps are the ``int`` runtime's; only ``codes()`` goes through the simulated core. The
build is cached by the bundle's content hash, so a second start does not re-generate or re-compile.
"""
from __future__ import annotations

import subprocess

import numpy as np

from qpolicy_hw.bundle import Bundle
from qpolicy_hw.errors import BackendUnavailable, CoreFault
from qpolicy_hw.runtime.int_backend import IntegerPolicy


class RTLPolicy(IntegerPolicy):
    backend = "rtl"

    def __init__(self, bundle: Bundle):
        super().__init__(bundle)
        from qpolicy_hw.default_core import default_core_dir
        from qpolicy_hw.rtl import compile_simulator

        try:
            rtl_dir = default_core_dir(bundle, "core")
            binary = compile_simulator(rtl_dir)
        except ImportError as exc:
            raise BackendUnavailable(f"rtl backend needs da4ml ({exc})") from None
        self._proc = subprocess.Popen([str(binary), "serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      text=True, bufsize=1)
        self.last_cycles = None

    def codes(self, q_in: np.ndarray) -> np.ndarray:
        q = self.check_codes(q_in)
        rows = q.reshape(-1, self.obs_dim)
        out = []
        for row in rows:
            self._proc.stdin.write(" ".join(map(str, row)) + "\n")
            line = self._proc.stdout.readline()
            if not line:
                raise CoreFault("the RTL simulator stopped")
            *codes, cycles = map(int, line.split())
            self.last_cycles = cycles
            out.append(codes)
        return np.asarray(out, dtype=np.int64).reshape(q.shape[:-1] + (self.act_dim,))

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.stdin.close()
            self._proc.wait(timeout=10)

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

"""MMIO stand-ins for tests: a software model of the AXI-Lite slave, and one that injects faults.

``SoftCoreMMIO`` answers the register map (qpolicy_hw/register_map.py) with the ``int`` reference, so the
real :class:`~qpolicy_hw.axi.PolicyCoreDriver` and the ``pynq`` backend run against it without Verilator.
``FaultyMMIO`` breaks chosen inferences the ways a real FPGA can fail.
"""
from __future__ import annotations

import time

import numpy as np

from qpolicy_hw.bundle import signed_range
from qpolicy_hw.register_map import CORE_ID, CTRL_DONE, CTRL_START, bundle_hash, layout
from qpolicy_hw.runtime.int_backend import IntegerPolicy


class SoftCoreMMIO:
    def __init__(self, bundle, latency: int = 5):
        self.reference = IntegerPolicy(bundle)
        self.n_in, self.n_out = bundle.obs_dim, bundle.act_dim
        self.in_bits = bundle.bits["input"]
        self.regs = layout(self.n_in, self.n_out)
        self.offsets = {v: k for k, v in self.regs.items()}
        self.values = {"ID": CORE_ID, "N_IN": self.n_in, "N_OUT": self.n_out, "LATENCY": latency, "CYCLES": 0,
                       "BUNDLE_HASH": bundle_hash(bundle.digest), "CTRL": 0}
        self.inputs = np.zeros(self.n_in, dtype=np.int64)
        self.outputs = np.zeros(self.n_out, dtype=np.int64)
        self.inferences = 0

    def _signed(self, value: int, bits: int) -> int:
        value &= (1 << bits) - 1
        return value - (1 << bits) if value >> (bits - 1) else value

    def write(self, offset: int, value: int) -> None:
        name = self.offsets[offset]
        if name.startswith("IN") and name[2:].isdigit():
            self.inputs[int(name[2:])] = self._signed(value, self.in_bits)
        elif name == "CTRL" and value & CTRL_START:
            self.inferences += 1
            self.outputs = self.reference.codes(self.inputs[None])[0]
            self.values["CYCLES"] = self.values["LATENCY"] + 1
            self.values["CTRL"] = CTRL_DONE

    def read(self, offset: int) -> int:
        name = self.offsets[offset]
        if name.startswith("OUT") and name[3:].isdigit():
            return int(self.outputs[int(name[3:])]) & 0xFFFFFFFF
        return self.values[name]


class FaultyMMIO(SoftCoreMMIO):
    """``faults`` maps an inference number (1-based) to 'hang', 'garbage', 'oserror', 'wrong' or 'slow' (a
    working core behind a slow bus or a preempted host: each read takes 3 ms, DONE comes at LATENCY reads)."""

    def __init__(self, bundle, faults: dict[int, str]):
        super().__init__(bundle)
        self.faults = {int(k): v for k, v in faults.items()}
        self.out_hi = signed_range(bundle.bits["output"])[1]

    def _fault(self) -> str | None:
        return self.faults.get(self.inferences)

    def write(self, offset: int, value: int) -> None:
        super().write(offset, value)
        if self.offsets[offset] == "CTRL" and value & CTRL_START:
            if self._fault() == "hang":
                self.values["CTRL"] = 0                       # DONE never comes
            elif self._fault() == "slow":
                self.values["CTRL"], self.reads_to_done = 0, self.values["LATENCY"]
            elif self._fault() == "wrong":
                self.outputs = self.outputs.copy()
                self.outputs[0] += 1 if self.outputs[0] < self.out_hi else -1   # in range: only the shadow sees it

    def read(self, offset: int) -> int:
        name = self.offsets[offset]
        if self._fault() == "oserror" and name.startswith("OUT"):
            raise OSError(5, "Input/output error")
        if self._fault() == "garbage" and name.startswith("OUT"):
            return 0x7FFFFFFF
        if self._fault() == "slow" and name == "CTRL":
            time.sleep(0.003)
            self.reads_to_done -= 1
            if self.reads_to_done <= 0:
                self.values["CTRL"] = CTRL_DONE
        return super().read(offset)

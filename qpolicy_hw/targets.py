"""FPGA targets, defined once: part, clock and capacity (for the capacity check and the reports)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    name: str
    part: str
    clock_mhz: float
    luts: int
    ffs: int
    dsps: int
    bram36: int
    description: str

    def holds(self, resources: dict) -> bool:
        """Whether a core with these Yosys counts fits: LUT + INV cells (the upper bound, as Vivado may
        need a LUT1 per inverter) and flip-flops within the part."""
        return resources["LUT_upper_bound"] <= self.luts and resources["FF"] <= self.ffs


TARGETS = {
    "xc7a15t": Target("xc7a15t", "xc7a15tfgg484-1", 100.0, 10_400, 20_800, 45, 25,
                      "Artix-7 XC7A15T-FGG484-1 (the paper's part), out-of-context IP core"),
    "pynq-z2": Target("pynq-z2", "xc7z020clg400-1", 100.0, 53_200, 106_400, 220, 140,
                      "Zynq-7000 XC7Z020 on the PYNQ-Z2 board, overlay behind AXI-Lite"),
}

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
    board_part: str = ""
    """Vivado's board part, for a board target (its presets: DDR, MIO, clocks)."""

    def holds(self, resources: dict, margin: float = 1.0) -> bool:
        """Whether a core with these Yosys counts fits ``margin`` of the part: LUT + INV cells (the upper
        bound, as Vivado may need a LUT1 per inverter), flip-flops, DSP48 and BRAM36."""
        return (resources["LUT_upper_bound"] <= margin * self.luts and resources["FF"] <= margin * self.ffs
                and resources.get("DSP", 0) <= self.dsps and resources.get("BRAM", 0) <= self.bram36)

    def misses(self, resources: dict, margin: float = 1.0) -> str:
        """What does not fit, in words ('' when everything does)."""
        rows = [("LUT + INV", resources["LUT_upper_bound"], margin * self.luts), ("FF", resources["FF"], margin * self.ffs),
                ("DSP", resources.get("DSP", 0), self.dsps), ("BRAM36", resources.get("BRAM", 0), self.bram36)]
        return ", ".join(f"{name} {have:g} > {limit:g}" for name, have, limit in rows if have > limit)


FIT_MARGIN = 0.9
"""`--fold auto` keeps LUT + INV and FF within this share of the part, for Vivado's placement and for the
difference between Yosys' counts and Vivado's."""

TARGETS = {
    "xc7a15t": Target("xc7a15t", "xc7a15tfgg484-1", 100.0, 10_400, 20_800, 45, 25,
                      "Artix-7 XC7A15T-FGG484-1 (the paper's part), out-of-context IP core"),
    "pynq-z2": Target("pynq-z2", "xc7z020clg400-1", 100.0, 53_200, 106_400, 220, 140,
                      "Zynq-7000 XC7Z020 on the PYNQ-Z2 board, overlay behind AXI-Lite",
                      board_part="tul.com.tw:pynq-z2:part0:1.0"),
}

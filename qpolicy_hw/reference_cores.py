"""Published hardware figures of the paper's reference cores (not measured here), defined once.

FINN: Kresse & Lampert, L4DC 2026, Table 3 (Vivado post-synthesis, XC7A15T-1 at 100 MHz, power from the
Xilinx Power Estimator, energy = power x latency). DWC: the same authors' differentiable weightless
controllers (arXiv 2512.01467; Vivado OOC place and route, vectorless report_power), a different model class,
as a band from secondary summaries.

``qpolicy hw``'s default objective for the paper's tasks, ``finn``, plans within a FINN core's resources
(:func:`finn_point`); the benches draw both references.
"""
from __future__ import annotations

FINN = {  # task: LUT, FF, BRAM36, DSP, latency us, power W, energy per action nJ
    "Hopper": {"LUT": 2400, "FF": 2000, "BRAM": 0, "DSP": 45, "latency_us": 0.21, "power_w": 0.31, "energy_nj": 65},
    "Humanoid": {"LUT": 2300, "FF": 3100, "BRAM": 1.5, "DSP": 45, "latency_us": 15.4, "power_w": 0.33,
                 "energy_nj": 5100},
    "Walker2d": {"LUT": 1900, "FF": 1600, "BRAM": 2, "DSP": 4, "latency_us": 162.2, "power_w": 0.17,
                 "energy_nj": 28000},
    "Ant": {"LUT": 2700, "FF": 4500, "BRAM": 3, "DSP": 45, "latency_us": 2.3, "power_w": 0.39, "energy_nj": 890},
    "HalfCheetah": {"LUT": 4300, "FF": 4600, "BRAM": 15, "DSP": 11, "latency_us": 243.2, "power_w": 0.33,
                    "energy_nj": 80000},
}
DWC = {"LUT": (800, 3200), "cycles": (2, 3), "BRAM": 0, "DSP": 0, "energy_nj": (1, 2)}
"""Differentiable weightless controllers: 0.8-3.2k LUT, 2-3 cycles, about 1-2 nJ per action (another model
class: logic circuits, not integer MLPs; its measured core excludes the observation encoding and action head)."""


def finn_point(env_id: str) -> dict | None:
    """The Table-3 FINN core of the task ``env_id`` names (``Hopper-v5`` -> Hopper), None for other tasks."""
    from qpolicy_hw.bundle_schema import task_family

    return FINN.get(task_family(env_id))

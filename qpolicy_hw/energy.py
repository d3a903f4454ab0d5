"""Energy per action: an estimate band, not a measurement (there is no power tool here).

The papers' convention: E = total on-chip power x latency, one action at a time (actions not overlapped,
throughput = 1 / latency). The band:

- **low**: the part's static power, ``STATIC_W`` = 0.070 W, times the latency;
- **high**: static power plus a dynamic upper bound, times the latency. The dynamic part is each resource's
  coefficient times its count, scaled by the core's toggle rate over XPE's default 12.5 % (never below 1,
  so the bound never assumes less activity than XPE does) and by the clock over 100 MHz, plus the largest
  residual of the fit below.

**Source of the coefficients**: a non-negative least-squares fit of ``P = static + a LUT + b FF + c DSP``
to the six Xilinx Power Estimator totals that Kresse & Lampert report for their FINN cores on this part at
100 MHz (Table 3: 0.17-0.39 W), against those cores' resource counts. It gives static 0.070 W (the intercept,
the size of XPE's device static for this die), 22.6 uW per LUT, 28.2 uW per FF and 2.83 mW per DSP48, with
residuals within 7 mW. The six points cannot separate block RAM from logic (its fitted coefficient is 0), so
each BRAM36 is charged the DSP figure as an allowance. Toggle rates come from a simulation of the RTL over the
golden vectors
(:func:`~qpolicy_hw.rtl.toggle_rate`).
"""
from __future__ import annotations

STATIC_W = 0.0700
"""The XC7A15T's static on-chip power: the intercept of the fit (module docstring)."""
COEFFICIENTS_W = {"LUT": 22.58e-6, "FF": 28.21e-6, "DSP": 2.829e-3, "BRAM": 2.829e-3}
"""Dynamic W per resource at XPE's default 12.5 % toggle rate and 100 MHz (BRAM: the DSP figure, an allowance)."""
FIT_RESIDUAL_W = 0.007
XPE_DEFAULT_TOGGLE = 0.125
MODEL = ("E = P x latency (one action at a time); P low = static 0.070 W; P high = static + sum(coefficient x count) "
         "x max(toggle / 12.5 %, 1) x clock / 100 MHz + 7 mW")
SOURCE = ("NNLS fit to the six XPE totals of the FINN cores on the XC7A15T at 100 MHz (Kresse & Lampert, L4DC 2026, "
          "Table 3); toggle rate: Icarus Verilog VCD of every signal over the golden vectors")
NOTE = "estimate, not a measurement: Vivado's report_power (with a SAIF from simulation) or a board decides"


def energy_band(resources: dict, latency_cycles: int, clock_mhz: float, toggle_rate: float) -> dict:
    """Power and energy per action, low and high, for a core with these Yosys ``resources``."""
    latency_s = latency_cycles / (clock_mhz * 1e6)
    activity = max(toggle_rate / XPE_DEFAULT_TOGGLE, 1.0) * clock_mhz / 100.0
    counts = {"LUT": resources["LUT_upper_bound"], "FF": resources["FF"], "DSP": resources.get("DSP", 0),
              "BRAM": resources.get("BRAM", 0)}
    dynamic = sum(COEFFICIENTS_W[k] * v for k, v in counts.items()) * activity + FIT_RESIDUAL_W
    low_w, high_w = STATIC_W, STATIC_W + dynamic
    return {"energy_per_action_nj": {"low": round(low_w * latency_s * 1e9, 3), "high": round(high_w * latency_s * 1e9, 3)},
            "power_w": {"low": round(low_w, 4), "high": round(high_w, 4)}, "toggle_rate": round(toggle_rate, 4),
            "latency_us": latency_s * 1e6, "model": MODEL, "source": SOURCE, "note": NOTE}

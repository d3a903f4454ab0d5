"""The core a bundle runs on when no one chose a fold (``fold_cost.default_plan``), built in one place: the
``rtl`` backend, ``verify``'s rungs and the agent's simulated board all take it from here."""
from __future__ import annotations

from pathlib import Path

from qpolicy_hw.bundle import Bundle
from qpolicy_hw.cache import cache_dir

WRAPPERS = {"core": ("rtl", "qpolicy_rtl.json"), "axi": ("agent", "src/qpolicy_axi.v")}
"""What is built: the bare core (streaming testbench) or the core behind the AXI-Lite slave; for each, the
cache folder and the file whose presence marks a finished build."""


def default_plan_for(bundle: Bundle) -> list:
    from qpolicy_hw.core_function import bundle_layers
    from qpolicy_hw.fold_cost import default_plan

    return default_plan(bundle_layers(bundle))


def build_default(bundle: Bundle, out_dir: str | Path, wrapper: str = "core") -> dict:
    """Build the default core (``wrapper`` "core" or "axi") into ``out_dir``; returns the build's info."""
    from qpolicy_hw.axi import build_axi
    from qpolicy_hw.rtl import build_core

    plan = default_plan_for(bundle)
    return build_core(bundle, out_dir, plan) if wrapper == "core" else build_axi(bundle, out_dir, plan=plan)


def default_core_dir(bundle: Bundle, wrapper: str = "core") -> Path:
    """The default core's build in the cache, keyed by the bundle's digest and the plan; built on first use."""
    kind, marker = WRAPPERS[wrapper]
    plan = default_plan_for(bundle)
    spec = "" if all(f.unrolled for f in plan) else "-" + "_".join(map(str, plan))
    out = cache_dir(kind) / (bundle.digest[:16] + spec)
    if not (out / marker).exists():
        build_default(bundle, out, wrapper)
    return out

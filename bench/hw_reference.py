"""The published reference cores the benches compare against (figures in :mod:`qpolicy_hw.reference_cores`),
the dominance test and the figure helper."""
from qpolicy_hw.reference_cores import DWC, FINN  # noqa: F401  (re-exported for the benches)


def dominates(row: dict, finn: dict) -> bool:
    """Whether our core is at most FINN's on LUT (+ INV), FF, BRAM, DSP and latency."""
    return (row["LUT_upper_bound"] <= finn["LUT"] and row["FF"] <= finn["FF"] and row["BRAM"] <= finn["BRAM"]
            and row["DSP"] <= finn["DSP"] and row["latency_cycles"] / row["clock_mhz"] <= finn["latency_us"])


def save_figure(fig, path) -> None:
    """Lay out, write (creating the folder) and close a matplotlib figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)

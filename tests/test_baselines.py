"""The shipped FP32 baselines against the independent peer (Stable-Baselines3 SAC, same budget, our evaluation
protocol): the check that would have caught Ant's slow baseline, which made 'FP32 parity' meaningless."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ROWS = json.loads((ROOT / "bench" / "results" / "fp32_crosscheck.json").read_text())
ROW_KEYS = {"task", "implementation", "seed", "steps", "episodes", "mean", "std"}


def test_every_cross_check_row_has_the_documented_fields():
    for row in ROWS:
        assert ROW_KEYS <= set(row), row
        assert row["episodes"] >= 20 and row["steps"] > 0 and row["std"] >= 0


@pytest.mark.parametrize("task", sorted({r["task"] for r in ROWS if r["implementation"] == "sb3"}))
def test_the_shipped_fp32_baseline_is_not_below_the_peer(task):
    """Acceptance of the cross-check: the shipped baseline's mean (100 episodes, evaluation seed 0) is at least
    the peer's mean minus the larger of the two standard deviations, on the peer's budget."""
    (peer,) = [r for r in ROWS if r["task"] == task and r["implementation"] == "sb3" and r["seed"] == 1000]
    folder = ROOT / "policies" / task.split("-v")[0].lower() / "fp32"
    ours = json.loads((folder / "evaluation.json").read_text())
    provenance = json.loads((folder / "bundle.json").read_text())["provenance"]
    assert ours["env"] == task and ours["episodes"] >= 20 and provenance["steps"] == peer["steps"]
    floor = peer["mean"] - max(peer["std"], ours["std_return"])
    assert ours["mean_return"] >= floor, (f"{task}: shipped FP32 {ours['mean_return']:.1f} < SB3 {peer['mean']:.1f} "
                                          f"- {max(peer['std'], ours['std_return']):.1f}")
    shipped = [r for r in ROWS if r["task"] == task and r.get("source") == str(folder.relative_to(ROOT))]
    assert len(shipped) == 1 and shipped[0]["mean"] == round(ours["mean_return"], 1)   # the row is this bundle's

"""Staged model selection on a synthetic table, evaluation with input noise, and the figures."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from qpolicy_hw.errors import QpolicyError
from qpolicy_hw.runtime import make_policy
from qpolicy_sim.evaluation import NOISE_STREAM, evaluate_bundle, rollout
from qpolicy_train.selection import RESULT_FIELDS, read_results, select

ROOT = Path(__file__).resolve().parent.parent

# mean return per configuration; FP32 is 2700 +- 251 over seeds, so parity means >= 2449
STAGE1 = {8: 2750, 7: 2700, 6: 2650, 5: 2600, 4: 2550, 3: 2500, 2: 2300}           # core bits -> 3
STAGE2 = {256: 2500, 128: 2600, 64: 2470, 32: 2460, 16: 2200}                       # width -> 32
STAGE3 = {8: 2460, 7: 2480, 6: 2470, 5: 2455, 4: 2440, 3: 2000, 2: 1500}            # input bits -> 5


def _rows():
    rows = []
    fp32_seeds = 2700 + np.array([-450, -300, -150, 0, 0, 0, 0, 150, 300, 450])
    for seed, r in enumerate(fp32_seeds):
        rows.append(dict(env_id="Hopper-v5", algo="sac", quantized=False, width=256, input_bits=8, core_bits=8,
                         output_bits=8, seed=seed, mean_return=float(r)))

    def add(width, ib, cb, mean):
        for seed, jitter in enumerate((-20.0, 0.0, 20.0)):  # three seeds around the mean
            rows.append(dict(env_id="Hopper-v5", algo="sac", quantized=True, width=width, input_bits=ib,
                             core_bits=cb, output_bits=8, seed=seed, mean_return=mean + jitter))
    for b, m in STAGE1.items():
        add(256, 8, b, m)
    for w, m in STAGE2.items():
        if w != 256:
            add(w, 8, 3, m)
    for b, m in STAGE3.items():
        if b != 8:
            add(32, b, 3, m)
    return rows


def _write(rows, path):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=RESULT_FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({**r, "steps": 1000, "std_return": 0, "episodes": 10, "run_dir": ""})


def test_selection_picks_the_paper_configuration(tmp_path):
    _write(_rows(), tmp_path / "results.csv")
    decision = select(read_results(tmp_path / "results.csv"))
    fp32 = np.array([2250, 2400, 2550, 2700, 2700, 2700, 2700, 2850, 3000, 3150])
    assert decision["fp32"]["mean"] == pytest.approx(fp32.mean())
    assert decision["fp32"]["std"] == pytest.approx(fp32.std())
    assert decision["selected"] == {"core_bits": 3, "width": 32, "input_bits": 5, "output_bits": 8}
    stage1 = {e["config"]["core_bits"]: e["matches_fp32"] for e in decision["stages"][0]["evidence"]}
    assert stage1[2] is False and stage1[3] is True
    assert all(not s["missing"] and s["complete"] for s in decision["stages"]) and decision["complete"]


def test_selection_keeps_the_default_when_nothing_matches(tmp_path):
    rows = [r for r in _rows() if not r["quantized"] or r["core_bits"] == 8 and r["width"] == 256
            and r["input_bits"] == 8]
    for r in rows:
        if r["quantized"]:
            r["mean_return"] = 100.0
    _write(rows, tmp_path / "results.csv")
    decision = select(read_results(tmp_path / "results.csv"))
    assert decision["selected"]["core_bits"] == 8
    assert decision["stages"][0]["missing"]  # and it says which runs are still needed


def test_selection_needs_fp32_runs(tmp_path):
    _write([r for r in _rows() if r["quantized"]], tmp_path / "results.csv")
    with pytest.raises(QpolicyError, match="no FP32"):
        select(read_results(tmp_path / "results.csv"))


def test_select_cli_from_table(tmp_path):
    _write(_rows(), tmp_path / "results.csv")
    out = subprocess.run([sys.executable, "-m", "qpolicy_cli.main", "select", "--from-table",
                          str(tmp_path / "results.csv"), "--json"], capture_output=True, text=True, cwd=ROOT,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["selected"]["width"] == 32


def test_a_partial_table_gives_a_provisional_decision(tmp_path):
    """A sweep still running: stage 2 lacks two widths, so stages 2 and 3 (and the decision) are provisional."""
    rows = [r for r in _rows() if r["width"] not in (16, 64) or not r["quantized"]]
    _write(rows, tmp_path / "results.csv")
    decision = select(read_results(tmp_path / "results.csv"))
    assert [s["complete"] for s in decision["stages"]] == [True, False, False] and not decision["complete"]
    assert sorted(c["width"] for c in decision["stages"][1]["missing"]) == [16, 64]
    out = subprocess.run([sys.executable, "-m", "qpolicy_cli.main", "select", "--from-table",
                          str(tmp_path / "results.csv")], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "provisional (stage 2 lacks 2 configurations): width 32" in out.stdout


def test_noise_is_added_to_the_normalized_observation_exactly(bundle_factory):
    policy = make_policy(bundle_factory(), "int")
    seed, sigma = 5, 0.3
    seen = []
    rollout(policy, "Hopper-v5", episodes=2, seed=seed, noise=sigma,
            on_step=lambda obs, x, action: seen.append((obs.copy(), x.copy(), action.copy())))
    rng = np.random.default_rng((seed, NOISE_STREAM))
    for obs, x, action in seen:
        clean = policy.normalize(obs)
        expected = (clean + sigma * rng.standard_normal(clean.shape)).astype(np.float32)
        assert np.array_equal(x, expected)
        assert np.array_equal(action, policy.act_normalized(expected))
    assert len(seen) > 2


def test_zero_noise_is_the_plain_policy_and_runs_repeat(bundle_factory):
    policy = make_policy(bundle_factory(), "int")
    seen = []
    first = rollout(policy, "Hopper-v5", 2, seed=9, noise=0.0,
                    on_step=lambda obs, x, action: seen.append((obs, x, action)))
    assert all(np.array_equal(x, policy.normalize(obs)) and np.array_equal(a, policy.act(obs))
               for obs, x, a in seen)
    assert rollout(policy, "Hopper-v5", 2, seed=9) == first


@pytest.mark.parametrize("episodes, noise, message", [(0, 0.0, "episodes=0"), (1, -0.1, "noise=-0.1"),
                                                      (1, float("nan"), "noise=nan")])
def test_eval_rejects_bad_arguments(bundle_factory, episodes, noise, message):
    with pytest.raises(QpolicyError, match=message):
        evaluate_bundle(str(bundle_factory()), episodes=episodes, noise=noise)


def test_eval_cli_json(bundle_factory):
    path = bundle_factory()
    out = subprocess.run([sys.executable, "-m", "qpolicy_cli.main", "eval", str(path), "--episodes", "2",
                          "--backend", "int", "--noise", "0.1", "--seed", "3", "--json"],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"env", "episodes", "mean_return", "std_return", "backend"} <= set(result)
    assert result["env"] == "Hopper-v5" and result["episodes"] == 2 and result["backend"] == "int"
    assert result["mean_return"] == pytest.approx(np.mean(result["returns"]))


def test_figures_are_drawn(tmp_path, bundle_factory):
    from qpolicy_sim.evaluation import noise_table
    from qpolicy_train.plots import plot_bit_sweep, plot_curves, plot_noise, plot_selection

    _write(_rows(), tmp_path / "results.csv")
    png = plot_bit_sweep(tmp_path / "results.csv", tmp_path / "bits.png")
    assert png.stat().st_size > 10_000
    assert plot_selection(tmp_path / "results.csv", tmp_path / "stages.png").stat().st_size > 10_000
    rows = noise_table([("q", str(bundle_factory()))], [0.0, 0.5], 1, 0, str(tmp_path / "noise.csv"))
    assert [r["sigma"] for r in rows] == [0.0, 0.5]
    assert plot_noise(tmp_path / "noise.csv", tmp_path / "noise.png").stat().st_size > 10_000
    log = tmp_path / "progress.csv"
    log.write_text("global_step,episode,episodic_return,eval_mean,eval_std,alpha,sps\n"
                   "500,3,120.5,,,0.2,\n1000,6,,210.0,12.5,0.19,40.0\n2000,11,,330.0,20.0,0.18,41.0\n")
    assert plot_curves({"run": log}, tmp_path / "curves.png", reference=300).stat().st_size > 10_000
    log.write_text("global_step,episode,episodic_return,eval_mean,eval_std,alpha,sps\n500,3,120.5,,,0.2,\n")
    with pytest.raises(ValueError, match="no evaluation rows"):
        plot_curves({"run": log}, tmp_path / "none.png")

"""Trust (signed bundles, pinned digests), generated text that no bundle string can escape, the user's own
environment module, and commands that never lose a user's files."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from qpolicy_hw.bundle import load_bundle
from qpolicy_hw.errors import BundleError, QpolicyError
from qpolicy_hw.trust import SIGNATURE_FILE, TrustPolicy, generate_key_pair, sign_bundle
from tests.hostile_corpus import rehash

ROOT = Path(__file__).resolve().parent.parent


def cli(*argv, cwd=ROOT, timeout=300):
    return subprocess.run([sys.executable, "-m", "qpolicy_cli.main", *map(str, argv)], capture_output=True,
                          text=True, cwd=cwd, timeout=timeout)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from qpolicy_train.training import train
    from tests.test_training import args_for

    run = tmp_path_factory.mktemp("run") / "run"
    train(args_for(run))
    return run


@pytest.fixture
def keys(tmp_path):
    generate_key_pair(tmp_path / "k.pem", tmp_path / "k.pub.pem")
    generate_key_pair(tmp_path / "other.pem", tmp_path / "other.pub.pem")
    return tmp_path / "k.pem", tmp_path / "k.pub.pem", tmp_path / "other.pub.pem"


# --- trust -----------------------------------------------------------------------------------------------
def test_a_signed_bundle_is_served_and_unsigned_or_rehashed_copies_are_refused_before_compiling(
        bundle_factory, keys, tmp_path, monkeypatch):
    from qpolicy_hw.runtime import compiled, make_policy

    private, public, other_public = keys
    bundle = load_bundle(bundle_factory())
    sign_bundle(bundle.path, private, bundle.digest)
    trust = TrustPolicy((str(public),))
    assert make_policy(bundle.path, "int", trust=trust).act(np.zeros(bundle.obs_dim)).shape == (bundle.act_dim,)

    builds = []
    monkeypatch.setattr(compiled, "compiled_act", lambda *a, **k: builds.append(a) or (None, "numpy"))
    unsigned = Path(shutil.copytree(bundle.path, tmp_path / "unsigned"))
    (unsigned / SIGNATURE_FILE).unlink()
    with pytest.raises(BundleError, match="unsigned bundle.*trusted key is required"):
        make_policy(unsigned, "int", trust=trust)
    edited = Path(shutil.copytree(bundle.path, tmp_path / "edited"))   # re-hashed after an edit, signature kept
    meta = json.loads((edited / "bundle.json").read_text())
    meta["task"]["safe_action"] = [0.5] * bundle.act_dim
    (edited / "bundle.json").write_text(json.dumps(meta))
    rehash(edited)
    with pytest.raises(BundleError, match="does not verify with any trusted key"):
        make_policy(edited, "int", trust=trust)
    with pytest.raises(BundleError, match="does not verify"):
        make_policy(bundle.path, "int", trust=TrustPolicy((str(other_public),)))
    assert builds == []                                     # nothing was compiled for a refused bundle
    with pytest.raises(BundleError, match="is not the expected"):
        make_policy(edited, "int", trust=TrustPolicy(expected_digest=bundle.digest))
    make_policy(bundle.path, "int", trust=TrustPolicy(expected_digest=bundle.digest.upper()))


def test_trust_options_refuse_bad_keys_and_digests_in_one_line(tmp_path):
    (tmp_path / "junk.pem").write_text("not a key")
    with pytest.raises(QpolicyError, match="not a PEM public key"):
        TrustPolicy((str(tmp_path / "junk.pem"),))
    with pytest.raises(QpolicyError, match="64 hex digits"):
        TrustPolicy(expected_digest="abc")
    with pytest.raises(QpolicyError, match="keys are never overwritten"):
        generate_key_pair(tmp_path / "junk.pem", tmp_path / "x.pub.pem")


def test_ship_signs_and_the_cli_serves_only_trusted_bundles(tiny_run, keys, tmp_path):
    private, public, other_public = keys
    out = tmp_path / "shipped"
    done = cli("ship", tiny_run, "--out", out, "--episodes", "1", "--signing-key", private)
    assert done.returncode == 0, done.stderr
    assert (out / SIGNATURE_FILE).is_file() and (out / "evaluation.json").is_file()
    ok = cli("eval", out, "--episodes", "1", "--trusted-key", public)
    assert ok.returncode == 0, ok.stderr
    refused = cli("eval", out, "--episodes", "1", "--trusted-key", other_public)
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
    assert "does not verify" in refused.stderr


# --- generated text -------------------------------------------------------------------------------------
def test_host_c_and_the_register_header_refuse_a_hostile_string_even_past_loading(bundle_factory):
    from qpolicy_hw.host_c import host_library
    from qpolicy_hw.register_map import c_header

    bundle = load_bundle(bundle_factory())
    bundle.meta["task"]["env_id"] = "Hopper-v5 */ int x; /*"       # as if loading had been bypassed
    with pytest.raises(BundleError, match="not a Gymnasium id"):
        host_library(bundle, 5)
    with pytest.raises(BundleError, match="64 lowercase hex"):
        c_header(11, 3, 6, 8, 5, "*/ int x; /*" + "0" * 52)


def test_the_hand_off_readme_quotes_a_hostile_folder_name_for_the_shell(bundle_factory, tmp_path):
    from qpolicy_hw.hw_project import handoff_readme

    hostile = tmp_path / "b; touch MARKER; echo $(touch MARKER2)"
    shutil.copytree(bundle_factory(), hostile)
    bundle = load_bundle(hostile)
    report = {"latency_cycles": 5, "resources": {"LUT": 1, "INV": 0, "FF": 1, "DSP": 0, "BRAM": 0}, "clock_mhz": 100.0,
              "timing": {"estimated_critical_path_ns": 5.0, "logic_levels": 6}, "power": None}
    text = handoff_readme("pynq-z2", bundle, report, tmp_path / "out dir")
    shell = [line for line in text.splitlines() if line.startswith(("mkdir", "qpolicy verify", "python -c"))]
    assert len(shell) == 3
    work = tmp_path / "work"
    work.mkdir()
    for line in shell:
        subprocess.run(["bash", "-c", line.split("#")[0].replace("qpolicy verify", "echo").replace(
            "python -c", "echo")], cwd=work, capture_output=True, timeout=30)
    assert not (work / "MARKER").exists() and not (work / "MARKER2").exists()
    assert (work / hostile.name / "overlay").is_dir()          # the literal name, as one argument


def test_a_bundle_string_reaches_no_tcl(bundle_factory, tmp_path):
    from qpolicy_hw.hw_project import OOC_TCL, OVERLAY_TCL

    for template in (OOC_TCL, OVERLAY_TCL):
        fields = {name for _, name, _, _ in __import__("string").Formatter().parse(template) if name}
        assert not fields & {"env_id", "bundle", "path", "digest", "name"}, fields


# --- the user's own environment --------------------------------------------------------------------------
def test_env_module_imports_only_what_the_user_named(tmp_path, monkeypatch):
    from qpolicy_sim.envs import make_env

    (tmp_path / "my_robot_pkg.py").write_text(
        "import gymnasium as gym\nfrom pathlib import Path\n"
        f"Path({str(tmp_path / 'imported')!r}).touch()\n"
        "gym.register('QpolicyTestRobot-v0', entry_point='gymnasium.envs.mujoco.hopper_v5:HopperEnv')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(QpolicyError, match="no environment 'QpolicyTestRobot-v0'.*--env-module"):
        make_env("QpolicyTestRobot-v0")
    assert not (tmp_path / "imported").exists()
    with pytest.raises(QpolicyError, match="not a Gymnasium id"):
        make_env("my_robot_pkg:QpolicyTestRobot-v0")         # the module: form never imports
    assert not (tmp_path / "imported").exists()
    make_env("QpolicyTestRobot-v0", env_module="my_robot_pkg").close()
    assert (tmp_path / "imported").exists()
    with pytest.raises(QpolicyError, match="not a dotted Python module name"):
        make_env("Hopper-v5", env_module="os; import x")


# --- commands that never lose files ----------------------------------------------------------------------
def test_ship_refuses_a_folder_it_would_damage_and_replaces_only_a_previous_ship(tiny_run, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    for i in range(25):
        (other / f"policy{i}.json").write_text("{}")
    refused = cli("ship", tiny_run, "--out", other, "--episodes", "1")
    assert refused.returncode == 2 and "not a previous ship" in refused.stderr
    assert len(list(other.iterdir())) == 25
    for target in (tiny_run, tiny_run / "bundle_here"):
        refused = cli("ship", tiny_run, "--out", target, "--episodes", "1")
        assert refused.returncode == 2 and "inside it" in refused.stderr
    assert (tiny_run / "checkpoint.pt").exists() and (tiny_run / "actor.pt").exists()
    shipping = tmp_path / "new.shipping"            # someone's folder that happens to have ship's old staging name
    shipping.mkdir()
    (shipping / "keep.txt").write_text("mine")
    refused = cli("ship", tiny_run, "--out", tmp_path / "new", "--episodes", "0")
    assert refused.returncode == 2 and "--episodes 0" in refused.stderr
    assert (shipping / "keep.txt").read_text() == "mine"
    first = cli("ship", tiny_run, "--out", tmp_path / "new", "--episodes", "1")
    again = cli("ship", tiny_run, "--out", tmp_path / "new", "--episodes", "1")   # over a previous ship
    assert first.returncode == 0 and again.returncode == 0, again.stderr
    assert (tmp_path / "new" / "bundle.json").is_file() and (shipping / "keep.txt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".new.shipping")]


def test_noise_and_eval_check_every_input_before_touching_their_output(tmp_path):
    csv = tmp_path / "noise.csv"
    csv.write_text("precious\n")
    for extra in (["--sigmas", "nan"], ["--sigmas", "-1"], ["--episodes", "0"]):
        refused = cli("noise", "s=policies/hopper/selected", "--out", csv, *extra)
        assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    refused = cli("noise", "s=/nonexistent/bundle", "--out", csv)
    assert refused.returncode == 2
    assert csv.read_text() == "precious\n"
    out = tmp_path / "e.json"
    out.write_text("precious")
    refused = cli("eval", "/nonexistent/bundle", "--out", out)
    assert refused.returncode == 2 and out.read_text() == "precious"


@pytest.mark.parametrize("argv, message", [
    (["--total-timesteps", "abc"], "--total-timesteps"),
    (["--bogus"], "Unrecognized options: --bogus"),
])
def test_train_argument_errors_are_one_line(argv, message, tmp_path):
    out = cli("train", *argv, "--out-dir", tmp_path / "run")
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert message in out.stderr and "╭" not in out.stderr
    assert not (tmp_path / "run").exists()


def test_demo_with_a_trusted_key_refuses_an_unsigned_bundle_before_any_node_starts(bundle_factory, keys, tmp_path):
    _, public, _ = keys
    out = cli("demo", "--policy", bundle_factory(), "--trusted-key", public, "--episodes", "1", "--out",
              tmp_path / "demo", timeout=120)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert "unsigned bundle" in out.stderr and not (tmp_path / "demo" / "policy_server.log").exists()

"""Layering (the int runtime runs without torch/ROS) and the `qpolicy` command's contract."""
from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_int_runtime_imports_neither_torch_nor_rclpy(bundle_factory):
    path = bundle_factory()
    code = (
        "import sys, numpy as np\n"
        "from qpolicy_hw.runtime import make_policy\n"
        f"p = make_policy({str(path)!r}, 'int')\n"
        "p.act(np.zeros(p.obs_dim))\n"
        "bad = [m for m in ('torch', 'brevitas', 'rclpy', 'gymnasium', 'onnx') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def _imports(path: Path) -> set[str]:
    """Top-level names of every module a file imports (at any depth of the file, lazy imports included)."""
    import ast

    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


# What each layer may not import: the flow is qpolicy_train -> qpolicy_hw <- qpolicy_ros, qpolicy_cli on top.
FORBIDDEN = {
    "qpolicy_hw": {"qpolicy_train", "qpolicy_ros", "qpolicy_cli", "qpolicy_sim", "torch", "brevitas", "rclpy",
                   "gymnasium"},
    "qpolicy_sim": {"qpolicy_train", "qpolicy_ros", "qpolicy_cli", "torch", "brevitas", "rclpy"},
    "qpolicy_train": {"qpolicy_ros", "qpolicy_cli", "rclpy"},
    "qpolicy_ros": {"qpolicy_train", "qpolicy_cli", "torch", "brevitas"},
}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_only_flow_one_way(package):
    offenders = sorted(f"{p.relative_to(ROOT)} imports {', '.join(sorted(_imports(p) & FORBIDDEN[package]))}"
                       for p in (ROOT / package).rglob("*.py") if _imports(p) & FORBIDDEN[package])
    assert offenders == []


@pytest.mark.parametrize("package", ["qpolicy_hw", "qpolicy_ros", "qpolicy_sim"])
def test_no_lower_layer_names_training_even_in_a_string(package):
    """A string import (``importlib.import_module("qpolicy_train...")``) would hide an upward dependency
    from the import walk above: the lower layers may not name training at all."""
    offenders = sorted(str(p.relative_to(ROOT)) for p in (ROOT / package).rglob("*.py")
                       if "qpolicy_train" in p.read_text())
    assert offenders == []


def test_the_float_reference_is_found_through_its_registration(bundle_factory):
    from qpolicy_hw.runtime import float_reference, make_policy

    assert hasattr(float_reference(), "FloatPolicy")
    assert make_policy(bundle_factory(), "float").backend == "float"


def test_rclpy_lives_in_the_ros_package_alone():
    offenders = [str(p.relative_to(ROOT)) for pkg in ("qpolicy_train", "qpolicy_hw", "qpolicy_cli", "bench")
                 for p in (ROOT / pkg).rglob("*.py") if "rclpy" in _imports(p)]
    assert offenders == []


def test_verify_without_verilator_skips_the_rtl_rungs_and_says_so(bundle_factory, tmp_path):
    """On a machine without Verilator the RTL rungs are 'skip' with the reason, never a PASS."""
    import os

    path = bundle_factory()
    bin_dir = tmp_path / "bin"          # a PATH with Python and nothing else
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    env = {**os.environ, "PATH": str(bin_dir)}
    cmd = [sys.executable, "-m", "qpolicy_cli.main", "verify", str(path), "--rung", "golden_vs_int",
           "--rung", "rtl_vs_int", "--rung", "axi_driver_vs_int"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert "skip rtl_vs_int: verilator is not installed (apt-get install -y verilator)" in lines
    assert any(line.startswith("skip axi_driver_vs_int:") for line in lines)
    assert lines[-1].startswith("PASS: 1 of 3 rungs ran, 2 skipped")
    only_rtl = subprocess.run(cmd[:5] + ["--rung", "rtl_vs_int", "--json"], capture_output=True, text=True, cwd=ROOT, timeout=120, env=env)
    result = json.loads(only_rtl.stdout)
    assert only_rtl.returncode == 1 and result["ran"] == 0 and not result["pass"]
    assert result["checks"]["rtl_vs_int"]["status"] == "skip"


def test_verify_json_has_the_documented_shape(bundle_factory):
    path = bundle_factory()
    out = subprocess.run([sys.executable, "-m", "qpolicy_cli.main", "verify", str(path), "--json"],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["bundle"] == str(path)
    for rung in ("float_vs_int", "qonnx_vs_float", "golden_vs_int"):
        assert isinstance(result["checks"][rung]["mismatches"], int)
        assert result["checks"][rung]["status"] == "pass"
    assert result["ran"] + result["skipped"] == len(result["checks"]) and result["verdict"].startswith("PASS")
    assert result["checks"]["float_vs_int"]["codes"] >= 10_000
    assert result["checks"]["golden_vs_int"]["mismatches"] == 0


@pytest.mark.parametrize("argv, message", [
    (["export", "/nonexistent/run", "--out", "/tmp/x"], "no checkpoint at /nonexistent/run"),
    (["train", "--env-id", "Pong-v5"], "Gymnasium has no environment 'Pong-v5'"),
    (["train", "--env-id", "CartPole-v1", "--out-dir", "{tmp}/cartpole"], "CartPole-v1: the action space is Discrete"),
    (["train", "--core-bits", "0"], "core_bits=0: bit widths must be integers in [2, 16]"),
    (["train", "--input-bits", "17"], "input_bits=17"),
    (["train", "--width", "0"], "width=0: hidden width must be a positive integer"),
    (["train", "--out-dir", "/proc/qpolicy"], "cannot write to output directory /proc/qpolicy"),
    (["frobnicate"], "unknown command 'frobnicate'"),
    (["eval", "policies/hopper/selected", "--episodes", "1", "--out", "/proc/qpolicy/e.json"],
     "/proc/qpolicy/e.json: No such file or directory"),
    (["noise", "s=policies/hopper/selected", "--episodes", "1", "--sigmas", "0", "--out", "/proc/qpolicy/n.csv"],
     "/proc/qpolicy/n.csv: No such file or directory"),
    (["demo", "--out", "/proc/qpolicy/demo"], "/proc/qpolicy: No such file or directory"),
    (["hw", "policies/hopper/selected", "--target", "xc7a15t", "--out", "{tmp}/hw", "--latency-cutoff", "-1"],
     "latency cutoff -1.0: the delay budget per pipeline stage must be positive"),
    (["plot", "--curves", "a={tmp}/binary.csv", "--out", "{tmp}/plot"], "codec can't decode"),
    (["plot", "--curves", "a={tmp}/missing.csv", "--out", "{tmp}/plot"], "with an existing file"),
    (["export", "{tmp}/ckpt.pt", "--out", "{tmp}/b"], "args, actor and normalizer must be mappings"),
    (["export", "{tmp}/ckpt.pt", "--out", "{tmp}/b", "--evaluation", "{tmp}/binary.csv"], "cannot read evaluation"),
])
def test_cli_errors_are_one_line(argv, message, tmp_path):
    import torch

    (tmp_path / "binary.csv").write_bytes(b"\xff\xfe\x00 not text")
    torch.save({"args": [1, 2], "actor": {}, "normalizer": {}}, tmp_path / "ckpt.pt")   # args not a mapping
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    out = subprocess.run([sys.executable, "-m", "qpolicy_cli.main", *argv], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert message in out.stderr, out.stderr
    errors = [line for line in out.stderr.splitlines() if "error" in line]
    assert len(errors) == 1, out.stderr
    assert not (tmp_path / "b").exists()


def test_corrupt_checkpoint_is_refused_before_training(tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"\x80\x04 not a checkpoint")
    out = subprocess.run([sys.executable, "-m", "qpolicy_cli.main", "train", "--out-dir", str(tmp_path)],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "corrupt or foreign checkpoint" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_package_xml_and_setup_agree():
    pkg = ET.parse(ROOT / "package.xml").getroot()
    assert pkg.get("format") == "3"
    assert pkg.findtext("name") == "qpolicy"
    assert pkg.find("export/build_type").text == "ament_python"
    deps = {e.text for e in pkg.findall("exec_depend")}
    assert {"rclpy", "std_msgs", "sensor_msgs", "diagnostic_msgs", "launch", "launch_ros"} <= deps
    setup = (ROOT / "setup.py").read_text()
    assert 'PACKAGE = "qpolicy"' in setup and "qpolicy = qpolicy_cli.main:main" in setup
    assert (ROOT / "resource" / "qpolicy").exists()
    assert (ROOT / "ros2_ws" / "src" / "qpolicy").resolve() == ROOT


def test_colcon_builds_the_package_and_its_console_script_runs(tmp_path):
    colcon = Path(sys.executable).parent / "colcon"
    if not colcon.exists():
        pytest.skip("colcon is not installed in this environment (tools/bootstrap.sh installs it)")
    build = subprocess.run([str(colcon), "--log-base", str(tmp_path / "log"), "build",
                            "--base-paths", str(ROOT / "ros2_ws" / "src"), "--build-base", str(tmp_path / "build"),
                            "--install-base", str(tmp_path / "install")],
                           capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert build.returncode == 0, build.stdout + build.stderr
    script = tmp_path / "install" / "qpolicy" / "lib" / "qpolicy" / "qpolicy"
    site = tmp_path / "install" / "qpolicy" / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" \
        / "site-packages"
    assert (tmp_path / "install" / "qpolicy" / "share" / "qpolicy" / "package.xml").exists()
    run = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=60,
                         env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}, cwd=tmp_path)
    assert run.returncode == 0 and "usage: qpolicy" in run.stdout, run.stderr
    where = subprocess.run([sys.executable, "-c", "import qpolicy_cli; print(qpolicy_cli.__file__)"],
                           capture_output=True, text=True, env={"PYTHONPATH": str(site)}, cwd=tmp_path, timeout=60)
    assert where.stdout.strip().startswith(str(site))  # the installed copy, not the checkout


def test_ship_of_a_missing_run_keeps_the_existing_bundle(bundle_factory):
    path = bundle_factory()
    before = sorted(p.name for p in path.iterdir())
    out = subprocess.run([sys.executable, "-m", "qpolicy_cli.main", "ship", "/nonexistent/run", "--out", str(path)],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in path.iterdir()) == before
    assert not path.with_name(path.name + ".shipping").exists()


def test_the_cli_is_wiring_only():
    """main.py holds the command table, the help built from it and the error handling: short, short functions,
    and every command reachable and listed."""
    import ast

    from qpolicy_cli.main import COMMANDS, command, usage

    text = (ROOT / "qpolicy_cli" / "main.py").read_text()
    assert len(text.splitlines()) <= 300
    long = [n.name for n in ast.walk(ast.parse(text)) if isinstance(n, ast.FunctionDef) and n.end_lineno - n.lineno >= 40]
    assert long == []
    for name, entry in COMMANDS.items():
        assert callable(command(name)), name
        assert f"  {name} " in usage() and entry.summary in usage()

"""Layering (the int runtime runs without torch/ROS) and the `qpolicy` command's contract."""
from __future__ import annotations

import json
import re
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


def test_train_and_hw_packages_never_import_rclpy():
    imports_rclpy = re.compile(r"^\s*(import rclpy|from rclpy)", re.MULTILINE)
    offenders = [str(p) for pkg in ("qpolicy_train", "qpolicy_hw") for p in (ROOT / pkg).rglob("*.py")
                 if imports_rclpy.search(p.read_text())]
    assert offenders == []


def test_verify_json_has_the_documented_shape(bundle_factory):
    path = bundle_factory()
    out = subprocess.run([sys.executable, "-m", "qpolicy_cli.main", "verify", str(path), "--json"],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["bundle"] == str(path)
    for rung in ("float_vs_int", "qonnx_vs_float", "golden_vs_int"):
        assert isinstance(result["checks"][rung]["mismatches"], int)
    assert result["checks"]["float_vs_int"]["codes"] >= 10_000
    assert result["checks"]["golden_vs_int"]["mismatches"] == 0


@pytest.mark.parametrize("argv, message", [
    (["export", "/nonexistent/run", "--out", "/tmp/x"], "no checkpoint at /nonexistent/run"),
    (["train", "--env-id", "Pong-v5"], "unknown task 'Pong-v5'"),
    (["train", "--core-bits", "0"], "core_bits=0: bit widths must be integers in [2, 16]"),
    (["train", "--input-bits", "17"], "input_bits=17"),
    (["train", "--width", "0"], "width=0: hidden width must be a positive integer"),
    (["train", "--out-dir", "/proc/qpolicy"], "cannot write to output directory /proc/qpolicy"),
    (["frobnicate"], "unknown command 'frobnicate'"),
])
def test_cli_errors_are_one_line(argv, message):
    out = subprocess.run([sys.executable, "-m", "qpolicy_cli.main", *argv], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert message in out.stderr, out.stderr


def test_corrupt_checkpoint_is_refused_before_training(tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"\x80\x04 not a checkpoint")
    out = subprocess.run([sys.executable, "-m", "qpolicy_cli.main", "train", "--out-dir", str(tmp_path)],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "corrupt checkpoint" in out.stderr


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

"""The node parameters of config/hopper_fpga.yaml, merged per node (no rclpy import).

Both the launch file and ``qpolicy demo`` hand each node one merged set (the file's ``/**`` section,
then the node's own section, then the run's overrides), so nothing depends on how rcl ranks a
wildcard entry against a node-specific one across several parameter files.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

PARAMS_FILE = Path(__file__).resolve().parent.parent / "config" / "hopper_fpga.yaml"


def installed_params_file() -> Path:
    """The parameter file next to this package in a checkout, or in the colcon install's share/."""
    if PARAMS_FILE.exists():
        return PARAMS_FILE
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory("qpolicy")) / "config" / "hopper_fpga.yaml"
    except ImportError:  # pragma: no cover - only without a checkout and without ament
        return PARAMS_FILE


def shared_parameters(params_file: str | Path | None = None) -> dict[str, Any]:
    """The file's ``/**`` section: what every node reads (topic names, QoS, the policy)."""
    data = yaml.safe_load(Path(params_file or installed_params_file()).read_text()) or {}
    return dict((data.get("/**") or {}).get("ros__parameters", {}))


def node_parameters(node_name: str, overrides: dict[str, Any] | None = None,
                    params_file: str | Path | None = None) -> dict[str, Any]:
    data = yaml.safe_load(Path(params_file or installed_params_file()).read_text()) or {}
    merged: dict[str, Any] = {}
    for section in ("/**", node_name, f"/{node_name}"):
        merged.update((data.get(section) or {}).get("ros__parameters", {}))
    merged.update(overrides or {})
    return merged


def write_node_params(node_name: str, out_file: Path, overrides: dict[str, Any] | None = None) -> Path:
    out_file.write_text(yaml.safe_dump({node_name: {"ros__parameters": node_parameters(node_name, overrides)}}))
    return out_file


def ros_arguments(params: dict[str, Any]) -> list[str]:
    """``params`` as ``--ros-args`` overrides (``-p name:=value``, each value in JSON, which YAML reads back as
    the same value): the launch file hands nodes their parameters this way, so launch writes no temporary
    parameter file per run."""
    import json

    args: list[str] = []
    for name, value in params.items():
        if not isinstance(value, (str, int, float, bool)):
            raise ValueError(f"parameter {name}: only scalars are passed as --ros-args, not {type(value).__name__}")
        args += ["-p", f"{name}:={json.dumps(value)}"]
    return args

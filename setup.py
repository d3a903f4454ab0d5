"""ament_python build of the qpolicy package: the three Python packages, the console scripts,
launch/ and config/. ``colcon build`` (from ros2_ws/) and ``pip install -e .`` both use it."""
import os
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "qpolicy"


def shipped_policies() -> list[tuple[str, list[str]]]:
    """Every file of the shipped policies, installed under share/qpolicy/policies/ with the same layout, so
    the launch files' default policy resolves in an installed workspace from any directory."""
    groups: dict[str, list[str]] = {}
    for root, _dirs, files in os.walk("policies"):
        for name in sorted(files):
            groups.setdefault(f"share/{PACKAGE}/{root}", []).append(os.path.join(root, name))
    return sorted(groups.items())

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=["qpolicy_train", "qpolicy_train.*", "qpolicy_hw", "qpolicy_hw.*",
                                    "qpolicy_ros", "qpolicy_ros.*", "qpolicy_cli", "qpolicy_cli.*", "qpolicy_sim", "qpolicy_sim.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
        (f"share/{PACKAGE}/config/train", glob("config/train/*.yaml")),
        (f"share/{PACKAGE}/config/observation_maps", glob("config/observation_maps/*.yaml")),
        *shipped_policies(),
    ],
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="qpolicy developers",
    maintainer_email="qpolicy@example.com",
    description="Quantized continuous-control policies from QAT to an integer-only FPGA core, served over ROS 2.",
    license="Apache-2.0",
    # board: on the PYNQ board only (pynq pins numpy<2 and protobuf 5, which break onnx/qonnx); ray: `qpolicy select --engine ray`
    extras_require={"board": ["pynq==4.0.0"], "ray": ["ray==2.60.0"]},
    entry_points={
        "console_scripts": [
            "qpolicy = qpolicy_cli.main:main",
            "policy_server = qpolicy_ros.policy_server:main",
            "mujoco_bridge = qpolicy_ros.mujoco_bridge:main",
            "bag_recorder = qpolicy_ros.bag_recorder:main",
        ],
        # the float reference lives with training; qpolicy_hw finds it here without naming training code
        "qpolicy.float_reference": ["brevitas = qpolicy_train.float_reference"],
    },
)

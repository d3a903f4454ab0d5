"""The closed loop's launch arguments, and their check before any node starts (no launch import, tested here).

``ros2 launch qpolicy policy_fpga.launch.py episodes:=2.5`` must fail in one line and start nothing:
:func:`check_arguments` turns the launch's strings into typed parameters, or raises
:class:`QpolicyError` naming the argument, and refuses a bundle that cannot drive its environment.
"""
from __future__ import annotations

from typing import Any

from qpolicy_hw.errors import QpolicyError
from qpolicy_hw.runtime import BACKENDS
from qpolicy_ros.bridge_loop import MODES

ARGUMENTS: dict[str, tuple[str | None, str]] = {
    "backend": ("auto", " | ".join(BACKENDS)),
    "policy": (None, "policy bundle directory"),
    "env_id": (None, "environment (empty: the bundle's task)"),
    "mode": (None, "lockstep (deterministic) | realtime (timer at rate_hz)"),
    "rate_hz": (None, "control rate of the realtime loop (0: the task's, 1 / env.dt)"),
    "episodes": (None, "episodes before the bridge stops"),
    "seed": (None, "episode i resets with seed + i"),
    "record": ("false", "also record the loop to a rosbag2 (MCAP) bag at bag_path"),
    "bag_path": ("qpolicy_bag", "where the bag goes when record:=true"),
    "remote_address": (None, "backend remote: the board agent, HOST:PORT"),
    "auth_key": ("", "backend remote: the board agent's shared key file"),
    "trusted_key": ("", "serve only bundles signed by this Ed25519 public key (PEM; comma-separated for several)"),
    "expected_digest": ("", "serve only the bundle with this digest"),
    "env_module": ("", "a package of yours to import first: it registers your Gymnasium environment"),
    "observation_interface": (None, "flat (the observation vector on observation_topic) | standard (the robot's "
                                    "joint_states, mapped by joint name)"),
    "observation_map": (None, "standard: the observation map YAML (empty: the shipped one for the task)"),
    "report_path": (None, "write the bridge's JSON report of the run here (empty: none)"),
}
"""name -> (default, or None for the parameter file's value; description)."""


def _integer(name: str, text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise QpolicyError(f"{name}:={text!r}: expected an integer") from None
    if value < minimum:
        raise QpolicyError(f"{name}:={value}: must be >= {minimum}")
    return value


def check_arguments(raw: dict[str, str]) -> dict[str, Any]:
    """Typed, checked arguments from the launch's strings; the task check runs here too."""
    from qpolicy_ros.task import find_policy, resolve_task

    values: dict[str, Any] = {}
    if raw["backend"] not in BACKENDS:
        raise QpolicyError(f"backend:={raw['backend']!r}: choose one of {', '.join(BACKENDS)}")
    values["backend"] = raw["backend"]
    if raw["mode"] not in MODES:
        raise QpolicyError(f"mode:={raw['mode']!r}: choose lockstep or realtime")
    values["mode"] = raw["mode"]
    values["episodes"] = _integer("episodes", raw["episodes"], 1)
    values["seed"] = _integer("seed", raw["seed"], 0)
    try:
        values["rate_hz"] = float(raw["rate_hz"])
    except ValueError:
        raise QpolicyError(f"rate_hz:={raw['rate_hz']!r}: expected a number") from None
    from qpolicy_ros.bridge_loop import RATE_RANGE_HZ

    low, high = RATE_RANGE_HZ
    if values["rate_hz"] != 0 and not low <= values["rate_hz"] <= high:
        raise QpolicyError(f"rate_hz:={raw['rate_hz']}: must be 0 (the task's rate) or from {low:g} to {high:g} Hz")
    record = raw["record"].strip().lower()
    if record not in ("true", "false"):
        raise QpolicyError(f"record:={raw['record']!r}: expected true or false")
    values["record"] = record == "true"
    values["bag_path"] = raw["bag_path"]
    values["remote_address"] = raw["remote_address"]
    if values["backend"] == "remote":
        from qpolicy_hw.agent import parse_address

        parse_address(values["remote_address"])   # a missing or malformed address fails here
    values["auth_key"] = raw["auth_key"]
    if raw["auth_key"]:
        from qpolicy_hw.agent import read_shared_key

        read_shared_key(raw["auth_key"])
    from qpolicy_hw.bundle import load_bundle
    from qpolicy_hw.trust import TrustPolicy

    trusted = tuple(k.strip() for k in raw["trusted_key"].split(",") if k.strip())
    trust = TrustPolicy(trusted, raw["expected_digest"] or None)   # a bad key or digest fails here
    values["trusted_key"], values["expected_digest"] = ",".join(trusted), trust.expected_digest or ""
    values["policy"] = str(find_policy(raw["policy"]).resolve())
    bundle = load_bundle(values["policy"], trust=trust)   # an untrusted bundle is refused before any node starts
    values["env_id"], values["env_module"] = raw["env_id"], raw["env_module"]
    resolve_task(bundle, values["env_id"], values["rate_hz"],   # the bundle fits its environment
                 env_module=values["env_module"] or None)
    from qpolicy_ros.observation_map import INTERFACES, map_for

    if raw["observation_interface"] not in INTERFACES:
        raise QpolicyError(f"observation_interface:={raw['observation_interface']!r}: choose flat or standard")
    values["observation_interface"], values["observation_map"] = raw["observation_interface"], raw["observation_map"]
    if values["observation_interface"] == "standard":    # a task no robot topic describes is refused here
        map_for(bundle.env_id, values["observation_map"])
    values["report_path"] = raw["report_path"]
    if values["backend"] in ("pynq", "remote"):   # a backend that cannot work is refused before any node starts
        probe_backend(values["policy"], values["backend"], values["remote_address"], values["auth_key"], trust)
    return values


def probe_backend(policy: str, backend: str, address: str, auth_key_file: str, trust) -> None:
    """Build ``backend`` once, as the server would, and let it go: no overlay off the board, or no agent
    listening at ``address`` (or one that refuses the key), raises its one-line reason here."""
    from qpolicy_hw.agent import read_shared_key
    from qpolicy_hw.runtime import make_policy

    policy_obj = make_policy(policy, backend, address=address or None, trust=trust,
                             auth_key=read_shared_key(auth_key_file) if auth_key_file else None)
    close = getattr(policy_obj, "close", None)
    if close is not None:
        close()


def exit_verdict(name: str, returncode: int | None, ended: str, shutting_down: bool) -> tuple[bool, str] | None:
    """What the launch says when node ``name`` exits: ``(False, line)`` fails the launch (a non-zero code, or
    death by a signal: kill -9 is -9), ``(True, line)`` ends it as a success, None says nothing (code 0 while
    the launch already shuts down: the normal end of the other nodes)."""
    if returncode != 0:
        how = f"was killed by signal {-returncode}" if returncode is not None and returncode < 0 \
            else f"failed with exit code {returncode}"
        return False, f"{name} {how}: see its log above"
    if shutting_down:
        return None
    return True, f"{name} finished: {ended}"

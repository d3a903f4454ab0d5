"""The policy input from standard robot topics: a declarative map from ``sensor_msgs/JointState`` (by joint
name) to the observation vector a bundle was trained on. Plain Python, tested without a middleware.

The schema (YAML, one file per task; the shipped ones are ``config/observation_maps/<env_id>.yaml``)::

    env_id: Hopper-v5
    entries:                       # in observation order
      - {joint: rootz, field: position}
      - {joint: rootz, field: velocity, clip: 10.0}
      ...

``field`` is ``position`` or ``velocity``; ``clip`` (optional) bounds the value to ``[-clip, clip]`` as the
Gymnasium task does. Every other key is refused. ``generate`` writes the map of a MuJoCo task from its model
(joint names, the qpos/qvel layout, the task's excluded positions and velocity clip); a test checks the map
against the environment's own observations, value for value.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qpolicy_hw.bundle_schema import task_family
from qpolicy_hw.errors import ObservationError, QpolicyError


def _maps_dir() -> Path:
    """The shipped maps beside the parameter file (a checkout, or the colcon install's share/)."""
    from qpolicy_ros.param_file import installed_params_file

    return installed_params_file().parent / "observation_maps"


MAPS_DIR = _maps_dir()
FIELDS = ("position", "velocity")
INTERFACES = ("flat", "standard")

# what each planar task leaves out and clips (gymnasium/envs/mujoco/<task>_v5.py, _get_obs)
PLANAR_TASKS = {"Hopper": 10.0, "Walker2d": 10.0, "HalfCheetah": None}
FLAT_ONLY = {
    "Ant": "Ant's observation holds contact forces (cfrc_ext), which no robot topic carries: use "
           "observation_interface:=flat",
    "Humanoid": "Humanoid's observation holds com inertia and velocity, actuator and contact forces, which no "
                "robot topic carries: use observation_interface:=flat",
}


@dataclass(frozen=True)
class Entry:
    joint: str
    field: str
    clip: float | None = None


@dataclass(frozen=True)
class ObservationMap:
    env_id: str
    entries: tuple[Entry, ...]

    def build(self, names, positions, velocities) -> np.ndarray:
        """The observation from one ``JointState``: refused in one line (``ObservationError``) when a joint
        is missing, the arrays disagree in length or a value is NaN/Inf."""
        names = list(names)
        if len(positions) != len(names) or (self._needs_velocity and len(velocities) != len(names)):
            raise ObservationError(f"joint_states has {len(names)} names but {len(positions)} position and "
                                   f"{len(velocities)} velocity entries")
        index = {n: i for i, n in enumerate(names)}
        out = np.empty(len(self.entries), np.float64)
        for k, e in enumerate(self.entries):
            i = index.get(e.joint)
            if i is None:
                raise ObservationError(f"joint_states lacks joint {e.joint!r} ({e.field})")
            value = float(positions[i] if e.field == "position" else velocities[i])
            if e.clip is not None:
                value = min(max(value, -e.clip), e.clip)
            out[k] = value
        if not np.all(np.isfinite(out)):
            raise ObservationError("joint_states contains NaN or Inf")
        return out

    @property
    def _needs_velocity(self) -> bool:
        return any(e.field == "velocity" for e in self.entries)

    def to_yaml(self) -> str:
        lines = [f"env_id: {self.env_id}", "entries:"]
        for e in self.entries:
            clip = f", clip: {e.clip!r}" if e.clip is not None else ""
            lines.append(f"  - {{joint: {e.joint}, field: {e.field}{clip}}}")
        return "\n".join(lines) + "\n"


def parse(data: object, source: str) -> ObservationMap:
    """A map from its YAML data, checked key by key."""
    if not isinstance(data, dict) or set(data) != {"env_id", "entries"}:
        raise QpolicyError(f"{source}: an observation map has exactly the keys env_id and entries")
    entries = data["entries"]
    if not isinstance(data["env_id"], str) or not isinstance(entries, list) or not entries:
        raise QpolicyError(f"{source}: env_id must be a string and entries a non-empty list")
    out = []
    for k, e in enumerate(entries):
        if not isinstance(e, dict) or not {"joint", "field"} <= set(e) or set(e) - {"joint", "field", "clip"}:
            raise QpolicyError(f"{source}: entry {k} must have joint and field (and optionally clip), nothing else")
        if not isinstance(e["joint"], str) or e["field"] not in FIELDS:
            raise QpolicyError(f"{source}: entry {k}: joint must be a name and field one of {', '.join(FIELDS)}")
        clip = e.get("clip")
        if clip is not None and (isinstance(clip, bool) or not isinstance(clip, (int, float))
                                 or not math.isfinite(clip) or clip <= 0):
            raise QpolicyError(f"{source}: entry {k}: clip must be a positive number")
        out.append(Entry(e["joint"], e["field"], None if clip is None else float(clip)))
    return ObservationMap(data["env_id"], tuple(out))


def load(path: str | Path) -> ObservationMap:
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise QpolicyError(f"observation map {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise QpolicyError(f"observation map {path}: not YAML ({str(exc).splitlines()[0]})") from None
    return parse(data, str(path))


def map_for(env_id: str, path: str = "") -> ObservationMap:
    """The map a server in ``standard`` mode uses: ``path`` when given, else the shipped one for ``env_id``;
    a task whose observation no robot publishes is refused with the reason."""
    if path:
        m = load(path)
    else:
        family = task_family(env_id)
        if family in FLAT_ONLY:
            raise QpolicyError(FLAT_ONLY[family])
        shipped = MAPS_DIR / f"{env_id.split('/')[-1]}.yaml"
        if not shipped.exists():
            raise QpolicyError(f"no observation map for {env_id}: write one (docs/ros.md, 'Serve your own robot') "
                               "and set observation_map, or use observation_interface:=flat")
        m = load(shipped)
    if m.env_id != env_id:
        raise QpolicyError(f"the observation map is for {m.env_id}, the bundle for {env_id}")
    return m


def generate(env_id: str) -> ObservationMap:
    """The map of a planar Gymnasium MuJoCo task from its model: every joint's position but the excluded
    root x, then every joint's velocity (clipped as the task clips it). Needs gymnasium and mujoco."""
    import gymnasium as gym

    family = task_family(env_id)
    if family in FLAT_ONLY:
        raise QpolicyError(FLAT_ONLY[family])
    if family not in PLANAR_TASKS:
        raise QpolicyError(f"{env_id}: the generator knows Hopper, Walker2d and HalfCheetah; write the map by hand")
    env = gym.make(env_id)
    try:
        u = env.unwrapped
        model = u.model
        joints = sorted(range(model.njnt), key=lambda j: model.jnt_qposadr[j])
        if any(model.jnt_type[j] not in (2, 3) for j in joints):     # slide and hinge: one qpos, one qvel each
            raise QpolicyError(f"{env_id}: a joint with more than one degree of freedom; write the map by hand")
        skip = 1 if u._exclude_current_positions_from_observation else 0
        clip = PLANAR_TASKS[family]
        names = [model.joint(j).name for j in joints]
        entries = [Entry(n, "position") for n in names[skip:]] + [Entry(n, "velocity", clip) for n in names]
    finally:
        env.close()
    return ObservationMap(env_id, tuple(entries))


class FloatingBase:
    """The robot's base as ``nav_msgs/Odometry`` carries it (REP 105): position in the odom frame, orientation
    (x, y, z, w), and the twist in the base frame (linear, angular). From a free joint (Ant, Humanoid: MuJoCo
    gives its linear velocity in the world frame and its angular one in the body frame) or from the planar root
    joints ``rootx``, ``rootz``, ``rooty`` (Hopper, Walker2d, HalfCheetah: a pitch about y). The joints' addresses
    are looked up once, from the model; ``kind`` is None when the model has neither."""

    def __init__(self, model):
        names = [model.joint(j).name for j in range(model.njnt)]
        self.kind: str | None = None
        if model.njnt and model.jnt_type[0] == 0:                      # mjJNT_FREE
            self.kind, self.qpos_at, self.qvel_at = "free", int(model.jnt_qposadr[0]), int(model.jnt_dofadr[0])
        elif {"rootx", "rootz", "rooty"} <= set(names):
            joints = [names.index(n) for n in ("rootx", "rootz", "rooty")]
            self.kind = "planar"
            self.qpos_at = [int(model.jnt_qposadr[j]) for j in joints]
            self.qvel_at = [int(model.jnt_dofadr[j]) for j in joints]

    def __call__(self, qpos, qvel) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        if self.kind == "free":
            a, d = self.qpos_at, self.qvel_at
            w, x, y, z = (float(v) for v in qpos[a + 3:a + 7])
            rot = _rotation(w, x, y, z)
            return (np.asarray(qpos[a:a + 3], np.float64), np.array([x, y, z, w]),
                    rot.T @ np.asarray(qvel[d:d + 3], np.float64), np.asarray(qvel[d + 3:d + 6], np.float64))
        if self.kind == "planar":
            (px, pz, pitch), (vx, vz, wy) = (float(qpos[i]) for i in self.qpos_at), (float(qvel[i]) for i in self.qvel_at)
            rot = _rotation(math.cos(pitch / 2), 0.0, math.sin(pitch / 2), 0.0)
            return (np.array([px, 0.0, pz]), np.array([0.0, math.sin(pitch / 2), 0.0, math.cos(pitch / 2)]),
                    rot.T @ np.array([vx, 0.0, vz]), np.array([0.0, wy, 0.0]))
        return None


def _rotation(w: float, x: float, y: float, z: float) -> np.ndarray:
    """The rotation matrix (body to world) of the unit quaternion ``w + xi + yj + zk``."""
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])

"""The policy input from standard robot topics: a declarative map from ``sensor_msgs/JointState`` (by joint
name), ``nav_msgs/Odometry`` (the floating base) and ``sensor_msgs/Imu`` to the observation vector a bundle
was trained on. Plain Python, tested without a middleware.

The schema (YAML, one file per task; the shipped ones are ``config/observation_maps/<env_id>.yaml``)::

    env_id: Hopper-v5
    entries:                       # in observation order
      - {joint: rootz, field: position}
      - {joint: rootz, field: velocity, clip: 10.0}
      - {base: position_z}         # from /odom (BASE_FIELDS)
      - {imu: angular_velocity_x}  # from /imu (IMU_FIELDS)
      ...

A joint's ``field`` is ``position`` or ``velocity``; ``clip`` (optional, on any entry) bounds the value to
``[-clip, clip]`` as the Gymnasium task does. Every other key is refused. The joint state is what triggers an
action; the odometry and IMU readings it uses must carry stamps within the sync tolerance of its own, else it
gets the safe action with a counted reason (``out_of_sync``, ``missing_message``). ``generate`` writes the map
of a planar MuJoCo task from its model (joint names, the qpos/qvel layout, the task's excluded positions and
velocity clip); a test checks the map against the environment's own observations, value for value.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
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
XYZ = ("x", "y", "z")
BASE_FIELDS = (tuple(f"position_{a}" for a in XYZ) + tuple(f"orientation_{a}" for a in "wxyz") + ("pitch",)
               + tuple(f"linear_{a}" for a in XYZ) + tuple(f"linear_world_{a}" for a in XYZ)
               + tuple(f"angular_{a}" for a in XYZ))
"""``nav_msgs/Odometry`` of the base. Position and orientation in the odom frame; ``pitch`` the rotation about y
of a planar robot; ``linear_*``/``angular_*`` the twist as Odometry carries it, in the base frame (REP 105);
``linear_world_*`` that velocity in the odom frame, as MuJoCo's free and planar root joints report it."""
IMU_FIELDS = (tuple(f"orientation_{a}" for a in "wxyz") + tuple(f"angular_velocity_{a}" for a in XYZ)
              + tuple(f"linear_acceleration_{a}" for a in XYZ))
"""``sensor_msgs/Imu``, in the IMU's own frame as the message carries it."""
SOURCE_FIELDS = {"joint": FIELDS, "base": BASE_FIELDS, "imu": IMU_FIELDS}
SOURCE_TOPIC = {"base": "odom", "imu": "imu"}

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
    """One observation value: a joint's position or velocity (``source`` "joint", ``joint`` its name) or a field
    of the base's odometry or of the IMU (``source`` "base" or "imu")."""

    joint: str
    field: str
    clip: float | None = None
    source: str = "joint"


@dataclass(frozen=True)
class BaseReading:
    """What one ``nav_msgs/Odometry`` says: position, orientation (x, y, z, w), twist in the base frame."""

    position: tuple[float, float, float]
    orientation: tuple[float, float, float, float]
    linear: tuple[float, float, float]
    angular: tuple[float, float, float]
    stamp_s: float = 0.0

    def value(self, name: str) -> float:
        x, y, z, w = self.orientation
        if name == "pitch":
            return 2.0 * math.atan2(y, w)
        kind, _, axis = name.rpartition("_")
        if kind == "linear_world":
            return float((_rotation(w, x, y, z) @ np.asarray(self.linear, np.float64))[XYZ.index(axis)])
        if kind == "orientation":
            return float({"w": w, "x": x, "y": y, "z": z}[axis])
        return float({"position": self.position, "linear": self.linear, "angular": self.angular}[kind][XYZ.index(axis)])


@dataclass(frozen=True)
class ImuReading:
    """What one ``sensor_msgs/Imu`` says: orientation (x, y, z, w), angular velocity, linear acceleration."""

    orientation: tuple[float, float, float, float]
    angular_velocity: tuple[float, float, float]
    linear_acceleration: tuple[float, float, float]
    stamp_s: float = 0.0

    def value(self, name: str) -> float:
        kind, _, axis = name.rpartition("_")
        if kind == "orientation":
            return float(self.orientation[(*XYZ, "w").index(axis)])
        return float(getattr(self, kind)[XYZ.index(axis)])


@dataclass(frozen=True)
class ObservationMap:
    env_id: str
    entries: tuple[Entry, ...]

    @cached_property
    def sources(self) -> frozenset[str]:
        """The message kinds this map reads: "joint", and "base" (odometry) and "imu" where it needs them."""
        return frozenset(e.source for e in self.entries) | {"joint"}

    @cached_property
    def readings(self) -> tuple[str, ...]:
        """The sources besides the joint state ("base", "imu"), in a fixed order; computed once per map."""
        return tuple(sorted(self.sources - {"joint"}))

    def build(self, names, positions, velocities, base: BaseReading | None = None,
              imu: ImuReading | None = None) -> np.ndarray:
        """The observation from one ``JointState`` (and the base's and IMU's readings where the map uses them):
        refused in one line (``ObservationError``) when a joint or a reading is missing, the arrays disagree in
        length or a value is NaN/Inf."""
        names = list(names)
        if len(positions) != len(names) or (self._needs_velocity and len(velocities) != len(names)):
            raise ObservationError(f"joint_states has {len(names)} names but {len(positions)} position and "
                                   f"{len(velocities)} velocity entries")
        readings = {"base": base, "imu": imu}
        for source in self.readings:
            if readings[source] is None:
                raise ObservationError(f"no {SOURCE_TOPIC[source]} message yet")
        index = {n: i for i, n in enumerate(names)}
        out = np.empty(len(self.entries), np.float64)
        for k, e in enumerate(self.entries):
            if e.source == "joint":
                i = index.get(e.joint)
                if i is None:
                    raise ObservationError(f"joint_states lacks joint {e.joint!r} ({e.field})")
                value = float(positions[i] if e.field == "position" else velocities[i])
            else:
                value = readings[e.source].value(e.field)
            if e.clip is not None:
                value = min(max(value, -e.clip), e.clip)
            out[k] = value
        if not np.all(np.isfinite(out)):
            raise ObservationError("the standard messages contain NaN or Inf")
        return out

    @property
    def _needs_velocity(self) -> bool:
        return any(e.source == "joint" and e.field == "velocity" for e in self.entries)

    def to_yaml(self) -> str:
        lines = [f"env_id: {self.env_id}", "entries:"]
        for e in self.entries:
            clip = f", clip: {e.clip!r}" if e.clip is not None else ""
            what = f"joint: {e.joint}, field: {e.field}" if e.source == "joint" else f"{e.source}: {e.field}"
            lines.append(f"  - {{{what}{clip}}}")
        return "\n".join(lines) + "\n"


class StandardInputs:
    """The latest odometry and IMU readings, and the check that they belong to the joint state being served:
    a reading missing, unstamped or further than ``tolerance_s`` from the joint state's stamp is refused."""

    def __init__(self, obs_map: ObservationMap, tolerance_s: float):
        if not (math.isfinite(tolerance_s) and tolerance_s > 0):
            raise QpolicyError(f"sync_tolerance_s={tolerance_s}: must be a positive number of seconds")
        self.map, self.tolerance_s = obs_map, tolerance_s
        self.latest: dict[str, BaseReading | ImuReading | None] = {"base": None, "imu": None}

    def update(self, source: str, reading: BaseReading | ImuReading) -> None:
        self.latest[source] = reading

    def waiting_for(self, stamp_s: float) -> bool:
        """Whether a joint state stamped ``stamp_s`` should wait for a reading still to come (topics arrive in
        any order): one not yet heard, or older than the stamp by more than the tolerance."""
        for source in self.map.readings:
            reading = self.latest[source]
            if reading is None or (stamp_s > 0 and stamp_s - reading.stamp_s > self.tolerance_s):
                return True
        return False

    def observation(self, names, positions, velocities, stamp_s: float) -> np.ndarray:
        for source in self.map.readings:
            reading = self.latest[source]
            if reading is None:
                continue          # ObservationMap.build refuses it: "no ... message yet"
            if stamp_s <= 0 or reading.stamp_s <= 0:
                raise ObservationError(f"out of sync: joint_states and {SOURCE_TOPIC[source]} must both be stamped")
            gap = abs(reading.stamp_s - stamp_s)
            if gap > self.tolerance_s:
                raise ObservationError(f"out of sync: {SOURCE_TOPIC[source]} is {gap * 1e3:.1f} ms from "
                                       f"joint_states (tolerance {self.tolerance_s * 1e3:.1f} ms)")
        return self.map.build(names, positions, velocities, self.latest["base"], self.latest["imu"])


def parse(data: object, source: str) -> ObservationMap:
    """A map from its YAML data, checked key by key."""
    if not isinstance(data, dict) or set(data) != {"env_id", "entries"}:
        raise QpolicyError(f"{source}: an observation map has exactly the keys env_id and entries")
    entries = data["entries"]
    if not isinstance(data["env_id"], str) or not isinstance(entries, list) or not entries:
        raise QpolicyError(f"{source}: env_id must be a string and entries a non-empty list")
    out = []
    for k, e in enumerate(entries):
        if not isinstance(e, dict):
            raise QpolicyError(f"{source}: entry {k} must be a mapping")
        kinds = [s for s in SOURCE_FIELDS if s in e]
        if len(kinds) != 1:
            raise QpolicyError(f"{source}: entry {k} names exactly one of joint, base or imu")
        kind = kinds[0]
        allowed = {"joint", "field", "clip"} if kind == "joint" else {kind, "clip"}
        if (kind == "joint" and "field" not in e) or set(e) - allowed:
            raise QpolicyError(f"{source}: entry {k} must have joint and field (and optionally clip), or base or "
                               "imu (and optionally clip), nothing else")
        name, fieldname = (e["joint"], e["field"]) if kind == "joint" else ("", e[kind])
        if not isinstance(name, str) or fieldname not in SOURCE_FIELDS[kind]:
            what = "joint must be a name and field" if kind == "joint" else kind
            raise QpolicyError(f"{source}: entry {k}: {what} one of {', '.join(SOURCE_FIELDS[kind])}")
        clip = e.get("clip")
        if clip is not None and (isinstance(clip, bool) or not isinstance(clip, (int, float))
                                 or not math.isfinite(clip) or clip <= 0):
            raise QpolicyError(f"{source}: entry {k}: clip must be a positive number")
        out.append(Entry(name, fieldname, None if clip is None else float(clip), kind))
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
    """The rotation matrix (body to world) of the quaternion ``w + xi + yj + zk``, normalized first: a task's
    reset may leave it off unit length (Ant's noise), and MuJoCo rotates by the normalized one."""
    n = math.sqrt(w * w + x * x + y * y + z * z)
    w, x, y, z = w / n, x / n, y / n, z / n
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])

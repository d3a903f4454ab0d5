"""Which task a closed loop runs, decided in one place, before any node starts.

The environment id and the control rate come from the policy bundle (the rate is ``1 / env.dt``, the
step the policy was trained at: 125 Hz for Hopper and Walker2d, 20 Hz for HalfCheetah and Ant, about
66.7 Hz for Humanoid) unless the user overrides them, and a bundle whose observation or action sizes do
not fit the environment is refused in one line.
"""
from __future__ import annotations

from pathlib import Path

from qpolicy_hw.errors import QpolicyError

PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def _roots() -> list[Path]:
    """Where relative bundle paths are looked up: this package's checkout, then the installed share/qpolicy/."""
    roots = [PACKAGE_ROOT]
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
    except ImportError:
        return roots
    try:
        roots.append(Path(get_package_share_directory("qpolicy")))
    except (PackageNotFoundError, OSError):   # not installed with colcon, or no ament environment at all
        pass
    return roots


def shipped_policies() -> list[str]:
    """The short names of the shipped selections (``policies/<name>/selected``)."""
    names = set()
    for root in _roots():
        names.update(p.parent.name for p in (root / "policies").glob("*/selected") if p.is_dir())
    return sorted(names)


def find_policy(policy: str | Path) -> Path:
    """A bundle path as given, else (for a relative one such as the parameter file's default) under this
    package's checkout, else under the installed package's share/qpolicy/ (colcon installs the shipped
    policies there), so the default policy resolves from any working directory. A short name
    (``walker2d``) is the shipped selection of that task. A path that exists nowhere is refused in one line
    that lists the shipped bundles."""
    path = Path(policy)
    if path.is_absolute() or path.exists():
        return path
    for root in _roots():
        for candidate in (root / path, root / "policies" / path / "selected"):
            if candidate.exists():
                return candidate
    raise QpolicyError(f"no policy bundle at {policy!r}; the shipped ones: "
                       + ", ".join(f"{n} (policies/{n}/selected)" for n in shipped_policies()))


def resolve_task(policy, env_id: str = "", rate_hz: float = 0.0, env_module: str | None = None) -> tuple[str, float]:
    """``(env_id, rate_hz)`` for a run of ``policy`` (a bundle path, or a loaded ``Bundle``): the bundle's
    task where ``env_id`` is empty, and the control rate ``rate_hz`` or else the one the bundle records or
    else the environment's ``1/dt``. Raises :class:`QpolicyError` when the bundle cannot drive that
    environment or no rate is known."""
    from qpolicy_hw.bundle import Bundle, load_bundle
    from qpolicy_sim.envs import control_rate_hz, make_env

    bundle = policy if isinstance(policy, Bundle) else load_bundle(find_policy(policy))
    env_id = env_id or bundle.env_id
    env = make_env(env_id, env_module)
    try:
        obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
        if (obs_dim, act_dim) != (bundle.obs_dim, bundle.act_dim):
            raise QpolicyError(f"{bundle.path} is a {bundle.env_id} policy ({bundle.obs_dim} observations, "
                               f"{bundle.act_dim} actions); {env_id} has {obs_dim} and {act_dim}: use a "
                               f"{env_id} bundle or drop the environment override")
        rate = float(rate_hz) if rate_hz and rate_hz > 0 else (bundle.control_rate_hz or control_rate_hz(env))
        if rate is None:
            raise QpolicyError(f"{env_id} has no dt and {bundle.path} records no control rate: give rate_hz "
                               "(--rate-hz)")
    finally:
        env.close()
    from qpolicy_ros.bridge_loop import RATE_RANGE_HZ

    low, high = RATE_RANGE_HZ
    if not low <= rate <= high:
        raise QpolicyError(f"rate {rate:g} Hz: choose a control rate from {low:g} to {high:g} Hz (0: the task's)")
    return env_id, rate

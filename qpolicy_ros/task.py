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


def find_policy(policy: str | Path) -> Path:
    """A bundle path as given, else (for a relative one such as the parameter file's default) under this
    package's checkout, else under the installed package's share/qpolicy/ (colcon installs the shipped
    policies there), so the default policy resolves from any working directory."""
    path = Path(policy)
    if path.is_absolute() or path.exists():
        return path
    if (PACKAGE_ROOT / path).exists():
        return PACKAGE_ROOT / path
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
    except ImportError:
        return path
    try:
        share = Path(get_package_share_directory("qpolicy"))
    except PackageNotFoundError:
        return path
    return share / path if (share / path).exists() else path


def control_rate_hz(env) -> float:
    """The rate a Gymnasium MuJoCo task is stepped at: one action per ``env.unwrapped.dt``."""
    return 1.0 / float(env.unwrapped.dt)


def resolve_task(policy, env_id: str = "", rate_hz: float = 0.0, env_module: str | None = None) -> tuple[str, float]:
    """``(env_id, rate_hz)`` for a run of ``policy`` (a bundle path, or a loaded ``Bundle``): the bundle's
    task and its control rate where the arguments are empty/zero. Raises :class:`QpolicyError` when the
    bundle cannot drive that environment."""
    from qpolicy_hw.bundle import Bundle, load_bundle
    from qpolicy_sim.envs import make_env

    bundle = policy if isinstance(policy, Bundle) else load_bundle(find_policy(policy))
    env_id = env_id or bundle.env_id
    env = make_env(env_id, env_module)
    try:
        obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
        if (obs_dim, act_dim) != (bundle.obs_dim, bundle.act_dim):
            raise QpolicyError(f"{bundle.path} is a {bundle.env_id} policy ({bundle.obs_dim} observations, "
                               f"{bundle.act_dim} actions); {env_id} has {obs_dim} and {act_dim}: use a "
                               f"{env_id} bundle or drop the environment override")
        rate = float(rate_hz) if rate_hz and rate_hz > 0 else control_rate_hz(env)
    finally:
        env.close()
    return env_id, rate

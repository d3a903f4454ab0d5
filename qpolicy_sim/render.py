"""``qpolicy render``: one deterministic episode of a bundle, rendered off-screen to a video or a GIF.

MuJoCo renders through EGL (``MUJOCO_GL=egl``; Mesa's software EGL works without a GPU or a display, the
bootstrap installs it) and imageio writes the file: ``.mp4`` through the PyPI ffmpeg binary
(imageio-ffmpeg), ``.gif`` through Pillow. The episode is the one ``qpolicy eval --seed S --episodes 1``
scores: the same policy call on the same observations, so the return printed is that evaluation's.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from qpolicy_hw.errors import QpolicyError


def render_episode(bundle_path: str | Path, out: str | Path, backend: str = "int", seed: int = 0,
                   width: int = 480, height: int = 360, every: int = 1, fps: float | None = None,
                   max_steps: int = 1000, env_module: str | None = None) -> dict:
    """Render episode ``seed`` of ``bundle_path`` to ``out`` (.mp4 or .gif); returns its return and frames."""
    out = Path(out)
    if out.suffix.lower() not in (".mp4", ".gif"):
        raise QpolicyError(f"{out}: choose a .mp4 or a .gif file")
    if width <= 0 or height <= 0 or every <= 0 or max_steps <= 0:
        raise QpolicyError("width, height, --every and --max-steps must be positive")
    os.environ.setdefault("MUJOCO_GL", "egl")            # before mujoco is imported: off-screen, no display

    from qpolicy_hw.runtime import make_policy
    from qpolicy_sim.envs import make_env
    from qpolicy_sim.video import track_robot, video_writer

    policy = make_policy(bundle_path, backend)
    env = track_robot(make_env(policy.bundle.env_id, env_module, render_mode="rgb_array", width=width, height=height))
    fps = fps or 1.0 / (env.unwrapped.dt * every)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.stem}.partial{out.suffix}")   # moved over ``out`` only when complete
    try:
        writer = video_writer(partial, fps)
    except Exception as exc:
        env.close()
        raise QpolicyError(f"cannot write {out}: {exc}") from None
    total, frames, steps = 0.0, 0, 0
    try:
        obs, _ = env.reset(seed=seed)
        done = False
        while not done and steps < max_steps:
            if steps % every == 0:
                frame = env.render()
                if frame is None:
                    raise QpolicyError("MuJoCo rendered nothing: off-screen rendering needs EGL "
                                       "(apt-get install -y libegl1 libgl1-mesa-dri) or MUJOCO_GL=osmesa")
                writer.append_data(np.asarray(frame))
                frames += 1
            obs, reward, terminated, truncated, _ = env.step(policy.act(obs))
            total += float(reward)
            steps += 1
            done = terminated or truncated
    except (AttributeError, RuntimeError) as exc:   # no GL context: MuJoCo's renderer fails on its first call
        raise QpolicyError(f"off-screen rendering failed ({type(exc).__name__}: {exc}); install EGL "
                           "(apt-get install -y libegl1 libgl1-mesa-dri) or set MUJOCO_GL=osmesa") from None
    except BaseException:
        writer.close()
        env.close()
        partial.unlink(missing_ok=True)
        raise
    writer.close()
    env.close()
    os.replace(partial, out)
    return {"bundle": str(bundle_path), "env_id": policy.bundle.env_id, "backend": policy.backend, "seed": seed,
            "return": total, "steps": steps, "frames": frames, "fps": fps, "out": str(out)}

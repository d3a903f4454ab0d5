"""qpolicy render: an episode off-screen (MuJoCo over EGL) to .gif and .mp4, with the evaluation's return."""
from __future__ import annotations

import os

import gymnasium as gym
import numpy as np
import pytest

from qpolicy_hw.errors import QpolicyError
from qpolicy_hw.runtime import make_policy


def _egl_renders() -> bool:
    os.environ.setdefault("MUJOCO_GL", "egl")
    try:
        env = gym.make("Hopper-v5", render_mode="rgb_array", width=32, height=24)
        env.reset(seed=0)
        ok = env.render() is not None
        env.close()
        return ok
    except Exception:
        return False


needs_egl = pytest.mark.skipif(not _egl_renders(), reason="no off-screen OpenGL (apt-get install -y libegl1 "
                                                          "libegl-mesa0 libgl1-mesa-dri)")


@needs_egl
@pytest.mark.parametrize("suffix", [".gif", ".mp4"])
def test_render_writes_the_episode_with_its_return(bundle_factory, tmp_path, suffix):
    from PIL import Image

    from qpolicy_sim.render import render_episode

    bundle = bundle_factory()
    out = tmp_path / f"episode{suffix}"
    result = render_episode(bundle, out, seed=4, width=64, height=48, every=2, max_steps=40)
    policy, env = make_policy(bundle, "int"), gym.make("Hopper-v5")
    obs, _ = env.reset(seed=4)
    total, steps, done = 0.0, 0, False
    while not done and steps < 40:                     # the same episode, without rendering
        obs, r, term, trunc, _ = env.step(policy.act(obs))
        total, steps, done = total + r, steps + 1, term or trunc
    assert result["return"] == total and result["steps"] == steps
    assert result["frames"] == (steps + 1) // 2 and out.stat().st_size > 1000
    if suffix == ".gif":
        with Image.open(out) as im:
            im.seek(0)
            assert im.size == (64, 48) and np.asarray(im.convert("RGB")).std() > 5   # a picture, not a blank


def test_render_refuses_other_formats(bundle_factory, tmp_path):
    from qpolicy_sim.render import render_episode

    with pytest.raises(QpolicyError, match=r"choose a \.mp4 or a \.gif"):
        render_episode(bundle_factory(), tmp_path / "x.avi")


@needs_egl
@pytest.mark.parametrize("env_id, body", [("Hopper-v5", 2), ("HalfCheetah-v5", 1)])
def test_the_video_camera_follows_the_robot(env_id, body):
    """Gymnasium's renderer resets its camera to free before each frame; ours stays on the task's body (the
    root body where the task names none), so the torso stays in the picture as the robot runs off."""
    import mujoco

    from qpolicy_sim.video import track_robot

    env = track_robot(gym.make(env_id, render_mode="rgb_array", width=32, height=24))
    env.reset(seed=0)
    env.render()
    start = np.array(env.unwrapped.mujoco_renderer.viewer.cam.lookat)
    for _ in range(30):
        env.unwrapped.data.qvel[0] = 5.0          # push the root forward: it travels about 1 m
        env.step(np.zeros(env.action_space.shape))
    env.render()
    cam = env.unwrapped.mujoco_renderer.viewer.cam
    assert cam.type == mujoco.mjtCamera.mjCAMERA_TRACKING and cam.trackbodyid == body
    assert np.array(cam.lookat)[0] - start[0] > 0.3      # the camera moved with it
    env.close()

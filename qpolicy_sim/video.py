"""The one way videos are made: ``qpolicy render`` and ``qpolicy demo --video`` give the same file for an
episode, with a camera that follows the robot."""
from __future__ import annotations

from pathlib import Path

from qpolicy_hw.errors import QpolicyError


def video_writer(path: str | Path, fps: float):
    """An imageio writer for ``path``: .mp4 through the PyPI ffmpeg binary (H.264), .gif through Pillow.
    Frames go to the file as they come (bounded memory). imageio is imported here, only when a video is asked for."""
    import imageio.v2 as imageio

    path = Path(path)
    if path.suffix.lower() == ".mp4":   # block size 4: 240x180 and 480x360 frames need no resizing
        return imageio.get_writer(path, fps=fps, codec="libx264", quality=7, macro_block_size=4)
    if path.suffix.lower() == ".gif":
        return imageio.get_writer(path, mode="I", duration=1000.0 / fps, loop=0)
    raise QpolicyError(f"{path}: choose a .mp4 or a .gif file")


def track_robot(env):
    """``env`` (a Gymnasium MuJoCo environment made with ``render_mode="rgb_array"``) with a camera that follows
    the robot, returned. The v5 tasks name a body to track (``trackbodyid``), but Gymnasium's renderer sets its
    camera back to free before every frame (camera id -1), so a robot that walks well leaves the picture
    within seconds. Here the camera tracks that body (the root body where none is named) at the task's own
    distance and elevation. mujoco is imported only when a video is asked for."""
    import mujoco

    renderer = env.unwrapped.mujoco_renderer
    config = dict(renderer.default_cam_config or {})
    config["type"] = mujoco.mjtCamera.mjCAMERA_TRACKING
    if config.get("trackbodyid", -1) < 0:
        config["trackbodyid"] = 1
    renderer.default_cam_config = config   # applied to the camera when the first frame is rendered
    renderer.camera_id = None              # and kept: with an id, every frame resets the camera's type
    return env

"""TwoLinkReach: the two-link arm of two_link_arm.xml moves its fingertip to a target on the table.

Observation (6): shoulder, elbow, target_x, target_y positions, then shoulder and elbow velocities, all
joint states a robot publishes. Action (2): shoulder and elbow torque commands in [-1, 1]. Reward: minus the
fingertip's distance to the target (m) minus 0.05 |a|^2. Episodes last 100 steps at 50 Hz (2 s).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from gymnasium import utils
from gymnasium.envs.mujoco.mujoco_env import MujocoEnv
from gymnasium.spaces import Box

MODEL = Path(__file__).with_name("two_link_arm.xml")
REACH = (0.05, 0.25)
"""The target's distance from the shoulder (m): inside what the 0.15 + 0.12 m arm reaches."""
CONTROL_WEIGHT = 0.05


class TwoLinkReachEnv(MujocoEnv, utils.EzPickle):
    metadata = {"render_modes": ["human", "rgb_array", "depth_array"], "render_fps": 50}

    def __init__(self, frame_skip: int = 2, **kwargs):
        utils.EzPickle.__init__(self, frame_skip, **kwargs)
        observation_space = Box(low=-np.inf, high=np.inf, shape=(6,), dtype=np.float64)
        MujocoEnv.__init__(self, str(MODEL), frame_skip, observation_space=observation_space,
                           default_camera_config={"distance": 0.9, "elevation": -60.0, "lookat": np.zeros(3),
                                                  "trackbodyid": 0},   # the table: the arm is fixed
                           **kwargs)

    def _get_obs(self) -> np.ndarray:
        return np.concatenate([self.data.qpos[:4], self.data.qvel[:2]]).astype(np.float64)

    def _distance(self) -> float:
        return float(np.linalg.norm(self.data.body("fingertip").xpos[:2] - self.data.body("target").xpos[:2]))

    def step(self, action):
        action = np.asarray(action, dtype=np.float64)
        self.do_simulation(action, self.frame_skip)
        distance = self._distance()
        control = CONTROL_WEIGHT * float(np.square(action).sum())
        if self.render_mode == "human":
            self.render()
        return self._get_obs(), -distance - control, False, False, {"distance": distance, "control_cost": control}

    def reset_model(self) -> np.ndarray:
        qpos = self.init_qpos.copy()
        qpos[:2] += self.np_random.uniform(-0.1, 0.1, 2)
        radius = self.np_random.uniform(*REACH)
        angle = self.np_random.uniform(-np.pi, np.pi)
        qpos[2:4] = radius * np.cos(angle), radius * np.sin(angle)
        qvel = np.zeros_like(self.init_qvel)
        qvel[:2] = self.np_random.uniform(-0.005, 0.005, 2)
        self.set_state(qpos, qvel)
        return self._get_obs()

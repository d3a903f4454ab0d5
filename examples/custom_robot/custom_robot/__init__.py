"""The example robot of docs/own_task.md: importing this package registers its Gymnasium environment.

    PYTHONPATH=examples/custom_robot qpolicy train --env-module custom_robot --env-id custom_robot/TwoLinkReach-v0
"""
from gymnasium.envs.registration import register, registry

ENV_ID = "custom_robot/TwoLinkReach-v0"

if ENV_ID not in registry:
    register(id=ENV_ID, entry_point="custom_robot.arm:TwoLinkReachEnv", max_episode_steps=100)

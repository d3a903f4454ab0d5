"""mujoco_bridge: owns the Gymnasium MuJoCo simulation, publishes observations, applies commands.

``lockstep``: step t waits for the command for observation t (deterministic, for verification).
``realtime``: a timer at the task's control rate applies the latest command; late or missing
commands are counted, and the safe action is held after ``command_timeout_s`` without one.
"""
from __future__ import annotations

import json
import sys
import time

import gymnasium as gym
import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, String

from qpolicy_hw.errors import ObservationError, QpolicyError
from qpolicy_ros.loop_core import LatencyStats, check_command, parse_key, step_key
from qpolicy_ros.params import declare_topics, loop_qos, spin_node
from qpolicy_ros.task import resolve_task

REPUBLISH_AFTER_S = 0.5


class MujocoBridge(Node):
    def __init__(self):
        super().__init__("mujoco_bridge")
        self.topics = declare_topics(self)
        qos = loop_qos(self)
        p = self.declare_parameter
        # the task and its control rate come from the policy bundle unless set (see task.py)
        policy, env_id, rate_hz = p("policy", "").value, p("env_id", "").value, float(p("rate_hz", 0.0).value)
        if policy:
            self.env_id, self.rate_hz = resolve_task(policy, env_id, rate_hz)
        elif env_id and rate_hz > 0:
            self.env_id, self.rate_hz = env_id, rate_hz
        else:
            raise QpolicyError("set policy (a bundle: its task and control rate are used) or both env_id and rate_hz")
        self.mode = p("mode", "lockstep").value
        self.episodes = int(p("episodes", 3).value)
        self.seed = int(p("seed", 0).value)
        self.command_timeout_s = float(p("command_timeout_s", 0.1).value)
        self.lockstep_timeout_s = float(p("lockstep_timeout_s", 5.0).value)
        self.discovery_timeout_s = float(p("discovery_timeout_s", 60.0).value)
        self.report_path = p("report_path", "").value
        self.max_steps = int(p("max_steps", 0).value)
        # start only when this many nodes listen to the observations (2 with a bag recorder)
        self.min_subscribers = int(p("min_observation_subscribers", 1).value)  # 0: no limit; stops a long run early (tests)
        if self.mode not in ("lockstep", "realtime"):
            raise QpolicyError(f"mode={self.mode!r}: choose lockstep or realtime")
        if self.rate_hz <= 0 or self.episodes <= 0:
            raise QpolicyError("rate_hz and episodes must be positive")
        try:
            self.env = gym.make(self.env_id)
        except gym.error.Error as exc:
            raise QpolicyError(f"cannot make {self.env_id!r}: {exc}") from None
        self.low, self.high = self.env.action_space.low, self.env.action_space.high
        self.safe_action = (self.low + self.high) / 2.0
        self.act_dim = self.low.shape[0]
        model = self.env.unwrapped.model
        self.joint_names = [model.joint(i).name for i in range(model.njnt)]

        self.obs_pub = self.create_publisher(JointState, self.topics["observation_topic"], qos)
        self.joint_pub = self.create_publisher(JointState, self.topics["joint_states_topic"], 10)
        self.episode_pub = self.create_publisher(String, self.topics["episode_topic"], 10)
        self.command_sub = self.create_subscription(Float64MultiArray, self.topics["command_topic"], self.on_command, qos)
        self.create_subscription(DiagnosticArray, self.topics["diagnostics_topic"], self.on_diagnostics, 10)

        self.done, self.exit_code = False, 0
        self.started = False
        self.t_start = time.monotonic()
        self.episode, self.step_in_episode = 0, 0
        self.returns: list[float] = []
        self.episode_return = 0.0
        self.latency = LatencyStats()
        self.sent_at: dict[str, float] = {}
        self.pending_key: str | None = None
        self.latest_command: np.ndarray | None = None
        self.latest_key: tuple[int, int] | None = None
        self.latest_at = 0.0
        self.late = self.missing = self.rejected_commands = self.republished = 0
        self.first_sent_at = 0.0
        self.actions: list[list[float]] = []
        self.safe_steps: list[int] = []  # steps that got the safe action (no command in time)
        self.backend = None
        self.create_timer(0.05, self.wait_for_server)

    # --- start-up: wait for the policy server instead of sleeping ----------------------------
    def wait_for_server(self) -> None:
        if self.started or self.done:
            return
        # matched both ways: the server hears our observations *and* our command subscription hears it
        # (a publisher merely present in the graph may not be matched yet: its first commands would be lost)
        if (self.obs_pub.get_subscription_count() >= self.min_subscribers
                and self.command_sub.get_publisher_count() > 0):
            self.started = True
            self.obs, _ = self.env.reset(seed=self.seed)
            self.get_logger().info(f"policy server found; {self.mode} loop on {self.env_id}")
            if self.mode == "realtime":
                self.create_timer(1.0 / self.rate_hz, self.realtime_tick)
                self.publish_observation()
            else:
                self.create_timer(0.05, self.lockstep_watchdog)
                self.publish_observation()
        elif time.monotonic() - self.t_start > self.discovery_timeout_s:
            self.get_logger().error(f"no policy server on {self.topics['command_topic']} after "
                                    f"{self.discovery_timeout_s:.0f} s")
            self.finish(exit_code=3)

    # --- messages ------------------------------------------------------------------------
    def publish_observation(self, repeat: bool = False) -> None:
        key = step_key(self.episode, self.step_in_episode)
        if not repeat:
            self.first_sent_at = time.perf_counter()
        msg = JointState()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = key
        msg.position = np.asarray(self.obs, dtype=np.float64).tolist()
        self.pending_key = key
        self.sent_at[key] = time.perf_counter()
        self.obs_pub.publish(msg)
        data = self.env.unwrapped.data
        js = JointState()
        js.header.stamp = msg.header.stamp
        js.name = self.joint_names
        js.position = data.qpos.tolist()
        js.velocity = data.qvel.tolist()
        self.joint_pub.publish(js)

    def on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name == "qpolicy/policy_server":
                self.backend = status.hardware_id

    def on_command(self, msg: Float64MultiArray) -> None:
        if not self.started or self.done:
            return
        now = time.perf_counter()
        label = msg.layout.dim[0].label if msg.layout.dim else ""
        try:
            action = check_command(msg.data, self.act_dim, self.low, self.high)
        except ObservationError as exc:
            self.rejected_commands += 1
            self.get_logger().warning(f"rejected command {label!r}: {exc}", throttle_duration_sec=1.0)
            return
        if label in self.sent_at:
            self.latency.add(now - self.sent_at.pop(label))
        key = parse_key(label)
        if self.mode == "lockstep":
            if label == self.pending_key:
                self.apply(action)
            return
        # realtime: keep the newest command; a command for an older observation is late
        if key is not None and label != self.pending_key:
            self.late += 1
        if key is None or self.latest_key is None or key >= self.latest_key:
            self.latest_command, self.latest_key, self.latest_at = action, key, time.monotonic()

    # --- stepping ------------------------------------------------------------------------
    def apply(self, action: np.ndarray) -> None:
        self.pending_key = None
        self.actions.append(action.tolist())
        self.obs, reward, terminated, truncated, _ = self.env.step(action)
        self.episode_return += float(reward)
        self.step_in_episode += 1
        if self.max_steps and len(self.actions) >= self.max_steps:
            self.finish()
            return
        if terminated or truncated:
            self.end_episode()
            if self.done:
                return
        self.publish_observation()

    def lockstep_watchdog(self) -> None:
        if self.done or self.pending_key is None:
            return
        waited = time.perf_counter() - self.first_sent_at
        if waited > self.lockstep_timeout_s:
            self.missing += 1
            self.get_logger().warning(f"no command for {self.pending_key} after {waited:.1f} s; "
                                      "applying the safe action", throttle_duration_sec=1.0)
            self.sent_at.pop(self.pending_key, None)
            self.safe_steps.append(len(self.actions))
            self.apply(self.safe_action.copy())
        elif time.perf_counter() - self.sent_at.get(self.pending_key, 0.0) > REPUBLISH_AFTER_S:
            # a message lost while discovery settles: ask again (the server's answer is the same)
            self.republished += 1
            self.publish_observation(repeat=True)

    def realtime_tick(self) -> None:
        if self.done:
            return
        fresh = self.latest_command is not None and time.monotonic() - self.latest_at <= self.command_timeout_s
        if fresh:
            action = self.latest_command
        else:
            self.missing += 1
            self.safe_steps.append(len(self.actions))
            action = self.safe_action.copy()
        self.sent_at = {k: v for k, v in self.sent_at.items() if time.perf_counter() - v < 1.0}
        self.apply(action)

    def end_episode(self) -> None:
        self.returns.append(self.episode_return)
        self.episode_pub.publish(String(data=json.dumps(
            {"episode": self.episode, "return": self.episode_return, "steps": self.step_in_episode,
             "late_commands": self.late, "missing_commands": self.missing})))
        self.get_logger().info(f"episode {self.episode}: return {self.episode_return:.1f} "
                               f"in {self.step_in_episode} steps")
        self.episode += 1
        self.episode_return, self.step_in_episode = 0.0, 0
        if self.episode >= self.episodes:
            self.finish()
            return
        self.obs, _ = self.env.reset(seed=self.seed + self.episode)

    def report(self) -> dict:
        return {"env_id": self.env_id, "mode": self.mode, "rate_hz": self.rate_hz, "seed": self.seed,
                "returns": self.returns,
                "mean_return": float(np.mean(self.returns)) if self.returns else None,
                "latency_us": self.latency.percentiles_us(), "latency_samples_s": self.latency.values,
                "late_commands": self.late, "missing_commands": self.missing,
                "rejected_commands": self.rejected_commands, "republished_observations": self.republished,
                "steps": len(self.actions), "safe_action_steps": self.safe_steps,
                "backend": self.backend, "actions": self.actions}

    def finish(self, exit_code: int = 0) -> None:
        self.done, self.exit_code = True, exit_code
        if self.report_path:
            with open(self.report_path, "w") as f:
                json.dump(self.report(), f)
        self.env.close()


def main(args=None) -> int:
    return spin_node(MujocoBridge, args if args is not None else sys.argv)


if __name__ == "__main__":
    sys.exit(main())

"""mujoco_bridge: owns the Gymnasium MuJoCo simulation, publishes observations, applies commands.

The loop's decisions (lockstep or realtime, keyed commands, timeouts, statistics) are
:class:`qpolicy_ros.bridge_loop.BridgeLoop`; this node only moves messages and keeps time.
"""
from __future__ import annotations

import json
import os
import sys
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from nav_msgs.msg import Odometry
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, String

from qpolicy_hw.errors import ObservationError, QpolicyError
from qpolicy_ros.bridge_loop import RATE_RANGE_HZ, BridgeLoop, Outgoing
from qpolicy_ros.observation_map import INTERFACES, FloatingBase
from qpolicy_ros.params import declare_topics, loop_qos, spin_node
from qpolicy_ros.task import resolve_task
from qpolicy_sim.envs import make_env

WATCHDOG_PERIOD_S = 0.05


class MujocoBridge(Node):
    def __init__(self):
        super().__init__("mujoco_bridge")
        self.topics = declare_topics(self)
        qos = loop_qos(self)
        p = self.declare_parameter
        # the task and its control rate come from the policy bundle unless set (see task.py)
        policy, env_id, rate_hz = p("policy", "").value, p("env_id", "").value, float(p("rate_hz", 0.0).value)
        self.env_module = p("env_module", "").value or None   # the user's package that registers their task
        if policy:
            self.env_id, self.rate_hz = resolve_task(policy, env_id, rate_hz, env_module=self.env_module)
        elif env_id and rate_hz > 0:
            self.env_id, self.rate_hz = env_id, rate_hz
        else:
            raise QpolicyError("set policy (a bundle: its task and control rate are used) or both env_id and rate_hz")
        self.discovery_timeout_s = float(p("discovery_timeout_s", 60.0).value)
        # at the end, how long to wait for the server's diagnostics of the whole run (it sends them at each
        # episode's end and every diagnostics_period_s) before the report is written without them
        self.final_diagnostics_wait_s = float(p("final_diagnostics_wait_s", 2.0).value)
        self.report_path = p("report_path", "").value
        # start only when this many nodes listen to the observations (2 with a bag recorder)
        self.min_subscribers = int(p("min_observation_subscribers", 1).value)
        # standard: the server reads /joint_states (names, positions, velocities), as from a robot
        self.interface = p("observation_interface", "flat").value
        if self.interface not in INTERFACES:
            raise QpolicyError(f"observation_interface={self.interface!r}: choose {' or '.join(INTERFACES)}")
        self.video_path = p("video_path", "").value              # record the run (every video_every-th step)
        self.video_every = int(p("video_every", 4).value)
        self.video, after_step = None, None
        if self.video_path:
            os.environ.setdefault("MUJOCO_GL", "egl")        # off-screen, before MuJoCo's renderer loads
            from qpolicy_sim.video import track_robot

            env = track_robot(make_env(self.env_id, self.env_module, render_mode="rgb_array", width=240, height=180))
            after_step = self.record_frame
        else:
            env = make_env(self.env_id, self.env_module)
        self.loop = BridgeLoop(
            env, mode=p("mode", "lockstep").value, episodes=int(p("episodes", 3).value),
            seed=int(p("seed", 0).value), max_steps=int(p("max_steps", 0).value),  # max_steps 0: no limit
            command_timeout_s=float(p("command_timeout_s", 0.1).value),
            lockstep_timeout_s=float(p("lockstep_timeout_s", 5.0).value),
            record_actions=int(p("record_actions", 10_000).value), after_step=after_step,
            period_s=1.0 / self.rate_hz if self.rate_hz > 0 else None)
        if self.video_path:
            from qpolicy_sim.video import video_writer

            if self.video_every <= 0:
                raise QpolicyError("video_every must be positive")
            self.video = video_writer(self.video_path, self.rate_hz / self.video_every)
        low, high = RATE_RANGE_HZ
        if not low <= self.rate_hz <= high:
            raise QpolicyError(f"rate_hz={self.rate_hz:g}: choose a control rate from {low:g} to {high:g} Hz "
                               "(0: the task's)")
        model = env.unwrapped.model
        # joint_states holds the one-degree-of-freedom joints (slide, hinge), as a robot publishes them; a free
        # base goes out on /odom
        joints = [j for j in range(model.njnt) if model.jnt_type[j] in (2, 3)]
        self.joint_names = [model.joint(j).name for j in joints]
        self.joint_qpos = np.array([model.jnt_qposadr[j] for j in joints], dtype=np.intp)
        self.joint_qvel = np.array([model.jnt_dofadr[j] for j in joints], dtype=np.intp)
        self.base = FloatingBase(model)

        self.obs_pub = self.create_publisher(JointState, self.topics["observation_topic"], qos)
        self.joint_pub = self.create_publisher(JointState, self.topics["joint_states_topic"], qos)
        self.odom_pub = self.create_publisher(Odometry, self.topics["odom_topic"], qos)
        self.episode_pub = self.create_publisher(String, self.topics["episode_topic"], 10)
        self.command_sub = self.create_subscription(Float64MultiArray, self.topics["command_topic"], self.on_command, qos)
        self.create_subscription(DiagnosticArray, self.topics["diagnostics_topic"], self.on_diagnostics, 10)
        self.diag_pub = self.create_publisher(DiagnosticArray, self.topics["diagnostics_topic"], 10)

        self.done, self.exit_code = False, 0
        self.started = False
        self.t_start = time.monotonic()
        self.backend = None
        self.server_max_level, self.server_diagnostics = 0, {}   # what the server reported, for the report
        self.finishing_since: float | None = None   # the run is over; the report waits for fresh diagnostics
        self.create_timer(WATCHDOG_PERIOD_S, self.wait_for_server)

    # --- start-up: wait for the policy server instead of sleeping ----------------------------
    def wait_for_server(self) -> None:
        if self.started or self.done:
            return
        # matched both ways: the server hears our observations *and* our command subscription hears it
        # (a publisher merely present in the graph may not be matched yet: its first commands would be lost)
        if self.interface == "standard":
            heard = (self.joint_pub.get_subscription_count() >= 1
                     and self.obs_pub.get_subscription_count() >= self.min_subscribers - 1)
        else:
            heard = self.obs_pub.get_subscription_count() >= self.min_subscribers
        if heard and self.command_sub.get_publisher_count() > 0:
            self.started = True
            self.get_logger().info(f"policy server found; {self.loop.mode} loop on {self.env_id}")
            if self.loop.mode == "realtime":
                self.create_timer(1.0 / self.rate_hz, self.realtime_tick)
            else:
                self.create_timer(WATCHDOG_PERIOD_S, self.lockstep_watchdog)
            self.publish(self.loop.start(time.perf_counter()))
        elif time.monotonic() - self.t_start > self.discovery_timeout_s:
            self.get_logger().error(f"no policy server on {self.topics['command_topic']} after "
                                    f"{self.discovery_timeout_s:.0f} s")
            self.finish(exit_code=3)

    # --- messages ------------------------------------------------------------------------
    def publish(self, out: Outgoing | None) -> None:
        """Publish the loop's next observation (and the joint states), or finish when the loop is done."""
        episode = self.loop.pop_finished_episode()
        if episode is not None:
            self.episode_pub.publish(String(data=json.dumps(episode)))
            self.get_logger().info(f"episode {episode['episode']}: return {episode['return']:.1f} "
                                   f"in {episode['steps']} steps")
        found = self.loop.pop_degradation()
        if found is not None:
            self.report_degradation(found)
        if self.loop.done:
            self.finish()
            return
        if out is None:
            return
        msg = JointState()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = out.key
        msg.position = out.observation.tolist()
        self.obs_pub.publish(msg)
        data = self.loop.env.unwrapped.data
        # the base first: the joint state is what the server answers, and it finds its odometry waiting
        base = self.base(data.qpos, data.qvel)
        if base is not None:
            odom = Odometry()
            odom.header.stamp, odom.header.frame_id, odom.child_frame_id = msg.header.stamp, "odom", "base_link"
            (px, py, pz), (qx, qy, qz, qw), (vx, vy, vz), (wx, wy, wz) = (map(float, v) for v in base)
            p, o = odom.pose.pose.position, odom.pose.pose.orientation
            p.x, p.y, p.z, o.x, o.y, o.z, o.w = px, py, pz, qx, qy, qz, qw
            lin, ang = odom.twist.twist.linear, odom.twist.twist.angular
            lin.x, lin.y, lin.z, ang.x, ang.y, ang.z = vx, vy, vz, wx, wy, wz
            self.odom_pub.publish(odom)
        js = JointState()
        js.header.stamp = msg.header.stamp
        js.header.frame_id = out.key if self.interface == "standard" else ""   # a robot leaves it empty
        js.name = self.joint_names
        js.position = data.qpos[self.joint_qpos].tolist()
        js.velocity = data.qvel[self.joint_qvel].tolist()
        self.joint_pub.publish(js)

    def report_degradation(self, found) -> None:
        """One line per degraded window (so at most one every ``window`` steps), and the same in /diagnostics."""
        text = f"degraded over the last {found.counts['steps']} steps: {found.message}"
        if found.level == "error":
            self.get_logger().error(text)
        else:
            self.get_logger().warning(text)
        status = DiagnosticStatus(name="qpolicy/mujoco_bridge", hardware_id=self.env_id, message=text,
                                  level=DiagnosticStatus.ERROR if found.level == "error" else DiagnosticStatus.WARN)
        status.values = [KeyValue(key=k, value=str(v)) for k, v in found.counts.items()]
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(msg)

    def on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name == "qpolicy/policy_server":
                self.backend = status.hardware_id
                level = status.level if isinstance(status.level, int) else ord(status.level)
                self.server_max_level = max(self.server_max_level, level)
                self.server_diagnostics = {kv.key: kv.value for kv in status.values}
                if self.finishing_since is not None:
                    self.write_report()

    def on_command(self, msg: Float64MultiArray) -> None:
        if not self.started or self.done:
            return
        label = msg.layout.dim[0].label if msg.layout.dim else ""
        try:
            self.publish(self.loop.on_command(label, msg.data, time.perf_counter()))
        except ObservationError as exc:
            self.get_logger().warning(f"rejected command {label!r}: {exc}", throttle_duration_sec=1.0)

    def lockstep_watchdog(self) -> None:
        missing = self.loop.missing
        self.publish(self.loop.lockstep_watchdog(time.perf_counter()))
        if self.loop.missing > missing:
            self.get_logger().warning(f"no command after {self.loop.lockstep_timeout_s:.1f} s; "
                                      "applied the safe action", throttle_duration_sec=1.0)

    def realtime_tick(self) -> None:
        if not self.done:
            self.publish(self.loop.realtime_tick(time.perf_counter()))

    def record_frame(self, steps: int) -> None:
        if self.video is not None and steps % self.video_every == 0:
            self.video.append_data(self.loop.env.render())

    def report(self) -> dict:
        return {"env_id": self.env_id, "rate_hz": self.rate_hz, "backend": self.backend,
                "server_max_level": self.server_max_level, "server_diagnostics": self.server_diagnostics,
                **self.loop.report()}

    def finish(self, exit_code: int = 0) -> None:
        """End the run. A run that reached the server waits (bounded) for its diagnostics of the whole run."""
        if self.done or self.finishing_since is not None:
            return
        self.exit_code = exit_code
        if self.video is not None:
            self.video.close()
        self.loop.env.close()
        if exit_code != 0 or not self.server_diagnostics or self.final_diagnostics_wait_s <= 0:
            self.write_report()
            return
        self.finishing_since = time.monotonic()
        self.create_timer(WATCHDOG_PERIOD_S, self.finish_tick)

    def finish_tick(self) -> None:
        if not self.done and time.monotonic() - self.finishing_since > self.final_diagnostics_wait_s:
            self.get_logger().warning(f"no diagnostics from the server within {self.final_diagnostics_wait_s:g} s "
                                      "of the run's end; the report holds its last ones")
            self.write_report()

    def write_report(self) -> None:
        if self.done:
            return
        self.done = True
        if self.report_path:
            with open(self.report_path, "w") as f:
                json.dump(self.report(), f)


def main(args=None) -> int:
    return spin_node(MujocoBridge, args if args is not None else sys.argv)


if __name__ == "__main__":
    sys.exit(main())

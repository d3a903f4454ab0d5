"""policy_server: serves actions for observations from a policy bundle (FPGA, or the bit-exact fallback).

A managed (lifecycle) node, as ros2_control controllers and robot stacks expect:

* ``configure`` loads, verifies and self-tests the bundle and builds the backend (a bundle that fails its
  checks leaves the node unconfigured, with the reason in the log);
* ``activate`` serves: every observation gets a command;
* ``deactivate`` stops serving: one safe command goes out, then observations are counted and left unanswered,
  so the bridge or robot holds its safe action;
* ``cleanup`` and ``shutdown`` release the FPGA, the simulator or the agent connection.

With ``autostart`` (the default, and what the launch files and ``qpolicy demo`` use) the node configures and
activates itself at start and exits with code 2 and one line when configuring fails; with ``autostart:=false``
a lifecycle manager (``ros2 lifecycle set /policy_server configure``) drives it.
"""
from __future__ import annotations

import sys
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from nav_msgs.msg import Odometry
from rcl_interfaces.msg import SetParametersResult
from rclpy.lifecycle import LifecycleNode, State, TransitionCallbackReturn
from sensor_msgs.msg import Imu, JointState
from std_msgs.msg import Float64MultiArray, MultiArrayDimension, String

from qpolicy_hw.agent import read_shared_key
from qpolicy_hw.cache import cache_dir
from qpolicy_hw.errors import QpolicyError
from qpolicy_hw.latency import LatencyStats
from qpolicy_hw.runtime import make_policy
from qpolicy_hw.runtime.guard import GuardedPolicy
from qpolicy_hw.trust import TrustPolicy
from qpolicy_ros.loop_core import Counters, RejectionWindow, serve
from qpolicy_ros.observation_map import INTERFACES, BaseReading, ImuReading, StandardInputs, map_for
from qpolicy_ros.params import declare_topics, loop_qos, spin_node
from qpolicy_ros.task import find_policy


class PolicyServer(LifecycleNode):
    def __init__(self):
        super().__init__("policy_server")
        self.topics = declare_topics(self)
        self.qos = loop_qos(self)
        p = self.declare_parameter
        for name, default in (("policy", "policies/hopper/selected"), ("stale_after_s", 0.5),
                              ("diagnostics_period_s", 1.0), ("backend", "auto"), ("shadow_every", 1),
                              ("fpga_retry_after_s", 5.0), ("fpga_max_retries", 3), ("mismatch_log", ""),
                              ("fpga_timeout_s", 0.002), ("remote_address", ""), ("remote_timeout_s", 0.005),
                              ("auth_key", ""), ("trusted_key", ""), ("expected_digest", ""),
                              ("observation_map", ""), ("sync_tolerance_s", 0.004)):
            p(name, default)
        # flat: the observation vector in JointState.position on observation_topic (our bridge's contract);
        # standard: the robot's own joint_states (and /odom, /imu where the map reads them), mapped by name
        # (qpolicy_ros/observation_map.py)
        self.interface = p("observation_interface", "flat").value
        if self.interface not in INTERFACES:
            raise QpolicyError(f"observation_interface={self.interface!r}: choose {' or '.join(INTERFACES)}")
        self.standard: StandardInputs | None = None
        self.pending: JointState | None = None   # standard: a joint state waiting for its odometry or IMU reading
        self.pending_since = 0.0
        self.expiry_timer = None
        self.reading_subs = []                   # /odom and /imu, subscribed only when the map reads them
        autostart = bool(p("autostart", True).value)
        self.policy: GuardedPolicy | None = None
        self.pub = None
        self.bundle_path = ""
        self.rejected = Counters()
        self.fallbacks = 0
        self.latency = LatencyStats()        # server total: the callback, from receipt to publish
        self.transport_in = LatencyStats()   # the observation's stamp to its receipt (one clock on one machine)
        self.served = 0
        self.window = RejectionWindow()      # warns when many observations in a row get the safe action
        self.unserved = 0                    # observations that came while the server was not active
        self.serving = False
        self.done, self.exit_code = False, 0
        self.configure_error = ""
        self.diag_pub = self.create_publisher(DiagnosticArray, self.topics["diagnostics_topic"], 10)
        topic = self.topics["observation_topic" if self.interface == "flat" else "joint_states_topic"]
        self.create_subscription(JointState, topic, self.on_observation, self.qos)
        self.create_timer(float(self.get_parameter("diagnostics_period_s").value), self.publish_diagnostics)
        # and at every episode's end: the bridge's report then holds figures for its whole run, however short
        self.create_subscription(String, self.topics["episode_topic"], lambda _msg: self.publish_diagnostics(), 10)
        self.add_on_set_parameters_callback(self.on_parameters)
        if autostart:
            self.trigger_configure()
            if self.policy is None:          # end the process, loudly, with the reason in one line
                print(f"policy_server: error: {self.configure_error}", flush=True)
                self.done, self.exit_code = True, 2
            else:
                self.trigger_activate()

    # --- lifecycle ----------------------------------------------------------------------------
    def on_configure(self, state: State) -> TransitionCallbackReturn:
        value = self.get_parameter
        try:
            self.bundle_path = str(find_policy(value("policy").value))
            self.stale_after_s = float(value("stale_after_s").value)
            self.guard_options = {"shadow_every": int(value("shadow_every").value),
                                  "retry_after_s": float(value("fpga_retry_after_s").value),
                                  "max_retries": int(value("fpga_max_retries").value),
                                  "mismatch_log": value("mismatch_log").value or None}
            self.fpga_timeout_s = float(value("fpga_timeout_s").value)
            self.remote_address = value("remote_address").value      # backend remote: the board agent
            self.remote_timeout_s = float(value("remote_timeout_s").value)
            auth_key_file = value("auth_key").value                  # the board agent's shared key file
            self.auth_key = read_shared_key(auth_key_file) if auth_key_file else None
            # serve only a bundle signed by a trusted key and/or the one with this digest
            trusted = [k.strip() for k in value("trusted_key").value.split(",") if k.strip()]
            self.trust = TrustPolicy(tuple(trusted), value("expected_digest").value or None)
            if self.fpga_timeout_s <= 0 or self.guard_options["shadow_every"] < 0:
                raise QpolicyError("fpga_timeout_s must be positive and shadow_every >= 0")
            self.policy = self._make(value("backend").value)
            if self.interface == "standard":
                obs_map = map_for(self.policy.bundle.env_id, value("observation_map").value)
                self.standard = StandardInputs(obs_map, float(value("sync_tolerance_s").value))
                if obs_map.readings:   # a reading that never comes must not hold a joint state
                    self.expiry_timer = self.create_timer(self.standard.tolerance_s, self._expire_pending)
                if "base" in obs_map.sources:
                    self.reading_subs.append(self.create_subscription(Odometry, self.topics["odom_topic"],
                                                                      self.on_odometry, self.qos))
                if "imu" in obs_map.sources:
                    self.reading_subs.append(self.create_subscription(Imu, self.topics["imu_topic"], self.on_imu,
                                                                      self.qos))
        except QpolicyError as exc:
            self.get_logger().error(f"configure failed: {exc}")
            self.configure_error = str(exc)
            self._release()          # a backend built before the failing step (e.g. the map) is let go
            return TransitionCallbackReturn.FAILURE
        self.pub = self.create_lifecycle_publisher(Float64MultiArray, self.topics["command_topic"], self.qos)
        int_path = self.policy.reference.act_path if self.policy.reference is not None else "none"
        self.get_logger().info(f"configured {self.bundle_path} with backend {self.policy.backend} "
                               f"(int act: {int_path})")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        result = super().on_activate(state)            # enables the command publisher
        self.serving = True
        self.get_logger().info(f"serving {self.bundle_path} with backend {self.policy.backend}")
        return result

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self.serving = False
        self.pending = None
        self._publish(self.policy.bundle.safe_action, "deactivated")   # the last command: hold still
        self.get_logger().info("deactivated: sent the safe action; observations are no longer answered")
        return super().on_deactivate(state)

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        if self.serving and self.policy is not None:
            self._publish(self.policy.bundle.safe_action, "shutdown")
        self.serving = False
        self._release()
        self.done = True                               # finalized: the process ends (code 0)
        return TransitionCallbackReturn.SUCCESS

    def _release(self) -> None:
        """Let go of the backend (FPGA overlay, Verilated core, agent connection) and the command publisher."""
        policy, self.policy = self.policy, None
        if policy is not None:
            for backend in {id(b): b for b in (policy.primary, policy.reference) if b is not None}.values():
                close = getattr(backend, "close", None)
                if close is not None:
                    close()
        self.standard = None
        self.pending = None
        if self.expiry_timer is not None:
            self.destroy_timer(self.expiry_timer)
            self.expiry_timer = None
        for sub in self.reading_subs:
            self.destroy_subscription(sub)
        self.reading_subs = []
        if self.pub is not None:
            self.destroy_lifecycle_publisher(self.pub)
            self.pub = None

    def _make(self, backend: str) -> GuardedPolicy:
        """The policy for ``backend``, guarded by the int reference; ``auto`` (see ``runtime.BACKENDS``) falls
        back to ``int`` loudly."""
        policy = make_policy(self.bundle_path, backend, address=self.remote_address or None,
                             timeout_s=self.remote_timeout_s, trust=self.trust, auth_key=self.auth_key)
        if getattr(policy, "fallback_reason", None):
            self.fallbacks += 1
            self.get_logger().warning(f"no FPGA backend ({policy.fallback_reason}); serving the bit-exact int fallback")
        if hasattr(policy, "driver"):   # the DONE wait must fit in a control period
            policy.driver.done_timeout_s = self.fpga_timeout_s
        options = dict(self.guard_options)
        options["mismatch_log"] = options["mismatch_log"] or cache_dir("mismatches") / f"{policy.bundle.digest[:16]}.jsonl"
        return GuardedPolicy(policy, notify=self._notify, **options)

    def _notify(self, level: str, message: str) -> None:
        if level == "error":   # one severity per call site: rclpy refuses to change it between calls
            self.get_logger().error(message)
        else:
            self.get_logger().warning(message)
        self.publish_diagnostics()

    def on_parameters(self, params) -> SetParametersResult:
        for p in params:   # an agent's address first, so that backend:=remote in the same call uses it
            if p.name == "remote_address":
                self.remote_address = p.value
        for p in params:
            if p.name == "backend" and self.policy is not None:   # else: taken at the next configure
                try:
                    self.policy = self._make(p.value)  # swapped between two messages: the loop keeps going
                except QpolicyError as exc:
                    return SetParametersResult(successful=False, reason=str(exc))
                self.get_logger().info(f"backend switched to {self.policy.backend}")
        return SetParametersResult(successful=True)

    def _publish(self, action, label: str) -> None:
        out = Float64MultiArray()
        out.layout.dim = [MultiArrayDimension(label=label, size=len(action), stride=len(action))]
        out.data = np.asarray(action, dtype=np.float64).tolist()
        self.pub.publish(out)

    def on_observation(self, msg: JointState) -> None:
        if not self.serving:      # unconfigured or inactive: no command, so the peer holds its safe action
            self.unserved += 1
            return
        standard = self.standard
        if standard is not None and standard.waiting_for(_seconds(msg.header.stamp)):
            previous, self.pending, self.pending_since = self.pending, msg, time.monotonic()
            if previous is not None:   # its reading never came: answered now, with the safe action and a reason
                self._answer(previous)
            return
        self._answer(msg)

    def _expire_pending(self) -> None:
        """A joint state held longer than the sync tolerance is answered (the safe action, with the reason)."""
        msg = self.pending
        if msg is not None and self.serving and time.monotonic() - self.pending_since > self.standard.tolerance_s:
            self.pending = None
            self._answer(msg)

    def _serve_pending(self) -> None:
        msg = self.pending
        if msg is not None and self.serving and not self.standard.waiting_for(_seconds(msg.header.stamp)):
            self.pending = None
            self._answer(msg)

    def _answer(self, msg: JointState) -> None:
        t0 = time.perf_counter()
        stamp = _seconds(msg.header.stamp)
        age = time.time() - stamp if stamp > 0 else None
        if age is not None and age >= 0:
            self.transport_in.add(age)
        standard = self.standard
        values = msg.position if standard is None else (
            lambda: standard.observation(msg.name, msg.position, msg.velocity, stamp))
        action, reason = serve(self.policy, values, age, self.stale_after_s, self.rejected)
        degraded = self.window.add(self.rejected)
        if degraded is not None:
            self.get_logger().warning(f"degraded: {degraded}")
            self.publish_diagnostics()
        if reason is not None:
            self.get_logger().warning(f"rejected observation {msg.header.frame_id!r}: {reason}; "
                                      "sent the safe action", throttle_duration_sec=1.0)
        self._publish(action, msg.header.frame_id)
        self.served += 1
        self.latency.add(time.perf_counter() - t0)
        if self.served == 1:  # peers learn the backend without waiting for the first period
            self.publish_diagnostics()

    def on_odometry(self, msg: Odometry) -> None:
        if self.standard is not None:
            p, o, v, w = msg.pose.pose.position, msg.pose.pose.orientation, msg.twist.twist.linear, msg.twist.twist.angular
            self.standard.update("base", BaseReading((p.x, p.y, p.z), (o.x, o.y, o.z, o.w), (v.x, v.y, v.z),
                                                     (w.x, w.y, w.z), _seconds(msg.header.stamp)))
            self._serve_pending()

    def on_imu(self, msg: Imu) -> None:
        if self.standard is not None:
            o, w, a = msg.orientation, msg.angular_velocity, msg.linear_acceleration
            self.standard.update("imu", ImuReading((o.x, o.y, o.z, o.w), (w.x, w.y, w.z), (a.x, a.y, a.z),
                                                   _seconds(msg.header.stamp)))
            self._serve_pending()

    def publish_diagnostics(self) -> None:
        if self.policy is None:
            status = DiagnosticStatus(name="qpolicy/policy_server", hardware_id="none", level=DiagnosticStatus.WARN,
                                      message="unconfigured: no policy is loaded")
            status.values = [KeyValue(key="unserved", value=str(self.unserved))]
            msg = DiagnosticArray(status=[status])
            msg.header.stamp = self.get_clock().now().to_msg()
            self.diag_pub.publish(msg)
            return
        bundle = self.policy.bundle
        lat = self.latency.percentiles_us()
        inbound = self.transport_in.percentiles_us()
        status = DiagnosticStatus(name="qpolicy/policy_server", hardware_id=self.policy.backend)
        guard = self.policy
        if guard.degraded:
            status.level = DiagnosticStatus.ERROR
            status.message = (f"{guard.primary.backend} failed {guard.faults}x, serving int; last: {guard.last_fault}")
        else:
            on_fpga = guard.backend in ("pynq", "remote")
            status.level = DiagnosticStatus.OK if on_fpga and not guard.faults else DiagnosticStatus.WARN
            status.message = f"backend {guard.backend}; {self.rejected.total} rejected inputs; {guard.faults} faults"
        if not self.serving:
            status.level = max(status.level, DiagnosticStatus.WARN)
            status.message = "inactive: observations are not answered; " + status.message
        values = {"backend": self.policy.backend, "policy": str(bundle.path), "served": self.served,
                  "serving": self.serving, "unserved": self.unserved,
                  "rejected_total": self.rejected.total, "fallbacks": self.fallbacks,
                  "compute_latency_us_p50": lat["p50"], "compute_latency_us_p99": lat["p99"],
                  "transport_in_us_p50": inbound["p50"], "transport_in_us_p99": inbound["p99"]}
        values.update(guard.stats())
        values["bundle_digest"] = bundle.digest
        if bundle.is_integer:
            values.update({f"bits_{k}": v for k, v in bundle.bits.items()})
        values.update({f"rejected_{k}": v for k, v in self.rejected.counts.items()})
        status.values = [KeyValue(key=k, value="" if v is None else str(v)) for k, v in values.items()]
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.status = [status]
        self.diag_pub.publish(msg)


def _seconds(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def main(args=None) -> int:
    return spin_node(PolicyServer, args if args is not None else sys.argv)


if __name__ == "__main__":
    sys.exit(main())

"""The launch description of the closed loop, shared by ``launch/hopper_fpga.launch.py`` (Hopper's shipped
selection by default) and ``launch/policy_fpga.launch.py`` (any bundle: ``policy:=policies/walker2d/selected``).

policy_server (FPGA overlay, or the bit-exact int fallback) and mujoco_bridge run with the parameters of
config/hopper_fpga.yaml (topic names and QoS are defined there, once); the bridge takes the environment id
and the control rate (1 / env.dt) from the bundle unless env_id:= or rate_hz:= override them. Arguments:
[policy:=...] [backend:=auto] [env_id:=] [mode:=lockstep] [rate_hz:=0 (the task's)] [episodes:=3] [seed:=0]
[record:=false] [bag_path:=qpolicy_bag] [auth_key:=] [trusted_key:=] [expected_digest:=] [env_module:=]
[observation_interface:=flat|standard] [observation_map:=] [report_path:=]. The arguments are checked
(``loop_arguments.check_arguments``: types, choices, rates, that the bundle fits its environment, that a pynq
or remote backend can work) before any node starts; a bad one raises inside the launch, so ``ros2 launch``
logs it at ERROR and exits 1 with no node started. A node that fails or is killed fails the launch the same
way, naming it; the bridge ending its run ends the launch with code 0 (``loop_arguments.exit_verdict``).
Without a ROS 2 install, `qpolicy demo` starts the same nodes with the same parameters.
"""
from launch import LaunchDescription
from launch.actions import (
    DeclareLaunchArgument,
    EmitEvent,
    LogInfo,
    OpaqueFunction,
    RegisterEventHandler,
    SetEnvironmentVariable,
)
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch_ros.actions import Node

from qpolicy_hw.errors import QpolicyError
from qpolicy_ros.loop_arguments import ARGUMENTS, check_arguments, exit_verdict
from qpolicy_ros.param_file import node_parameters, ros_arguments


class LoopFailed(QpolicyError):
    """Raised inside the launch: ``ros2 launch`` logs it at ERROR ("Caught exception in launch") and exits 1."""


def _end_when_it_exits(node: Node, name: str, ended: str) -> RegisterEventHandler:
    """End the launch when ``node`` exits: a failure (any code but 0, a kill -9 included) fails the launch
    with one line naming the node; code 0 ends it as a success, saying ``ended`` (nothing once the launch is
    already shutting down: that is the normal end of the other nodes)."""
    def on_exit(event, context):
        verdict = exit_verdict(name, event.returncode, ended, context.is_shutdown)
        if verdict is None:
            return None
        ok, line = verdict
        if not ok:
            raise LoopFailed(line)
        return [LogInfo(msg=line), EmitEvent(event=Shutdown(reason=line))]
    return RegisterEventHandler(OnProcessExit(target_action=node, on_exit=on_exit))


def _nodes(context):
    """The nodes, started only when every argument is valid (else the launch fails in one line, no node)."""
    raw = {name: context.launch_configurations[name] for name in ARGUMENTS}
    a = check_arguments(raw)   # a refused argument raises: ERROR, no node started, ros2 launch exits 1
    server_params = {**node_parameters("policy_server"),
                     **{k: a[k] for k in ("policy", "backend", "remote_address", "auth_key", "trusted_key",
                                          "expected_digest", "observation_interface", "observation_map")}}
    bridge_params = {**node_parameters("mujoco_bridge"),
                     **{k: a[k] for k in ("policy", "env_id", "mode", "rate_hz", "episodes", "seed", "env_module",
                                          "observation_interface", "report_path")},
                     # with a recorder, start once both it and the server hear the observations
                     "min_observation_subscribers": 2 if a["record"] else 1}
    # parameters as --ros-args (-p name:=value): launch writes no temporary parameter file per run
    server = Node(package="qpolicy", executable="policy_server", name="policy_server", output="screen",
                  ros_arguments=ros_arguments(server_params))
    bridge = Node(package="qpolicy", executable="mujoco_bridge", name="mujoco_bridge", output="screen",
                  ros_arguments=ros_arguments(bridge_params))
    actions = [server, bridge, _end_when_it_exits(bridge, "mujoco_bridge", "the run is over"),
               _end_when_it_exits(server, "policy_server", "no policy is served any more")]
    if a["record"]:
        recorder = Node(package="qpolicy", executable="bag_recorder", name="bag_recorder", output="screen",
                        ros_arguments=ros_arguments({**node_parameters("bag_recorder"), "bag_path": a["bag_path"]}))
        actions += [recorder, _end_when_it_exits(recorder, "bag_recorder", "the run is no longer recorded")]
    return actions


def generate_launch_description(policy: str | None = None):
    """The loop; ``policy`` sets the default of the policy:= argument (else the parameter file's)."""
    defaults = {**node_parameters("policy_server"), **node_parameters("mujoco_bridge")}
    declared = []
    for name, (default, description) in ARGUMENTS.items():
        value = default if default is not None else defaults[name]
        if name == "policy" and policy is not None:
            value = policy
        declared.append(DeclareLaunchArgument(name, default_value=str(value), description=description))
    return LaunchDescription([
        # This demo keeps DDS discovery on this machine; drop this line to talk to other hosts.
        SetEnvironmentVariable("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST"),
        *declared,
        OpaqueFunction(function=_nodes),
    ])

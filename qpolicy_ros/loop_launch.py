"""The launch description of the closed loop, shared by ``launch/hopper_fpga.launch.py`` (Hopper's shipped
selection by default) and ``launch/policy_fpga.launch.py`` (any bundle: ``policy:=policies/walker2d/selected``).

policy_server (FPGA overlay, or the bit-exact int fallback) and mujoco_bridge run with the parameters of
config/hopper_fpga.yaml (topic names and QoS are defined there, once); the bridge takes the environment id
and the control rate (1 / env.dt) from the bundle unless env_id:= or rate_hz:= override them. Arguments:
[policy:=...] [backend:=auto] [env_id:=] [mode:=lockstep] [rate_hz:=0 (the task's)] [episodes:=3] [seed:=0]
[record:=false] [bag_path:=qpolicy_bag]. Without a ROS 2 install, `qpolicy demo` starts the same nodes with
the same parameters.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, RegisterEventHandler, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.substitutions import LaunchConfiguration, PythonExpression
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

from qpolicy_ros.param_file import node_parameters

ARGUMENTS = {
    "backend": ("auto", "auto | pynq | rtl | int | float", str),
    "policy": (None, "policy bundle directory", str),
    "env_id": (None, "environment (empty: the bundle's task)", str),
    "mode": (None, "lockstep (deterministic) | realtime (timer at rate_hz)", str),
    "rate_hz": (None, "control rate of the realtime loop (0: the task's, 1 / env.dt)", float),
    "episodes": (None, "episodes before the bridge stops", int),
    "seed": (None, "episode i resets with seed + i", int),
    "record": ("false", "also record the loop to a rosbag2 (MCAP) bag at bag_path", bool),
    "bag_path": ("qpolicy_bag", "where the bag goes when record:=true", str),
}


def generate_launch_description(policy: str | None = None):
    """The loop; ``policy`` sets the default of the policy:= argument (else the parameter file's)."""
    server_defaults = node_parameters("policy_server")
    bridge_defaults = node_parameters("mujoco_bridge")
    declared = []
    for name, (default, description, _) in ARGUMENTS.items():
        value = default if default is not None else {**server_defaults, **bridge_defaults}[name]
        if name == "policy" and policy is not None:
            value = policy
        declared.append(DeclareLaunchArgument(name, default_value=str(value), description=description))

    def arg(name):
        return ParameterValue(LaunchConfiguration(name), value_type=ARGUMENTS[name][2])

    server = Node(package="qpolicy", executable="policy_server", name="policy_server", output="screen",
                  parameters=[{**server_defaults, "policy": arg("policy"), "backend": arg("backend")}])
    bridge = Node(package="qpolicy", executable="mujoco_bridge", name="mujoco_bridge", output="screen",
                  parameters=[{**bridge_defaults, "policy": arg("policy"), "env_id": arg("env_id"),
                               "mode": arg("mode"), "rate_hz": arg("rate_hz"),
                               "episodes": arg("episodes"), "seed": arg("seed"),
                               # with a recorder, start once both it and the server hear the observations
                               "min_observation_subscribers": ParameterValue(PythonExpression(
                                   ["2 if '", LaunchConfiguration("record"), "'.lower() == 'true' else 1"]),
                                   value_type=int)}])
    recorder = Node(package="qpolicy", executable="bag_recorder", name="bag_recorder", output="screen",
                    condition=IfCondition(LaunchConfiguration("record")),
                    parameters=[{**node_parameters("bag_recorder"), "bag_path": arg("bag_path")}])
    return LaunchDescription([
        # This demo keeps DDS discovery on this machine; drop this line to talk to other hosts.
        SetEnvironmentVariable("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST"),
        *declared,
        server,
        recorder,
        bridge,
        # the run ends when the bridge has finished its episodes
        RegisterEventHandler(OnProcessExit(target_action=bridge, on_exit=[EmitEvent(event=Shutdown())])),
    ])

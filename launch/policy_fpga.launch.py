"""ros2 launch qpolicy policy_fpga.launch.py policy:=policies/walker2d/selected [backend:=auto] [env_id:=]
[mode:=lockstep] [rate_hz:=0] [episodes:=3] [seed:=0] [record:=false] [bag_path:=qpolicy_bag]
[observation_interface:=flat|standard] [report_path:=run.json]

The closed loop of any bundle: the bridge runs the bundle's task at its control rate (1 / env.dt) unless
env_id:= or rate_hz:= say otherwise (qpolicy_ros/loop_launch.py has the arguments).
"""
from qpolicy_ros.loop_launch import generate_launch_description  # noqa: F401  (ros2 launch calls it)

"""ros2 launch qpolicy hopper_fpga.launch.py [backend:=auto] [policy:=...] [mode:=lockstep] [rate_hz:=0]
[episodes:=3] [seed:=0] [record:=false] [bag_path:=qpolicy_bag]

The Hopper closed loop with the shipped selection (qpolicy_ros/loop_launch.py has the arguments).
"""
from qpolicy_ros.loop_launch import generate_launch_description  # noqa: F401  (ros2 launch calls it)

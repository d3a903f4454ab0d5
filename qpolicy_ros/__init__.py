"""The ROS 2 side: thin rclpy nodes (policy_server, mujoco_bridge, bag_recorder) over plain-Python logic."""

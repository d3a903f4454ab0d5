"""The thin rclpy nodes (policy_server, mujoco_bridge) land with the ROS 2 issue."""

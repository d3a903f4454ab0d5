"""Simulation helpers shared by training, evaluation and the ROS 2 bridge: making a task's environment on
the user's word only, and the camera and video writer of rendered episodes. Gymnasium and MuJoCo; no torch,
no rclpy."""

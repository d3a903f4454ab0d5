"""Simulation helpers shared by training, evaluation and the ROS 2 bridge: making a task's environment on
the user's word only, deterministic rollouts of a bundle (``evaluation``), rendered episodes (``render``) and
their camera and video writer. Gymnasium, MuJoCo and the runtimes; no torch, no rclpy."""

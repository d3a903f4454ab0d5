"""bag_recorder: writes the loop's observations, commands and diagnostics to a rosbag2 (MCAP) bag.

Messages are stored as received (serialized CDR, ``raw=True`` subscriptions), so nothing is decoded
or re-encoded; the `rosbags` library writes the bag, which `ros2 bag`, Foxglove and `rosbags`
itself read back.
"""
from __future__ import annotations

import sys
from pathlib import Path

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, String

from qpolicy_hw.errors import QpolicyError
from qpolicy_ros.params import declare_topics, loop_qos, spin_node

RECORDED = {  # topic parameter -> (message class, ROS type name)
    "observation_topic": (JointState, "sensor_msgs/msg/JointState"),
    "command_topic": (Float64MultiArray, "std_msgs/msg/Float64MultiArray"),
    "episode_topic": (String, "std_msgs/msg/String"),
    "diagnostics_topic": (DiagnosticArray, "diagnostic_msgs/msg/DiagnosticArray"),
}


class BagRecorder(Node):
    def __init__(self):
        super().__init__("bag_recorder")
        topics = declare_topics(self)
        qos = loop_qos(self)
        path = Path(self.declare_parameter("bag_path", "demo_out/bag").value)
        if path.exists():
            raise QpolicyError(f"bag {path} exists already; choose another bag_path")
        self.writer = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP)
        self.writer.open()
        typestore = get_typestore(Stores.ROS2_KILTED)
        self.count = 0
        self.subscriptions_by_param = {}
        self.pending_observation = None
        for param, (cls, type_name) in RECORDED.items():
            conn = self.writer.add_connection(topics[param], type_name, typestore=typestore)
            if param == "observation_topic":
                self.pending_observation = (cls, topics[param], self._writer_for(conn), qos)
            else:
                self.subscriptions_by_param[param] = self.create_subscription(
                    cls, topics[param], self._writer_for(conn), qos, raw=True)
        # The bridge starts its loop once enough nodes have *matched* its observation publisher. The
        # recorder joins the observation topic only after its own subscriptions have matched the
        # server's command publisher and the bridge's episode publisher, so "the recorder hears the
        # observations" implies "the recorder hears the answers": no command is lost to discovery.
        self.join_timer = self.create_timer(0.02, self.join_observation_when_matched)
        self.get_logger().info(f"recording to {path}; waiting for the command and episode publishers")

    def join_observation_when_matched(self) -> None:
        matched = all(self.subscriptions_by_param[p].get_publisher_count() > 0
                      for p in ("command_topic", "episode_topic"))
        if not matched:
            return
        cls, topic, callback, qos = self.pending_observation
        self.create_subscription(cls, topic, callback, qos, raw=True)
        self.pending_observation = None
        self.join_timer.cancel()
        self.get_logger().info("command and episode publishers matched; recording observations too")

    def _writer_for(self, conn):
        def write(data: bytes) -> None:
            self.writer.write(conn, self.get_clock().now().nanoseconds, data)
            self.count += 1
        return write

    def destroy_node(self):
        self.writer.close()
        print(f"bag_recorder: wrote {self.count} messages", flush=True)  # the context may be shut down already
        return super().destroy_node()


def main(args=None) -> int:
    return spin_node(BagRecorder, args if args is not None else sys.argv)


if __name__ == "__main__":
    sys.exit(main())

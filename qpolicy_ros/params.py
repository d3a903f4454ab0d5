"""Shared parameter declarations: topic names and QoS live in config/hopper_fpga.yaml, declared once here."""
from __future__ import annotations

from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy

from qpolicy_ros.param_file import shared_parameters

TOPIC_PARAMS = {name: value for name, value in shared_parameters().items() if name.endswith("_topic")}
"""Every topic's parameter name and default, read from the parameter file (the one place they are defined)."""


def declare_topics(node: Node) -> dict[str, str]:
    return {name: node.declare_parameter(name, default).value for name, default in TOPIC_PARAMS.items()}


def loop_qos(node: Node) -> QoSProfile:
    shared = shared_parameters()
    depth = node.declare_parameter("qos_depth", shared["qos_depth"]).value
    reliable = node.declare_parameter("qos_reliable", shared["qos_reliable"]).value
    return QoSProfile(depth=depth,
                      reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT)


def spin_node(node_factory, args=None) -> int:
    """Idiomatic main(): one node, a SingleThreadedExecutor (a multi-threaded executor starves the
    125 Hz timer on 2 cores), clean shutdown on Ctrl-C or when the node says it is done."""
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    rclpy.init(args=args)
    node = None
    code = 0
    try:
        node = node_factory()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        while rclpy.ok() and not getattr(node, "done", False):
            executor.spin_once(timeout_sec=0.1)
        code = getattr(node, "exit_code", 0)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception as exc:  # a node that cannot start says why in one line
        from qpolicy_hw.errors import QpolicyError

        if not isinstance(exc, QpolicyError):
            raise
        print(f"{getattr(node_factory, '__name__', 'node')}: error: {exc}", flush=True)
        code = 2
    finally:
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return code

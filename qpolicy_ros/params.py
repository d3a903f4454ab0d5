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
    125 Hz timer on 2 cores), clean shutdown (exit 0, no traceback) on Ctrl-C or SIGTERM, however many arrive,
    or when the node says it is done."""
    import signal

    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    # Ctrl-C in a terminal reaches every process of the group, and launch sends its own SIGINT too: the first
    # SIGINT or SIGTERM asks the loop to stop, later ones are ignored, so cleanup never dies half-way
    stop = []

    def request_stop(signum, _frame) -> None:
        stop.append(signum)
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    name = getattr(node_factory, "__name__", "node")
    try:
        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    except Exception as exc:   # a bad --params-file or --ros-args: rcl's reason, one line
        reason = str(exc).split(", at ")[0].replace("failed to initialize rcl: ", "")
        print(f"{name}: error: {reason}", flush=True)
        return 2
    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    node = None
    code = 0
    try:
        node = node_factory()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        while rclpy.ok() and not stop and not getattr(node, "done", False):
            executor.spin_once(timeout_sec=0.1)
        code = 0 if stop else getattr(node, "exit_code", 0)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception as exc:  # a node that cannot start says why in one line
        from qpolicy_hw.errors import QpolicyError

        if not isinstance(exc, QpolicyError):
            raise
        print(f"{name}: error: {exc}", flush=True)
        code = 2
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
        for s, handler in previous.items():
            signal.signal(s, handler)
    return code

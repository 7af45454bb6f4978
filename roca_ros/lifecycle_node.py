"""roca_lifecycle_node: roca_node as a managed (lifecycle) node.

A system manager decides when the model occupies memory and when frames flow, through the
standard ``~/change_state`` service (``ros2 lifecycle set``, launch_ros' LifecycleNode):

============  ===========================================================================
configure     load the model and the CAD database; serve ``reload_cad_database``
activate      create the publishers and subscriptions and start the inference worker
deactivate    finish the frame in flight, remove publishers and subscriptions; model stays
cleanup       free the model and the CAD database
shutdown      whatever of the above is still up is taken down
============  ===========================================================================

The node's parts are those of ``roca_node`` (:mod:`roca_ros.node_parts`); parameters are
declared at construction, so they can be set before ``configure``.
"""
from __future__ import annotations

import sys
from typing import Any, Optional, Sequence

from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from roca_ros.node import DEFAULT_NAMESPACE, NODE_NAME
from roca_ros.node_parts import PredictorFactory, RocaParts, StartupError
from roca_ros.shutdown import run_node


class RocaLifecycleNode(RocaParts, LifecycleNode):
    """roca_node whose model and topics follow the lifecycle transitions (module docstring)."""

    def __init__(self, node_name: str = NODE_NAME, namespace: str = DEFAULT_NAMESPACE,
                 predictor_factory: Optional[PredictorFactory] = None, **node_kwargs: Any) -> None:
        super().__init__(node_name, namespace=namespace, **node_kwargs)
        try:
            self.declare_roca_parameters(predictor_factory)
        except StartupError as exc:
            self.get_logger().fatal(str(exc))
            self.destroy_node()
            raise
        self.get_logger().info("unconfigured: waiting for the configure transition (~/change_state)")

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.load_model()
        except StartupError as exc:
            self.get_logger().error(str(exc))
            return TransitionCallbackReturn.FAILURE
        self.get_logger().info("configured: model loaded")
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.open_io()
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.close_io()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.unload_model()
        self.get_logger().info("unconfigured: model freed")
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.close_io()
        self.unload_model()
        return super().on_shutdown(state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.close_io()
        self.unload_model()
        return super().on_error(state)

    def destroy_node(self) -> None:
        """Take down whatever is still up (the frame in flight finishes first)."""
        self.close_io()
        self.unload_model()
        super().destroy_node()


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Console entry point ``roca_lifecycle_node``; returns the process exit code."""
    return run_node(RocaLifecycleNode, list(sys.argv if argv is None else argv), (StartupError,),
                    doc=__doc__)


if __name__ == "__main__":
    sys.exit(main())

"""The managed node (roca_lifecycle_node), driven through the standard ``~/change_state`` service.

configure loads the model and the CAD database, activate starts subscriptions and publishers,
deactivate stops them without unloading, cleanup frees the model. The process test starts
the node as ``ros2 launch roca_ros roca.launch.py lifecycle:=true`` would (launch_emulation);
the in-process test checks with a stand-in predictor that cleanup really frees it.
"""
from __future__ import annotations

import gc
import signal
import time
import weakref
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("lifecycle_msgs.srv")
from lifecycle_msgs.msg import State, Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from rclpy.context import Context  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402

from launch_emulation import command_line, find_launch_file, launch_nodes  # noqa: E402
from ros_helpers import (  # noqa: E402
    START_TIMEOUT_S, Client, NodeProcess, make_frame, node_env, private_domain_id, save_random_checkpoint,
)

pytestmark = [pytest.mark.ros, pytest.mark.slow]

DOMAIN_ID = private_domain_id()


class Lifecycle:
    """Calls ~/change_state and ~/get_state of one managed node."""

    def __init__(self, client: Client, node_fqn: str) -> None:
        self.client = client
        self.change = client.node.create_client(ChangeState, f"{node_fqn}/change_state")
        self.get = client.node.create_client(GetState, f"{node_fqn}/get_state")
        assert self.change.wait_for_service(timeout_sec=30.0) and self.get.wait_for_service(timeout_sec=30.0)

    def transition(self, transition_id: int) -> bool:
        request = ChangeState.Request(transition=Transition(id=transition_id))
        return self.client.wait_future(self.change.call_async(request), 120.0).success

    def state(self) -> int:
        return self.client.wait_future(self.get.call_async(GetState.Request())).current_state.id


def _image_subscribers(client: Client, expected: int) -> bool:
    """Wait until the graph shows ``expected`` subscribers of /roca/image."""
    return client.spin_until(lambda: client.node.count_subscribers("/roca/image") == expected, 10.0)


def test_transitions_through_change_state_load_start_stop_and_free(tmp_path):
    checkpoint = save_random_checkpoint(tmp_path / "small_random.safetensors")
    (node,) = launch_nodes(find_launch_file("roca_ros", "roca.launch.py"),
                           {"lifecycle": "true", "checkpoint": str(checkpoint), "device": "cpu"})
    command = command_line(node, tmp_path)
    assert Path(command[0]).name == "roca_lifecycle_node"
    proc = NodeProcess(command, tmp_path / "node.log", node_env(DOMAIN_ID), cwd=tmp_path)
    client = None
    try:
        assert proc.wait_for_log("waiting for the configure transition", START_TIMEOUT_S), proc.log()
        client = Client(DOMAIN_ID)
        lifecycle = Lifecycle(client, "/roca/roca_node")
        assert lifecycle.state() == State.PRIMARY_STATE_UNCONFIGURED
        assert "loading" not in proc.log()  # nothing heavy before configure
        assert client.set_params(score_threshold=0.0)[0].successful  # parameters work in any state

        assert lifecycle.transition(Transition.TRANSITION_CONFIGURE)
        assert lifecycle.state() == State.PRIMARY_STATE_INACTIVE
        assert "configured: model loaded" in proc.log()
        assert client.reload.wait_for_service(timeout_sec=10.0)  # served once the model is there
        assert _image_subscribers(client, 0), "subscribed to images while inactive"

        assert lifecycle.transition(Transition.TRANSITION_ACTIVATE)
        assert lifecycle.state() == State.PRIMARY_STATE_ACTIVE
        assert _image_subscribers(client, 1)
        time.sleep(0.5)
        client.request_objects()

        assert lifecycle.transition(Transition.TRANSITION_DEACTIVATE)
        assert lifecycle.state() == State.PRIMARY_STATE_INACTIVE
        assert _image_subscribers(client, 0), "still subscribed after deactivate"
        assert client.spin_until(lambda: client.node.count_publishers("/roca/objects") == 0, 10.0)
        answered = len(client.objects)
        client.publish(*client.frame())
        client.spin_until(lambda: False, 1.0)
        assert len(client.objects) == answered

        assert lifecycle.transition(Transition.TRANSITION_ACTIVATE)  # no reload: the model stayed
        assert _image_subscribers(client, 1)
        time.sleep(0.5)
        client.request_objects()
        assert proc.log().count("loading ") == 1

        assert lifecycle.transition(Transition.TRANSITION_DEACTIVATE)
        assert lifecycle.transition(Transition.TRANSITION_CLEANUP)
        assert lifecycle.state() == State.PRIMARY_STATE_UNCONFIGURED
        assert "unconfigured: model freed" in proc.log()
        assert not lifecycle.transition(Transition.TRANSITION_ACTIVATE)  # not from unconfigured

        assert lifecycle.transition(Transition.TRANSITION_CONFIGURE)  # loads again
        assert proc.log().count("loading ") == 2
        assert lifecycle.transition(Transition.TRANSITION_ACTIVATE)
        assert lifecycle.transition(Transition.TRANSITION_ACTIVE_SHUTDOWN)
        assert lifecycle.state() == State.PRIMARY_STATE_FINALIZED
        assert proc.stop(signal.SIGINT) == 0
        assert "Traceback" not in proc.log(), proc.log()
    finally:
        if client is not None:
            client.close()
        proc.stop(signal.SIGKILL)


class StandInPredictor:
    score_threshold, mask_threshold, max_detections = 0.5, 0.7, 50

    def predict(self, rgb, K):
        return []

    def set_cad_database(self, db):
        pass


def test_cleanup_frees_the_model_and_a_failed_configure_stays_unconfigured(roca_home):
    from roca_ros.lifecycle_node import RocaLifecycleNode

    made: list[weakref.ref] = []
    fail = [True]

    def factory(settings, db):
        if fail[0]:
            raise FileNotFoundError("checkpoint not found: /nowhere.safetensors")
        predictor = StandInPredictor()
        made.append(weakref.ref(predictor))
        return predictor

    context = Context()
    rclpy.init(context=context, domain_id=DOMAIN_ID)
    node = RocaLifecycleNode(namespace="lifecycle_inproc", predictor_factory=factory, context=context,
                             parameter_overrides=[Parameter("stats_period", value=0.0)])
    caller = Node("lifecycle_caller", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    executor.add_node(caller)
    change = caller.create_client(ChangeState, "/lifecycle_inproc/roca_node/change_state")

    def transition(transition_id: int) -> bool:
        future = change.call_async(ChangeState.Request(transition=Transition(id=transition_id)))
        executor.spin_until_future_complete(future, timeout_sec=60.0)
        assert future.done(), "no answer from change_state"
        return future.result().success

    try:
        assert change.wait_for_service(timeout_sec=10.0)
        assert not transition(Transition.TRANSITION_CONFIGURE)  # the factory fails: reported, not fatal
        assert not node.model_loaded
        fail[0] = False
        assert transition(Transition.TRANSITION_CONFIGURE) and node.model_loaded and len(made) == 1
        assert transition(Transition.TRANSITION_ACTIVATE)
        image, info = make_frame(np.zeros((48, 64, 3), np.uint8), node.get_clock().now().to_msg(),
                                 K=[60.0, 0, 31.5, 0, 60.0, 23.5, 0, 0, 1])
        node._on_camera_info(info)
        node._on_image(image)
        assert node._worker.wait_idle(10) and node.stats.snapshot()["processed"] == 1
        assert transition(Transition.TRANSITION_DEACTIVATE)
        assert node._worker is None and made[0]() is not None  # stopped, model kept
        assert transition(Transition.TRANSITION_ACTIVATE) and len(made) == 1
        assert transition(Transition.TRANSITION_DEACTIVATE)
        assert transition(Transition.TRANSITION_CLEANUP)
        gc.collect()
        assert made[0]() is None, f"the predictor is still referenced: {gc.get_referrers(made[0]())}"
        assert not node.model_loaded
    finally:
        executor.shutdown()
        caller.destroy_node()
        node.destroy_node()
        rclpy.shutdown(context=context)


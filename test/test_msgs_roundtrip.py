"""Every roca_msgs type crosses a process boundary over rclpy with every field intact."""
from __future__ import annotations

import math
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

rclpy = pytest.importorskip("rclpy")
from rclpy.node import Node  # noqa: E402
from roca_msgs.srv import ReloadCadDatabase  # noqa: E402

from ros_echo_node import MESSAGE_TYPES, QOS, respond  # noqa: E402

pytestmark = pytest.mark.ros
REPO = Path(__file__).resolve().parents[1]


def fill(msg, rng: random.Random, depth: int = 0):
    """Set every field of ``msg`` to a random non-default value (recursing into sub-messages)."""
    for name, type_name in msg.get_fields_and_field_types().items():
        current = getattr(msg, name)
        if type_name.startswith("sequence<"):
            inner = type_name[len("sequence<"):-1]
            if "/" in inner:
                module = __import__(inner.split("/")[0] + ".msg", fromlist=["x"])
                item_type = getattr(module, inner.split("/")[-1])
                items = [fill(item_type(), rng, depth + 1) for _ in range(rng.randint(2, 3))]
            elif inner == "string":
                items = [f"s{rng.randint(0, 999)}" for _ in range(3)]
            else:
                raise AssertionError(f"unhandled sequence type {type_name}")
            setattr(msg, name, items)
        elif type_name == "string":
            setattr(msg, name, f"{name}-{rng.randint(0, 10**6)}-ü")
        elif type_name == "boolean":
            setattr(msg, name, True)
        elif type_name in ("float", "double"):
            value = rng.uniform(-100, 100)
            if type_name == "float":  # round-trip through float32 exactly
                import struct
                value = struct.unpack("f", struct.pack("f", value))[0]
            setattr(msg, name, value)
        elif type_name.startswith(("int", "uint")):
            setattr(msg, name, rng.randint(1, 120))
        elif "/" in type_name:
            setattr(msg, name, fill(current, rng, depth + 1))
        else:
            raise AssertionError(f"unhandled field type {type_name} of {name}")
    return msg


def fields_equal(a, b, path: str = "") -> list[str]:
    """Names of the fields that differ (recursive), so a failure says which one."""
    diffs = []
    for name in a.get_fields_and_field_types():
        va, vb = getattr(a, name), getattr(b, name)
        where = f"{path}.{name}" if path else name
        if hasattr(va, "get_fields_and_field_types"):
            diffs += fields_equal(va, vb, where)
        elif isinstance(va, (list, tuple)) and va and hasattr(va[0], "get_fields_and_field_types"):
            if len(va) != len(vb):
                diffs.append(where)
            else:
                for i, (x, y) in enumerate(zip(va, vb)):
                    diffs += fields_equal(x, y, f"{where}[{i}]")
        elif isinstance(va, float):
            if not math.isclose(va, vb, rel_tol=0, abs_tol=0):
                diffs.append(where)
        elif list(va) != list(vb) if isinstance(va, (list, tuple)) else va != vb:
            diffs.append(where)
    return diffs


@pytest.fixture(scope="module")
def echo_process():
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    proc = subprocess.Popen([sys.executable, str(REPO / "test" / "ros_echo_node.py"), "--timeout", "120"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = proc.stdout.readline()
    assert "ready" in line, f"echo node did not start: {line}{proc.stdout.read() if proc.poll() is not None else ''}"
    yield proc
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def node():
    rclpy.init()
    n = Node("roca_roundtrip_test")
    yield n
    n.destroy_node()
    rclpy.shutdown()


def spin_until(node, predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
        if predicate():
            return True
    return False


@pytest.mark.parametrize("msg_type", MESSAGE_TYPES, ids=lambda t: t.__name__)
def test_message_roundtrip_between_processes(echo_process, node, msg_type):
    name = msg_type.__name__
    sent = fill(msg_type(), random.Random(name))
    received = []
    pub = node.create_publisher(msg_type, f"echo_in/{name}", QOS)
    sub = node.create_subscription(msg_type, f"echo_out/{name}", received.append, QOS)
    try:
        # Publish until the echo arrives (discovery takes a moment); every copy is identical.
        deadline = time.monotonic() + 30
        while not received and time.monotonic() < deadline:
            pub.publish(sent)
            spin_until(node, lambda: bool(received), 0.5)
        assert received, f"no echo of {name} within 30 s"
        back = received[0]
        assert fields_equal(sent, back) == [], f"fields differ after the round trip: {fields_equal(sent, back)}"
        assert back == sent
        assert back is not sent
    finally:
        node.destroy_publisher(pub)
        node.destroy_subscription(sub)


def test_service_roundtrip_between_processes(echo_process, node):
    client = node.create_client(ReloadCadDatabase, "echo/reload_cad_database")
    try:
        assert client.wait_for_service(timeout_sec=30), "echo service not available"
        request = ReloadCadDatabase.Request(database_path="/tmp/some/cad_db-ü")
        future = client.call_async(request)
        assert spin_until(node, future.done, 30), "no service response"
        got = future.result()
        expected = respond(request, ReloadCadDatabase.Response())
        assert fields_equal(expected, got) == []
        assert (got.success, got.message, got.num_models) == (True, "ü-bd_dac/emos/pmt/", 18)
    finally:
        node.destroy_client(client)


def test_fill_sets_every_field_away_from_default():
    """The round trip proves something only if the filled messages differ from defaults."""
    for msg_type in MESSAGE_TYPES:
        filled = fill(msg_type(), random.Random(1))
        differing = fields_equal(filled, msg_type())
        assert set(msg_type.get_fields_and_field_types()) <= {d.split(".")[0].split("[")[0] for d in differing}

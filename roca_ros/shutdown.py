"""Process life of a roca node: start, spin, and a clean stop on SIGINT / SIGTERM.

Under ``ros2 launch`` a Ctrl-C reaches the node twice: from the terminal (the whole process
group) and from launch, which then escalates to SIGTERM and SIGKILL after a few seconds.
rclpy's own handlers raise ``KeyboardInterrupt`` wherever the main thread happens to be, so
the second signal lands in the middle of ``destroy_node`` and the process dies with a
traceback and exit code -2. Here every signal only sets a flag; the main thread notices it
within :data:`SPIN_PERIOD_S`, lets the worker finish (or drop) its frame, destroys the node
and exits 0. While the model loads, the first signal interrupts the loading instead.
"""
from __future__ import annotations

import os
import signal
import threading
from types import FrameType
from typing import Callable, Optional, Sequence

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

# How long the main thread may block in the executor before it looks at the stop flag.
SPIN_PERIOD_S = 0.1
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StartupInterrupted(BaseException):
    """A stop signal arrived while the node was still loading (a BaseException, like
    KeyboardInterrupt, so that no ``except Exception`` on the way turns it into an error)."""


class StopSignals:
    """SIGINT / SIGTERM set :attr:`requested` (and count); only during start-up do they raise.

    Install in the main thread (Python delivers signals there); :meth:`restore` puts the
    previous handlers back.
    """

    def __init__(self) -> None:
        self.requested = threading.Event()
        self.received = 0
        self.interrupt_startup = True
        self._previous = {sig: signal.signal(sig, self._handle) for sig in STOP_SIGNALS}

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        self.received += 1
        self.requested.set()
        if self.interrupt_startup and self.received == 1:
            raise StartupInterrupted(signal.Signals(signum).name)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def asks_for_help(argv: Sequence[str]) -> bool:
    """``-h``/``--help`` among the program's own arguments (those before ``--ros-args``)."""
    own = list(argv[1:])
    if "--ros-args" in own:
        own = own[:own.index("--ros-args")]
    return any(a in ("-h", "--help") for a in own)


def run_node(make_node: Callable[[], Node], argv: Optional[Sequence[str]],
             startup_errors: tuple[type[BaseException], ...] = (), doc: str = "") -> int:
    """Init rclpy, build the node, spin until a stop signal; returns the process exit code.

    ``startup_errors`` are exceptions ``make_node`` raises after logging them itself (exit 1).
    When the arguments ask for help, a usage line and ``doc`` (the node module's docstring)
    are printed instead.
    """
    if doc and argv and asks_for_help(argv):
        prog = os.path.basename(argv[0])
        print(f"usage: {prog} [--ros-args ...]\n\n{doc.strip()}\n\n"
              "Parameters: config/roca.yaml (each one documented); topics: README, 'The node'.")
        return 0
    signals = StopSignals()
    node: Optional[Node] = None
    try:
        rclpy.init(args=list(argv) if argv is not None else None,
                   signal_handler_options=SignalHandlerOptions.NO)
        try:
            node = make_node()
        except startup_errors:
            return 1
        finally:
            signals.interrupt_startup = False
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        while not signals.requested.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=SPIN_PERIOD_S)
        executor.remove_node(node)
        return 0
    except StartupInterrupted:
        return 0
    finally:
        signals.interrupt_startup = False
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
        signals.restore()

"""Child processes of the GPU job: each phase runs in its own process (a CUDA context, EGL
contexts and data-loader workers do not mix well in one), pinned to a set of cores, with its
output streamed line by line into the job log."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Sequence


class JobLog:
    """Timestamped lines (seconds since the job started) to stderr and ``OUT/job.log``."""

    def __init__(self, path: Path, t0: float) -> None:
        self.t0 = t0
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(path, "a", buffering=1)

    def elapsed(self) -> float:
        return time.time() - self.t0

    def __call__(self, message: str) -> None:
        stamp = f"[{self.elapsed():6.1f}s]"
        with self._lock:
            for line in str(message).splitlines() or [""]:
                text = f"{stamp} {line}"
                print(text, file=sys.stderr, flush=True)
                self._fh.write(text + "\n")

    def close(self) -> None:
        self._fh.close()


class Child:
    """A running phase: ``python -m MODULE ARGS`` on ``cpus``, its output in the log."""

    def __init__(self, name: str, args: Sequence[str], log: JobLog,
                 cpus: "set[int] | None" = None, env: "dict[str, str] | None" = None) -> None:
        self.name = name
        self.log = log
        self.started = time.time()
        child_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
        if cpus:
            child_env.setdefault("OMP_NUM_THREADS", str(len(cpus)))
        pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus and hasattr(os, "sched_setaffinity") else None
        self.proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, bufsize=1,
                                     env=child_env, preexec_fn=pin)
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()
        where = f" on cores {min(cpus)}-{max(cpus)}" if cpus else ""
        log(f"{name}: started{where}: python {' '.join(args)}")

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.rstrip("\n").split("\r")[-1]  # keep the last state of a progress bar
            if line.strip():
                self.log(f"  {self.name}| {line}")

    def running(self) -> bool:
        return self.proc.poll() is None

    def interrupt(self) -> None:
        """SIGINT: roca-train saves a checkpoint at the next step and exits."""
        if self.running():
            self.proc.send_signal(signal.SIGINT)

    def wait(self, timeout_s: float, heartbeat: "Callable[[], str | None] | None" = None,
             every_s: float = 30.0, on_timeout: str = "kill", grace_s: float = 60.0) -> int:
        """Wait up to ``timeout_s``; log ``heartbeat()`` every ``every_s``. On timeout either
        ``kill`` the child, or ``interrupt`` it and give it ``grace_s`` to save and exit."""
        deadline = time.time() + max(0.0, timeout_s)
        next_beat = time.time() + every_s
        while self.running() and time.time() < deadline:
            time.sleep(min(1.0, max(0.05, deadline - time.time())))
            if heartbeat is not None and time.time() >= next_beat:
                next_beat += every_s
                status = heartbeat()
                if status:
                    self.log(f"{self.name}: {status}")
        if self.running():
            if on_timeout == "interrupt":
                self.log(f"{self.name}: time is up, asking it to stop (SIGINT: checkpoint, then exit)")
                self.interrupt()
                try:
                    self.proc.wait(grace_s)
                except subprocess.TimeoutExpired:
                    pass
            if self.running():
                self.log(f"{self.name}: still running, killed")
                self.proc.kill()
        rc = self.proc.wait()
        self._reader.join(timeout=5)
        self.log(f"{self.name}: exit code {rc} after {time.time() - self.started:.1f} s")
        return rc

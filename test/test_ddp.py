"""Two CPU processes (gloo) under torchrun train DDP replicas that must stay identical."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from roca_core.training.train_state import find_last_checkpoint, load_train_state

from roca_core.model import RocaModel

from training_fixtures import tiny_model_config

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_gloo_replicas_stay_identical(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1",
               PYTHONPATH=os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")]))
    env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT"):
        env.pop(key, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
           str(HERE / "ddp_worker.py"), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["is_ddp"] and r["world_size"] == 2 and r["final_iteration"] == 4 for r in reports)
    # the replicas started different, saw different images, and ended bit-identical
    assert reports[0]["initial_digest"] != reports[1]["initial_digest"]
    assert not set(reports[0]["first_image_ids"]) & set(reports[1]["first_image_ids"])
    assert reports[0]["final_digest"] == reports[1]["final_digest"]
    assert reports[0]["final_digest"] not in (reports[0]["initial_digest"], reports[1]["initial_digest"])
    # only rank 0 wrote the checkpoint, with both ranks' RNG states, and it loads
    ckpt = find_last_checkpoint(tmp_path / "run" / "checkpoints")
    assert ckpt is not None and ckpt.name == "iter_0000004"
    info = load_train_state(ckpt, RocaModel(tiny_model_config()), restore_rng=False)
    assert info.iteration == 4 and info.world_size == 2

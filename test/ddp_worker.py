"""One rank of the DDP test (launched by ``python -m torch.distributed.run`` from test_ddp.py).

Trains the real RocaModel (tiny sizes) for a few iterations with DistributedDataParallel on CPU (gloo)
and writes ``rank<R>.json`` into the directory given as argv[1]: the weights' sha256, the
weights' digest before training, and the images this rank saw first.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from training_fixtures import collate, model_synthetic_samples, tiny_model_config  # noqa: E402

from roca_core.model import RocaModel  # noqa: E402
from roca_core.training.config import DataConfig, ExperimentConfig, TrainConfig  # noqa: E402
from roca_core.training.distributed import env_dist_info, state_dict_digest  # noqa: E402
from roca_core.training.trainer import Trainer  # noqa: E402


def main() -> None:
    out = Path(sys.argv[1])
    torch.set_num_threads(1)
    info = env_dist_info()
    torch.manual_seed(1000 + info.rank)  # different initial weights: DDP must sync them
    model_cfg = tiny_model_config()
    model = RocaModel(model_cfg)
    initial = state_dict_digest(model.state_dict())
    cfg = ExperimentConfig(model=model_cfg, data=DataConfig(), train=TrainConfig(
        max_iter=4, ims_per_batch=2, warmup_iters=1, lr_steps=(), base_lr=0.02, num_workers=0,
        checkpoint_period=2, eval_period=0, device="cpu"))
    dataset = model_synthetic_samples(8)
    trainer = Trainer(cfg, out / "run", model=model, train_dataset=dataset, collate_fn=collate,
                      progress=False, export_inference_model=False, overwrite=True)
    try:
        result = trainer.train()
        first_batch = next(iter(trainer._loader(dataset, 0)))[1]
        report = {
            "rank": info.rank, "world_size": info.world_size,
            "is_ddp": type(trainer.model).__name__ == "DistributedDataParallel",
            "initial_digest": initial,
            "final_digest": state_dict_digest(model.state_dict()),
            "first_image_ids": [int(t["image_id"]) for t in first_batch],
            "final_iteration": result.final_iteration,
        }
        (out / f"rank{info.rank}.json").write_text(json.dumps(report))
    finally:
        trainer.close()


if __name__ == "__main__":
    main()

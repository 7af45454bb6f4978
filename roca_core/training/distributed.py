"""torchrun / DistributedDataParallel helpers.

``torchrun --nproc_per_node N roca-train ...`` (or ``python -m torch.distributed.run``) sets
RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT; without them everything runs as a
single process. gloo on CPU, nccl on GPU. Only rank 0 logs and writes checkpoints.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def env_dist_info() -> DistInfo:
    """Rank layout from the torchrun environment (single process when unset)."""
    def read(name: str, default: int) -> int:
        value = os.environ.get(name, "")
        try:
            return int(value) if value != "" else default
        except ValueError:
            raise ValueError(f"environment variable {name}={value!r} is not an integer") from None
    world = read("WORLD_SIZE", 1)
    rank = read("RANK", 0)
    local = read("LOCAL_RANK", rank)
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"bad torchrun environment: RANK={rank}, WORLD_SIZE={world}")
    return DistInfo(rank=rank, world_size=world, local_rank=local)


def resolve_device(spec: str, info: DistInfo = DistInfo()) -> torch.device:
    """"auto" -> this process's GPU when CUDA is available, else CPU."""
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            from roca_core.config_io import ConfigError
            raise ConfigError(f"device {spec!r} requested but CUDA is not available "
                              "(use --device cpu or auto)")
        if spec == "cuda":
            return torch.device("cuda", info.local_rank % torch.cuda.device_count())
    return torch.device(spec)


def init_distributed(device: torch.device, info: "DistInfo | None" = None) -> DistInfo:
    """Join the process group (gloo on CPU, nccl on GPU) when launched with WORLD_SIZE > 1."""
    info = info or env_dist_info()
    if not info.enabled or dist.is_initialized():
        return info
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend, rank=info.rank, world_size=info.world_size,
                            **({"device_id": device} if device.type == "cuda" else {}))
    return info


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def wrap_ddp(model: torch.nn.Module, device: torch.device, info: DistInfo,
             find_unused_parameters: bool = True) -> torch.nn.Module:
    """DistributedDataParallel around ``model`` when running multi-process, else ``model``."""
    if not info.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, output_device=ids[0] if ids else None,
                                   find_unused_parameters=find_unused_parameters)


def mean_over_ranks(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Average scalar logs over processes (for rank 0's CSV); identity when single-process."""
    if not (dist.is_available() and dist.is_initialized()) or not values:
        return values
    names = sorted(values)
    packed = torch.tensor([float(values[n]) for n in names], dtype=torch.float64, device=device)
    dist.all_reduce(packed)
    packed /= dist.get_world_size()
    return dict(zip(names, packed.tolist()))


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` in rank order (``[obj]`` when single-process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


class InfiniteBatchSampler:
    """Endless per-rank batches over epochs, resumable at any iteration.

    Each epoch's order is ``DistributedSampler(shuffle=True, seed, drop_last=True)`` with
    ``set_epoch(epoch)``: the same permutation on every rank, strided by rank, so replicas see
    disjoint images. Batches are whole (``drop_last``). Starting at ``start_iter`` skips the
    batches already consumed, so a resumed run sees the same images as an uninterrupted one
    (and, through :class:`~roca_core.training.seeded_samples.SeededSamples`, the same
    augmentations).
    """

    def __init__(self, dataset_size: int, batch_size: int, info: DistInfo = DistInfo(),
                 seed: int = 0, start_iter: int = 0, shuffle: bool = True,
                 with_positions: bool = False):
        if dataset_size < 1:
            raise ValueError("cannot train on an empty dataset (0 images in the split)")
        per_rank = dataset_size // info.world_size
        if per_rank < batch_size:
            raise ValueError(f"dataset of {dataset_size} images is too small for batch "
                             f"{batch_size} x {info.world_size} process(es)")
        self.dataset_size = dataset_size
        self.batch_size = batch_size
        self.info = info
        self.seed = seed
        self.shuffle = shuffle
        self.start_iter = start_iter
        self.with_positions = with_positions
        self.batches_per_epoch = per_rank // batch_size

    def epoch_indices(self, epoch: int) -> list[int]:
        sampler = DistributedSampler(range(self.dataset_size), num_replicas=self.info.world_size,
                                     rank=self.info.rank, shuffle=self.shuffle, seed=self.seed,
                                     drop_last=True)
        sampler.set_epoch(epoch)
        return list(sampler)

    def __iter__(self) -> Iterator[list]:
        """Lists of dataset indices; with ``with_positions``, of ``(position, index)`` pairs
        where position numbers the sample in the whole run (unique across ranks)."""
        epoch, skip = divmod(self.start_iter, self.batches_per_epoch)
        it = self.start_iter
        per_iter = self.batch_size * self.info.world_size
        while True:
            indices = self.epoch_indices(epoch)
            for b in range(skip, self.batches_per_epoch):
                batch = indices[b * self.batch_size:(b + 1) * self.batch_size]
                if self.with_positions:
                    first = it * per_iter + self.info.rank * self.batch_size
                    batch = [(first + j, index) for j, index in enumerate(batch)]
                yield batch
                it += 1
            skip = 0
            epoch += 1


def state_dict_digest(state: "dict[str, torch.Tensor]", names: "Sequence[str] | None" = None) -> str:
    """sha256 over a state_dict's tensors (replica-equality checks in tests and logs)."""
    import hashlib
    digest = hashlib.sha256()
    for key in sorted(names if names is not None else state):
        tensor = state[key].detach().to("cpu").contiguous()
        digest.update(key.encode())
        digest.update(tensor.numpy().tobytes() if tensor.dtype != torch.bfloat16
                      else tensor.view(torch.int16).numpy().tobytes())
    return digest.hexdigest()

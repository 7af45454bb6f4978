"""``roca-graft-heads``: put the image-only heads of one checkpoint onto another network.

The yaw, centre, up, class and shape heads read only the image (crops of the boxes, a
thumbnail), never the network's features, so heads trained on one network work unchanged on
another one of the same classes, e.g. a network that trained further on a GPU. Example::

    roca-graft-heads --network gpu/model_final.safetensors --heads models/roca_demo.safetensors \\
        --out out/grafted.safetensors --modules yaw_head,centre_head,up_head

The output has the network's weights with the named modules replaced, and the network's config
with those heads' config fields (widths, crops, bins, mix) taken from the heads' checkpoint.
The shape head is the exception to "image only": it embeds next to its network's CAD encoder,
so it moves only between networks whose CAD encoders are the same (else train it again with
roca-train-shape on the target network), or together with ``retrieval_head``: the retrieval
head (the CAD encoder, and the NOC encoder that reads the network's NOCs) of the heads'
checkpoint, for a network that trained further with its own retrieval head moving. The
retrieval head must have the network's shapes (the same ``embedding_dim``, ``voxel_channels``
and ``shape_code_dim``).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

# model config fields that belong to each graftable head
HEAD_FIELDS: dict[str, tuple[str, ...]] = {
    "yaw_head": ("yaw_bins", "yaw_crop", "yaw_width"),
    "centre_head": ("centre_width", "centre_crop"),
    "up_head": ("up_width",),
    "class_head": ("class_width", "class_crop", "class_mix", "class_mix_mean"),
    "shape_head": ("shape_width", "shape_crop"),
    "retrieval_head": (),  # same shapes as the network's own (checked when it is put in)
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="roca-graft-heads", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--network", required=True, help="checkpoint whose network is kept")
    p.add_argument("--heads", required=True, help="checkpoint the heads are taken from")
    p.add_argument("--out", required=True, help="output checkpoint (.safetensors)")
    p.add_argument("--modules", default="yaw_head,centre_head,up_head,class_head,shape_head",
                   help=f"comma-separated heads to take (of {', '.join(HEAD_FIELDS)}); the ones the "
                        "heads' checkpoint lacks are an error")
    return p


def graft(network: "str | Path", heads: "str | Path", modules: "list[str]", out: "str | Path") -> Path:
    """Write ``out``: ``network`` with ``modules`` (and their config fields) from ``heads``."""
    import torch

    from roca_core.checkpoint import load_checkpoint, save_checkpoint

    unknown = [m for m in modules if m not in HEAD_FIELDS]
    if unknown:
        raise ValueError(f"not a graftable head: {unknown} (choose from {list(HEAD_FIELDS)})")
    net, net_cfg, extra = load_checkpoint(network)
    src, src_cfg, _ = load_checkpoint(heads)
    if tuple(net_cfg.class_names) != tuple(src_cfg.class_names):
        raise ValueError(f"the two checkpoints have different classes: {net_cfg.class_names} vs {src_cfg.class_names}")
    missing = [m for m in modules if getattr(src, m, None) is None]
    if missing:
        raise ValueError(f"{heads} has no {', '.join(missing)}")
    if "retrieval_head" in modules:
        try:
            net.retrieval_head.load_state_dict(src.retrieval_head.state_dict())
        except RuntimeError as exc:
            raise ValueError(f"the retrieval heads of the two checkpoints have different shapes: {exc}") from None
    if "shape_head" in modules:
        a, b = net.retrieval_head.cad_encoder.state_dict(), src.retrieval_head.cad_encoder.state_dict()
        if a.keys() != b.keys() or any(not torch.equal(a[k], b[k]) for k in a):
            raise ValueError("the shape head embeds next to its own network's CAD encoder, and the two "
                             "networks' CAD encoders differ: train a shape head on this network with "
                             "roca-train-shape instead")
    cfg = dataclasses.replace(net_cfg, **{f: getattr(src_cfg, f) for m in modules for f in HEAD_FIELDS[m]})
    for m in modules:
        if m != "retrieval_head":  # loaded in place above
            setattr(net, m, getattr(src, m))
    net.cfg = cfg
    extra = dict(extra or {}, grafted={"heads_from": str(heads), "modules": list(modules)})
    return save_checkpoint(Path(out), net, cfg, extra)


def main(argv: "list[str] | None" = None) -> int:
    args = build_parser().parse_args(argv)
    from roca_core.checkpoint import CheckpointError

    modules = [m.strip() for m in args.modules.split(",") if m.strip()]
    try:
        path = graft(args.network, args.heads, modules, args.out)
    except (ValueError, FileNotFoundError, CheckpointError) as exc:
        print(f"roca-graft-heads: {exc}", file=sys.stderr)
        return 2
    print(f"[roca-graft-heads] {', '.join(modules)} from {args.heads} onto {args.network}: wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

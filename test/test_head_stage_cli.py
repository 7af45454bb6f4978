"""The head-stage CLIs share one set of options (roca_core/cli/head_stage.py) and add their own."""
from __future__ import annotations

import importlib

import pytest

from roca_core.cli.head_stage import head_stage_parser

COMMON = {"--checkpoint", "--data", "--out", "--epochs", "--batch", "--lr", "--workers", "--threads",
          "--max-train-images", "--seed", "--no-progress"}
# the options each CLI adds to the common ones
OWN = {"yaw": {"--crop", "--width", "--bins", "--augment"},
       "centre": {"--crop", "--width", "--box-jitter", "--augment"},
       "up": {"--crop", "--width"},
       "class": {"--crop", "--width", "--mix"},
       "shape": {"--crop", "--width", "--no-augment"},
       "retrieval": {"--noise"}}
STAGE_CONFIG = {"yaw": ("yaw_stage", "YawStageConfig"), "centre": ("centre_stage", "CentreStageConfig"),
                "up": ("up_stage", "UpStageConfig"), "class": ("class_stage", "ClassStageConfig"),
                "shape": ("shape_stage", "ShapeStageConfig"), "retrieval": ("retrieval_stage", "RetrievalStageConfig")}


def options(parser) -> set[str]:
    return {a.option_strings[-1] for a in parser._actions if a.option_strings} - {"--help"}


@pytest.mark.parametrize("head", sorted(OWN))
def test_each_head_cli_takes_the_common_options_with_its_stage_defaults(head):
    parser = importlib.import_module(f"roca_core.cli.train_{head}").build_parser()
    assert parser.prog == f"roca-train-{head}"
    assert options(parser) == COMMON | OWN[head]
    module, name = STAGE_CONFIG[head]
    d = getattr(importlib.import_module(f"roca_core.training.{module}"), name)()
    args = parser.parse_args(["--checkpoint", "in.safetensors", "--out", "o"])
    assert (args.epochs, args.batch, args.lr, args.workers, args.seed) == (d.epochs, d.batch, d.lr, d.workers, d.seed)
    assert args.data == "data/synthetic" and args.threads == 0 and args.max_train_images == 0
    with pytest.raises(SystemExit):  # --checkpoint and --out are required
        parser.parse_args(["--out", "o"])


def test_the_common_parser_adds_crop_and_width_only_for_heads_that_read_a_crop():
    class Defaults:
        epochs, batch, lr, workers, seed, crop, width = 3, 8, 0.01, 1, 7, 24, 12

    doc = "roca-train-x: one line.\n\nMore text."
    with_crop = head_stage_parser("roca-train-x", doc, Defaults(), "the network")
    assert options(with_crop) == COMMON | {"--crop", "--width"}
    args = with_crop.parse_args(["--checkpoint", "c", "--out", "o", "--lr", "0.5"])
    assert (args.crop, args.width, args.lr, args.epochs) == (24, 12, 0.5, 3)
    assert with_crop.description == "roca-train-x: one line." and with_crop.epilog == doc
    assert options(head_stage_parser("roca-train-x", doc, Defaults(), "the network", crop_and_width=False)) == COMMON

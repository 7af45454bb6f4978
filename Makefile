# The two commands of the README: `make demo` and `make test`. Both set up .venv first
# (scripts/setup_env.sh; seconds when it is already up to date).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# Network safety: DDS discovery stays on this machine in everything make starts.
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST

.PHONY: setup test demo bench bench-camera demo-model
setup:
	@bash scripts/setup_env.sh

test: setup
	$(PY) -m pytest test

demo: setup
	$(VENV)/bin/roca-demo --out demo_out

# All benchmarks, each printing its measured table (2.5 min on 2 CPU cores).
bench: setup
	$(PY) bench/bench_model.py --threads 2
	$(PY) bench/bench_train_step.py --threads 2
	$(PY) bench/bench_render.py
	$(PY) bench/bench_node.py --threads 2

# The node at camera rate: 640x480 and 1280x720 at 30 Hz, 10,000 frames each (~12 min).
bench-camera: setup
	$(PY) bench/bench_node_camera.py --threads 2

# Reproduce models/roca_demo.safetensors from scratch (about 16 h on 2 idle CPU cores: 3 min
# data, ~40 + ~15 min for the two training stages, ~125 min for the five image-only heads,
# ~114 min to render nineteen more data sets and ~170 min for the heads on them, ~10 min for the
# NOC encoder, ~60 min for each of stages 5, 6 and 7, ~90 min for each of stages 8, 9 and 10, ~5 min
# for the last class stage, ~20 min for the last yaw and centre stages, ~30 min evaluation;
# without the GPU stages); see models/README.md.
demo-model: setup
	bash scripts/train_demo_model.sh

# Development entry points. `make test` is all a newcomer needs; CI runs it via .ci/run.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-stamp
# Explicit, not a wildcard: other distros' files (e.g. a Kilted one) must not be mixed in.
REQUIREMENTS := requirements/dev.txt requirements/ros-jazzy.txt
# A second distro (Kilted wheels) for the node tests only; test/test_node_kilted.py uses it.
KILTED_VENV := .venv-kilted
KILTED_STAMP := $(KILTED_VENV)/.setup-stamp
PYTEST_ARGS ?=
# Where pip may also look for torch (requirements/dev.txt pins torch==2.13.0). Empty, the
# default: pip's configured indexes only; on this project's development and CI machines a local
# wheel cache holds the CPU build. From plain PyPI on a fresh machine that pin is the CUDA build
# and about 17 nvidia-* wheels (several GB). On such a machine, before the first `make setup`
# (or after `make clean`): make setup TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# takes PyTorch's CPU-only build (torch 2.13.0+cpu satisfies the pin). `make test` and
# `make demo` take the variable too.
TORCH_INDEX_URL ?=
TORCH_INDEX := $(if $(strip $(TORCH_INDEX_URL)),--extra-index-url $(strip $(TORCH_INDEX_URL)))

# pip on this kind of machine prints many harmless "WARNING: Location '...' is ignored: it is
# neither a file nor a directory." lines. Drop exactly those. The braces keep grep's status 1
# (everything filtered) from failing the recipe, while pipefail still fails it when pip fails.
PIP_FILTER := { grep -v 'is ignored: it is neither a file nor a directory' || true; }

.PHONY: help setup setup-kilted lint test demo clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-13s %s\n", $$1, $$2}'

setup: $(STAMP) ## create .venv, install requirements/{dev,ros-jazzy}.txt and this package (editable)

$(STAMP): $(REQUIREMENTS) setup.py setup.cfg
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install $(TORCH_INDEX) $(addprefix -r ,$(REQUIREMENTS)) 2>&1 | $(PIP_FILTER)
	$(PY) -m pip install --no-deps -e . 2>&1 | $(PIP_FILTER)
	touch $@

setup-kilted: $(KILTED_STAMP) ## create .venv-kilted: the node and its test driver on ROS 2 Kilted

$(KILTED_STAMP): requirements/ros-kilted.txt setup.py setup.cfg
	test -x $(KILTED_VENV)/bin/python || python3 -m venv $(KILTED_VENV)
	$(KILTED_VENV)/bin/python -m pip install -r requirements/ros-kilted.txt 2>&1 | $(PIP_FILTER)
	$(KILTED_VENV)/bin/python -m pip install --no-deps -e . 2>&1 | $(PIP_FILTER)
	touch $@

lint: setup ## ruff over the repository
	$(VENV)/bin/ruff check .

test: setup setup-kilted lint ## lint, then the whole test suite (PYTEST_ARGS='-m static' to select)
	$(PY) -m pytest $(PYTEST_ARGS)

# The whole loop on CPU in a few minutes: synthetic YCOR-format data, a micro contrastive model
# trained from scratch, ONNX export, the IMU cost calibrated on one simulated drive, a second
# simulated drive (raw camera, odometry and IMU over terrain the model never saw) replayed with
# self-supervision (the patch_cost node's core labels what the robot drove over), then again
# with the ground-truth cost on the same footprints, for comparison. Starts from scratch in
# $(DEMO) each time.
DEMO := runs/demo
BIN := $(VENV)/bin

demo: setup ## set up, train a micro model, export, replay a simulated drive with self-supervision
	rm -rf $(DEMO)
	$(BIN)/contrast-semask-data synth $(DEMO)/synth_raw --n 60 --seed 0
	$(BIN)/contrast-semask-data convert-ycor $(DEMO)/synth_raw $(DEMO)/synth_ycor
	$(BIN)/contrast-semask-train --config config/train/micro_contrastive.yaml \
		--data $(DEMO)/synth_ycor --work-dir $(DEMO)/train
	$(BIN)/contrast-semask-export onnx $(DEMO)/train/best.pt --height 128 --width 240 \
		--bank-size 256 --out $(DEMO)/model.onnx
	$(BIN)/contrast-semask-data drive-bag $(DEMO)/calibration_drive --frames 200 \
		--size 68x128 --seed 3
	$(BIN)/contrast-semask-calibrate-imu $(DEMO)/calibration_drive \
		--write-params $(DEMO)/imu_calibration.yaml
	$(BIN)/contrast-semask-data drive-bag $(DEMO)/drive --frames 120 --size 272x512 --seed 1000
	$(BIN)/contrast-semask-replay $(DEMO)/drive --model $(DEMO)/model.onnx \
		--params config/cost_map.yaml --image-topic /camera/image_raw \
		--supervision imu --supervision-params $(DEMO)/imu_calibration.yaml \
		--ground-truth-topic /ground_truth/cost --footprint-truth-topic /ground_truth/patch_cost \
		--hold-out-every 5 --out $(DEMO)/replay
	$(BIN)/contrast-semask-replay $(DEMO)/drive --model $(DEMO)/model.onnx \
		--params config/cost_map.yaml --image-topic /camera/image_raw \
		--supervision imu --supervision-params $(DEMO)/imu_calibration.yaml --truth-costs \
		--ground-truth-topic /ground_truth/cost --footprint-truth-topic /ground_truth/patch_cost \
		--hold-out-every 5 --out $(DEMO)/replay_truth_costs
	@echo "demo done: report $(DEMO)/replay/report.json (its supervision and bev sections), \
	plots, contact_sheet.png and bev.png (the cost grid) beside it; \
	$(DEMO)/replay_truth_costs: the same labels with true costs"

clean: ## remove .venv, build outputs and caches
	rm -rf $(VENV) $(KILTED_VENV) build dist *.egg-info .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

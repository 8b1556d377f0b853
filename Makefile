# lvjob: `make study` runs the study (demo scale, tiny model, this machine); `make test` runs the tests.
# Both install what they need into .venv first.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
LVJOB := $(VENV)/bin/lvjob
STUDY ?= jobs/study.yaml
SCALE ?= demo
export LVJOB_CACHE ?= $(CURDIR)/.cache
export HF_HUB_OFFLINE ?= 1

.PHONY: install study data plan flops bench test test-slow test-all clean help

help:
	@echo "make study      generate data, plan the budget, run zero-shot and the default fine-tune (tiny model, demo scale)"
	@echo "make test       run the test suite (make test-slow: the slow tests; make test-all: both)"
	@echo "make plan       FLOP plan of STUDY at SCALE;  make flops: per-step FLOP table of Qwen2.5-0.5B"
	@echo "make bench      runner benchmarks (batched eval, constrained decoding, checkpoints); see benchmarks/README.md"
	@echo "make install    create .venv with pinned dependencies (CPU torch here; CUDA torch on GPU machines)"

install: $(VENV)/.installed

# torch first and alone: `pip install torch==2.13.0` takes the CPU build where one is provided locally
# and the CUDA build from the package index on a GPU machine. Everything else is pinned in requirements.txt.
# Bytecode is compiled once so imports stay fast even with PYTHONDONTWRITEBYTECODE set.
$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	$(PY) -m compileall -q -j 0 $(VENV)/lib > /dev/null || true
	$(LVJOB) prepare
	touch $@

data/lv.h5: | $(VENV)/.installed
	$(LVJOB) data generate --out $@ --systems 1000 --points 100 --seed 0

data: data/lv.h5

plan: install
	$(LVJOB) plan $(STUDY) --scale $(SCALE)

flops: install
	$(LVJOB) flops --model qwen2.5-0.5b --context 512 --batch 4 --rank 4

# For now the study runs what exists, in order, on the tiny model at the demo scale of jobs/study.yaml:
# zero-shot with both prompts, then the default LoRA fine-tune and its evaluation. The cluster issue
# replaces this with the whole DAG (`lvjob submit`).
DEMO_EVAL := series=20
DEMO_TRAIN := steps=60 context=128 lr=3e-3 checkpoint_every=20 val_every=20 val_chunks=8 $(DEMO_EVAL)

study: install data/lv.h5
	$(LVJOB) data check data/lv.h5
	$(LVJOB) plan $(STUDY) --scale $(SCALE)
	$(LVJOB) run jobs/zero_shot_plain.yaml $(DEMO_EVAL)
	$(LVJOB) run jobs/zero_shot_instruct.yaml $(DEMO_EVAL)
	$(LVJOB) run jobs/default_lora.yaml $(DEMO_TRAIN)

bench: install
	$(PY) benchmarks/runner_bench.py

test: install
	$(PY) -m pytest -q -m "not slow"

test-slow: install
	$(PY) -m pytest -q -m slow

test-all: install
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) .cache .pytest_cache

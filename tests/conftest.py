import os
import shutil
import subprocess
from pathlib import Path

import pytest

# Under pytest-xdist each of the workers (one per core) computes with one thread, and so do the runs it
# starts (they inherit the variable): two workers of two threads each on two cores thrash.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402  (after the thread count is set)

from lvjob.run.runner import keep_freed_memory  # noqa: E402

keep_freed_memory()  # tests compute on the CPU in this process too: as in a run process, freed large blocks are reused

# Every device this machine has: tests that take the `device` fixture run on each (CUDA where present),
# so a GPU machine runs the same tests (`make device-check` selects them with `-m device`).
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

# Tests never reach the Hugging Face hub: everything they load is built locally.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"


@pytest.fixture(scope="session", autouse=True)
def _shared_cache(tmp_path_factory):
    """One cache (tokenizer, tiny model, demo model, the random full-size model) for the whole test session and all
    its workers, never the user's. Artefacts are built once whichever worker asks first (lvjob.core.atomic.one_at_a_time).

    It starts as a copy of the cache the suite was started with, if any (`make test`: the one `make
    install` built), so the demo model is not pre-trained again; tests of building use folders of their own.
    """
    if "LVJOB_TEST_CACHE" in os.environ:  # reuse a built cache between local runs
        os.environ["LVJOB_CACHE"] = os.environ["LVJOB_TEST_CACHE"]
        yield
        return
    from lvjob.core.atomic import one_at_a_time

    root = tmp_path_factory.getbasetemp()
    cache = (root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root) / "lvjob-cache"  # xdist: the workers' common folder
    built = Path(os.environ.get("LVJOB_CACHE", cache))
    with one_at_a_time(cache.with_name("lvjob-cache.lock")):
        if cache.exists():
            pass  # another worker made it
        elif built.is_dir() and built != cache:
            shutil.copytree(built, cache)
        else:
            cache.mkdir()
    os.environ["LVJOB_CACHE"] = str(cache)
    yield


@pytest.fixture(scope="session")
def small_data(tmp_path_factory) -> Path:
    """A small Lotka-Volterra file: 20 systems (16 train / 2 validation / 2 test) x 30 points."""
    from lvjob import data

    path = tmp_path_factory.mktemp("data") / "lv-small.h5"
    lv, params = data.generate(n_systems=20, n_points=30, seed=0)
    data.write(path, lv, params)
    return path


@pytest.fixture(scope="session")
def tokenizer():
    from lvjob.data.tokenizer import load_tokenizer

    return load_tokenizer()


@pytest.fixture(scope="session")
def tiny_model():
    """The tiny model with its seeded random weights (never trained)."""
    from lvjob.models.loading import ModelChoice, load_model

    return load_model(ModelChoice("tiny")).eval()


@pytest.fixture(scope="session", params=DEVICES)
def device(request) -> str:
    return request.param


# The test modules that use the one test cluster (the `slurm` fixture). Under pytest-xdist (`make test`
# runs `-n 2`) they run on one worker, one test at a time as without xdist: they share its queue and
# its two CPUs. Every other module stays on one worker too, so a module-scoped fixture is built once.
CLUSTER_MODULES = ("tests/orchestrate/test_slurm.py", "tests/orchestrate/test_slurm_status.py")
# The longest modules besides (CPU seconds per module under `make test`, on the 2-core
# machine), handed out right after the cluster's: a worker that picks one up last would keep the
# suite waiting for it alone. Only the order changes; a module missing here runs after them.
LONGEST_FIRST = ("tests/test_benchmarks.py", "tests/study/test_stage_table.py", "tests/orchestrate/test_submit.py",
                 "tests/run/test_resume.py", "tests/models/test_fullsize.py", "tests/run/test_signals.py",
                 "tests/test_device_check.py", "tests/run/test_tracking.py", "tests/run/test_pretrain.py",
                 "tests/forecasting/test_decoding.py")


def pytest_collection_modifyitems(items):
    """Tests that run on every available device carry the `device` marker; the cluster's tests come
    first (the longest scope, so xdist starts it at once), and only from CLUSTER_MODULES; then LONGEST_FIRST."""
    for item in items:
        if "device" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.device)
    on_cluster = {item.nodeid.split("::")[0] for item in items if "slurm" in getattr(item, "fixturenames", ())}
    if on_cluster - set(CLUSTER_MODULES):
        raise pytest.UsageError(f"{sorted(on_cluster - set(CLUSTER_MODULES))} use the test cluster: add them to "
                                "CLUSTER_MODULES in tests/conftest.py")
    gone = [m for m in LONGEST_FIRST if not (Path(__file__).parents[1] / m).exists()]
    if gone:
        raise pytest.UsageError(f"{gone} in LONGEST_FIRST (tests/conftest.py) do not exist: rename or remove them")
    items.sort(key=_order)  # stable: the order within each module is kept


def _order(item) -> int:
    """The cluster's tests first, then the longest modules, then the rest."""
    scope = _scope(item.nodeid)
    if scope == "cluster":
        return 0
    return 1 + LONGEST_FIRST.index(scope) if scope in LONGEST_FIRST else 1 + len(LONGEST_FIRST)


def _scope(nodeid: str) -> str:
    module = nodeid.split("::")[0]
    return "cluster" if module in CLUSTER_MODULES else module


def pytest_xdist_make_scheduler(config, log):
    """Whole scopes to a worker: a module, or every module of the test cluster together; the longest first,
    except to the cluster's worker, which after its scope takes the shortest left."""
    from xdist.scheduler import LoadScopeScheduling

    class ByScope(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _scope(nodeid)

        def _assign_work_unit(self, node) -> None:
            # The cluster's worker ends last if it takes a long module after its own: it takes from the short end.
            if "cluster" in self.assigned_work.get(node, {}) and self.workqueue:
                self.workqueue.move_to_end(next(reversed(self.workqueue)), last=False)
            super()._assign_work_unit(node)

    config.option.loadscopereorder = False  # the order above, not xdist's (by number of tests: the longest came last)
    return ByScope(config, log)


@pytest.fixture(scope="session")
def slurm():
    """The test cluster (slurm/local/, up under `make test` as root): its SLURM_CONF, its variables set here."""
    env_file = os.environ.get("LVJOB_SLURM_ENV")
    if not env_file or not Path(env_file).exists():
        why = "no test cluster: run the tests with slurm/local/with-cluster.sh as root (make test does)"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    for line in Path(env_file).read_text().splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        os.environ[key] = value.strip("'\"")
    subprocess.run(["sinfo"], check=True, capture_output=True, timeout=30)
    return os.environ["SLURM_CONF"]


@pytest.fixture
def study_runs(tmp_path):
    """The demo study's runs in every state: complete, failed, running, requeued (with lost FLOPs), not started."""
    from helpers import STUDY, evaluation, write_run
    from lvjob.cluster.profile import Profile
    from lvjob.study.choices import job_for, study_nodes
    from lvjob.study.spec import load_study

    study = load_study(STUDY, scale="demo")
    profile = Profile(runs_root=str(tmp_path / "runs"), results_dir=str(tmp_path / "results"))
    nodes = {n.key: n for n in study_nodes(study)}
    job = lambda key: job_for(study, profile, nodes[key])  # noqa: E731
    write_run(job("zero-shot-plain"), "complete", evaluation=evaluation(2.0, 5.0, split="test"), ledger={"prompt": 100, "generation": 20})
    write_run(job("baseline-physics"), "complete", ledger={},
              evaluation=evaluation(1e-6, 1e-12, split="test", parse_rate=None, samples=1) | {"fell_back": 1, "median_fit_residual": 0.12})
    write_run(job("zero-shot-instruct"), "failed")
    write_run(job("default"), "running", rows=[{"step": s, "loss": 3.0, "flops": 1000 * s, "lost_flops": 0} for s in (1, 2, 12)])
    for i, key in enumerate(k for k in nodes if k.startswith("stage1-")):
        if key == "stage1-r8-lr0.001":
            continue  # never started
        lost = 300 if key == "stage1-r2-lr0.1" else 0  # this one was requeued and re-did 3 steps
        write_run(job(key), "complete", rows=[{"step": 20, "loss": 2.0, "val_loss": 3.0 - 0.1 * i}],
                  evaluation=evaluation(1.0 + i, 2.0 + i), ledger={"train": 2000 + lost, "lost_to_preemption": lost},
                  attempts=2 if lost else 1)
    # stage 2 at stage 1's best (stage1-r8-lr0.01, i = 7); ctx256 not started
    write_run(job("stage2-ctx64"), "complete", rows=[{"step": 20, "loss": 1.0, "val_loss": 1.5}],
              evaluation=evaluation(0.9, 1.2), ledger={"train": 700})
    write_run(job("stage2-ctx128"), "preempted", rows=[{"step": 5, "loss": 1.0, "flops": 350, "lost_flops": 40}])
    return study, profile

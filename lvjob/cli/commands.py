"""What each `lvjob` subcommand runs (the parser is lvjob.cli's): one function per command, each taking the
parsed arguments and returning the exit code."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from lvjob.core.config import ConfigError
from lvjob.core.paths import ResultsDir

STUDY_HELP = "study file, e.g. jobs/study.yaml"


def model_names() -> str:
    from lvjob.models.registry import MODEL_NAMES

    return ", ".join(MODEL_NAMES)


def fetchable() -> list[str]:
    from lvjob.models.registry import MODELS

    return [name for name, spec in MODELS.items() if spec.hub_id]


def data_generate(args) -> int:
    from lvjob import data

    t0 = time.perf_counter()
    lv, params = data.generate(n_systems=args.systems, n_points=args.points, seed=args.seed)
    data.write(args.out, lv, params, seed=args.seed, t_end=data.T_END, generator="lvjob")
    print(f"wrote {args.out}: {args.systems} systems x {args.points} points (seed {args.seed}) in {time.perf_counter() - t0:.1f} s")
    return 0


def data_check(args) -> int:
    from lvjob import data

    lv = data.load(args.path)
    spec = data.DataSpec()  # the study's split and horizon unless a study file says otherwise
    split = spec.split(lv.n_systems)
    ctx = data.context_points(lv.n_points, spec.horizon_fraction)
    print(f"{args.path}: {lv.n_systems} systems x {lv.n_points} points x 2 (prey, predator); split "
          + " / ".join(f"{len(systems)} {name}" for name, systems in zip(data.SPLITS, split)) + " systems; "
          f"context {ctx} points, horizon {lv.n_points - ctx} points")
    return 0


def flops(args) -> int:
    from lvjob.models.flops import shape_of, step_table

    print(step_table(shape_of(args.model), args.batch, args.context, args.rank))
    return 0


def plan(args) -> int:
    from lvjob.study.plan import format_plan, plan_study
    from lvjob.study.spec import load_study

    if args.profile:
        from lvjob.orchestrate.submission import allocation_lines

        study, profile = _study_and_profile(args)
    else:
        study, profile = load_study(args.study, scale=args.scale, overrides=args.overrides), None
    plan = plan_study(study)
    print(format_plan(plan))
    if profile is not None:
        print("\n" + "\n".join(allocation_lines(study, profile, plan)))
    if plan.fits:
        return 0
    _plan_proposal(study)
    return 1


def _plan_proposal(study) -> None:
    from lvjob.study.plan import propose

    proposal = propose(study)
    if proposal is None:
        print("\nNo step counts fit: the evaluations with one step of every training stage exceed the budget.")
    else:
        print(f"\nLargest step counts that fit: {proposal.how}; total {proposal.plan.total:.3e} "
              f"({proposal.plan.total / proposal.plan.budget:.2%} of the budget).")


def run(args) -> int:
    from lvjob.run.job import load_job

    job = load_job(args.job, args.overrides)
    if args.print_run_dir:
        print(job.resolved_run_dir())
        return 0
    if not job.quantize_4bit:
        from lvjob.models.loading import without_bitsandbytes

        without_bitsandbytes()
    from lvjob.core.logs import run_log
    from lvjob.run.lock import RunBusy
    from lvjob.run.runner import keep_freed_memory, pick_device
    from lvjob.run.runner import run as run_job

    if pick_device(job.device) == "cpu":
        keep_freed_memory()
    try:
        return run_job(job, log=run_log(job.run_id()))
    except RunBusy as e:
        print(f"lvjob run: error: {e}", file=sys.stderr)
        return 4


def _study_and_profile(args):
    from lvjob.cluster.profile import load_profile
    from lvjob.study.spec import load_study

    profile = load_profile(args.profile)
    overrides = ([f"model={profile.model}"] if profile.model else []) + list(getattr(args, "overrides", []))
    study = load_study(args.study, scale=args.scale or profile.scale, overrides=overrides)
    return study, profile


def check(args) -> int:
    from lvjob.orchestrate import submission
    from lvjob.orchestrate import preflight

    t0 = time.perf_counter()
    study, profile = _study_and_profile(args)
    problems = preflight.problems(study, profile)
    try:
        plan = submission.check_budget(study)
    except submission.OverBudget as e:
        problems.append(f"budget: {e}; `lvjob plan` proposes step counts that fit")
    for line in problems:
        print(line)
    for caution in preflight.cautions(study, profile):
        print(f"warning: {caution}")
    if problems:
        print(f"pre-flight: {len(problems)} problem(s); nothing would be queued", file=sys.stderr)
        return 1
    print(f"pre-flight ok in {time.perf_counter() - t0:.1f} s: {args.study} (scale {study.scale}) with profile "
          f"{args.profile}, plan {plan.total:.3e} FLOPs ({plan.total / plan.budget:.3%} of the budget)")
    return 0


def submit(args) -> int:
    from lvjob.orchestrate import submission
    from lvjob.cluster.executors import Stopped, backend
    from lvjob.study.plan import format_plan
    from lvjob.orchestrate.status import report
    from lvjob.study.choices import study_results

    study, profile = _study_and_profile(args)
    try:
        sub = submission.submit(study, profile, log=lambda m: print(m, flush=True))
    except submission.PreflightFailed as e:
        print("\n".join(e.problems), file=sys.stderr)
        print(f"Nothing submitted: the pre-flight found {len(e.problems)} problem(s) with {args.profile}.", file=sys.stderr)
        return 1
    except submission.OverBudget as e:
        print(format_plan(e.plan))
        _plan_proposal(study)
        print(f"\nNothing submitted: {args.study} (scale {study.scale}) is over its FLOP budget.")
        return 1
    except (submission.OtherPackingActive, submission.UnrecordedJobs) as e:
        print(f"Nothing submitted: {e}.", file=sys.stderr)
        return 1
    except Stopped as e:  # the local executor, on USR2 or TERM
        print(e, file=sys.stderr)
        return 3
    active = f", {len(sub.already_active)} still queued or running" if sub.already_active else ""
    print(f"\n{len(sub.jobs)} job(s) submitted; {sub.already_complete} of {len(sub.states)} already complete{active}. "
          f"Records: {sub.study_dir}; run index: {study_results(study, profile).index}")
    if backend(profile).detached:
        print(f"Follow it with `lvjob status {args.study} --profile {args.profile}` (or `make status`).")
        return 0
    print(report(study, profile))
    return 0 if all(s.status == submission.Need.COMPLETE for s in sub.states) else 1


def status(args) -> int:
    from lvjob.core.timestamps import clock
    from lvjob.orchestrate.status import report

    study, profile = _study_and_profile(args)
    if not args.watch:
        print(report(study, profile))
        return 0
    try:
        while True:  # redrawn in place: home the cursor, clear the screen
            print("\033[H\033[2J" + clock() + " " + report(study, profile), flush=True)
            time.sleep(args.watch)
    except KeyboardInterrupt:
        return 0


def cancel(args) -> int:
    from lvjob.orchestrate import submission

    study, profile = _study_and_profile(args)
    print(submission.cancel(study, profile))
    return 0


def aggregate(args) -> int:
    from lvjob.results.aggregate import write_results

    study, profile = _study_and_profile(args)
    out = write_results(study, profile)
    print(ResultsDir(out).summary.read_text())
    print(f"wrote {out}/: summary.md, runs.json and each table as .md, .csv and .tex; "
          f"{profile.results_dir} links to it")
    return 0


def plot(args) -> int:
    from lvjob.results.plots import plot_results

    if not ResultsDir(args.results).index.exists():
        raise FileNotFoundError(f"{ResultsDir(args.results).index}: no results here; run `lvjob aggregate` (or `make pull`) first")
    for path in plot_results(args.results):
        print(f"wrote {path}")
    return 0


def pull(args) -> int:
    from lvjob.cluster.profile import load_profile
    from lvjob.orchestrate.pull import pull as pull_results

    pull_results(load_profile(args.profile), checkpoints=args.checkpoints, log=lambda m: print(m, flush=True))
    return 0


def prepare(args) -> int:
    from lvjob.models.loading import ensure_tiny_model
    from lvjob.data.tokenizer import ensure_tokenizer

    print(f"tokenizer: {ensure_tokenizer()}")
    print(f"tiny model: {ensure_tiny_model()}")
    from lvjob.run.pretrain import ensure_demo_model
    from lvjob.run.runner import keep_freed_memory

    keep_freed_memory()  # pre-training runs on the CPU
    print(f"demo model (tiny, pre-trained on the training systems' text): {ensure_demo_model()}")
    return 0


def fetch_model(args) -> int:
    from lvjob.models.modelcheck import download
    from lvjob.models.registry import MODELS

    hub_id = MODELS[args.model].hub_id
    print(f"downloading {hub_id} into {args.to} (config, weights, tokenizer only)", flush=True)
    try:
        download(args.model, args.to)
    except Exception as e:  # noqa: BLE001 - the hub client's failures (network, offline mode, auth, disk) are many; each ends here
        print(f"lvjob fetch-model: error: could not download {hub_id} into {args.to}: {type(e).__name__}: {' '.join(str(e).split())}; "
              f"valid: a machine with internet (the login node) and HF_HUB_OFFLINE unset", file=sys.stderr)
        return 1
    return _report_model(args.to, args.model)


def check_model(args) -> int:
    from lvjob.models.registry import MODEL_NAMES

    if args.model not in MODEL_NAMES:
        raise ConfigError(f"--model {args.model!r}: unknown model; valid: {', '.join(MODEL_NAMES)}")
    return _report_model(args.path, args.model)


def _report_model(folder: Path, name: str) -> int:
    from lvjob.models.modelcheck import problems

    found = problems(folder, name)
    for line in found:
        print(line, file=sys.stderr)
    if found:
        print(f"{folder}: not a usable {name} model ({len(found)} problem(s) above)", file=sys.stderr)
        return 1
    print(f"{folder}: a complete {name} (config, weights, tokenizer checked). In your profile:")
    print(f"model_path: {folder.resolve()}")
    return 0

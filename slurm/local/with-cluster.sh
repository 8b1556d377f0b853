#!/usr/bin/env bash
# Run a command with the local test cluster up (slurm/local/up.sh), then tear it down.
#   slurm/local/with-cluster.sh .venv/bin/python -m pytest
# As root (CI, a test machine) the cluster comes up and LVJOB_SLURM_ENV tells the tests where it is.
# Without root it cannot: the command runs anyway and the SLURM tests are skipped, saying why
# (under CI=true they fail instead).
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BASE=${LVJOB_SLURM_BASE:-/tmp/lvjob-slurm}
if [ "$(id -u)" = 0 ]; then
  t0=$(date +%s%N)
  trap '"$HERE/down.sh" >/dev/null 2>&1' EXIT   # also after a partial bring-up
  if "$HERE/up.sh"; then
    echo "[slurm/local] bring-up took $(( ($(date +%s%N) - t0) / 1000000 )) ms"
    export LVJOB_SLURM_ENV=$BASE/env
  else
    echo "[slurm/local] the test cluster did not come up: the SLURM tests cannot run" >&2
  fi
else
  echo "[slurm/local] not root: no test cluster here; the SLURM tests will be skipped" >&2
fi
"$@"

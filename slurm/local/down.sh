#!/usr/bin/env bash
# Stop the test cluster started by slurm/local/up.sh and remove its folder.
set -uo pipefail
BASE=${LVJOB_SLURM_BASE:-/tmp/lvjob-slurm}
[ -d "$BASE" ] || exit 0
[ -e "$BASE/.lvjob-test-cluster" ] || { echo "[slurm/local] $BASE is not a test cluster folder: left alone" >&2; exit 1; }
export SLURM_CONF=$BASE/etc/slurm.conf
[ -f "$SLURM_CONF" ] && scancel --full --quiet --user=root 2>/dev/null
for d in slurmd slurmctld slurmdbd mariadb munged; do
  pidfile=$BASE/run/$d.pid
  [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null
done
for _ in $(seq 50); do  # up to 10 s for the daemons to exit
  alive=0
  for d in slurmd slurmctld slurmdbd mariadb munged; do
    pidfile=$BASE/run/$d.pid
    [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null && alive=1
  done
  [ $alive = 0 ] && break
  sleep 0.2
done
for d in slurmd slurmctld slurmdbd mariadb munged; do
  pidfile=$BASE/run/$d.pid
  [ -f "$pidfile" ] && kill -9 "$(cat "$pidfile")" 2>/dev/null
done
rm -rf "$BASE"
echo "[slurm/local] down"

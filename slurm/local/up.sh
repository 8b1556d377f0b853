#!/usr/bin/env bash
# Bring up a single-node SLURM 22.05 (Debian's slurm-wlm) with accounting, as root, without systemd.
#
#   sudo slurm/local/up.sh            # installs the packages if missing, starts munge, MariaDB,
#                                     # slurmdbd, slurmctld and slurmd under $LVJOB_SLURM_BASE
#   source /tmp/lvjob-slurm/env       # exports SLURM_CONF for clients (sbatch, sacct, submitit)
#   slurm/local/down.sh               # stops everything and removes the folder
#
# Everything lives under one folder (default /tmp/lvjob-slurm): munge key and socket, the MariaDB
# datadir, SLURM's state, spool, logs and configs. Job ids restart at 1 after each bring-up.
# Accounting (slurmdbd + MariaDB) is not optional: submitit polls job states with `sacct`.
set -euo pipefail

BASE=${LVJOB_SLURM_BASE:-/tmp/lvjob-slurm}
CLUSTER=${LVJOB_SLURM_CLUSTER:-lvjobci}
DB_PORT=${LVJOB_SLURM_DB_PORT:-3307}
CTLD_PORT=${LVJOB_SLURM_CTLD_PORT:-6817}
SLURMD_PORT=${LVJOB_SLURM_SLURMD_PORT:-6818}
DBD_PORT=${LVJOB_SLURM_DBD_PORT:-6819}
HERE=$(cd "$(dirname "$0")" && pwd)

say() { printf '[slurm/local] %s\n' "$*"; }
die() { printf '[slurm/local] error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (the daemons run as root here; SlurmUser=root)"

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local limit=$1 what=$2; shift 2
  for _ in $(seq $((limit * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  die "timed out after ${limit}s waiting for $what (logs in $BASE/log)"
}

# --- packages ------------------------------------------------------------------------------------
packages=(slurmctld slurmd slurm-client slurmdbd munge mariadb-server)
missing=()
for p in "${packages[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  command -v apt-get >/dev/null || die "packages missing (${missing[*]}) and no apt-get to install them"
  say "installing ${missing[*]}"
  # Keep the packages' post-install scripts from starting the daemons with the system's configs.
  policy=/usr/sbin/policy-rc.d
  if [ ! -e $policy ]; then
    printf '#!/bin/sh\nexit 101\n' > $policy; chmod +x $policy
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT   # removed even if the install fails
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- a clean base folder -------------------------------------------------------------------------
# The folder is deleted at bring-up and tear-down: only one this script made (it holds the marker).
MARKER=.lvjob-test-cluster
if [ -e "$BASE" ] && [ ! -e "$BASE/$MARKER" ]; then die "$BASE exists and is not a test cluster folder; set LVJOB_SLURM_BASE"; fi
if [ -d "$BASE/run" ]; then say "a cluster (or part of one) is set up in $BASE: stopping it first"; "$HERE/down.sh"; fi
rm -rf "$BASE"
mkdir -p "$BASE"/{munge,run,log,state,spool,mysql,etc}
touch "$BASE/$MARKER"
chmod 755 "$BASE" "$BASE/run"   # munge clients refuse a socket whose directory others can write to

# --- munge ----------------------------------------------------------------------------------------
MUNGE_SOCKET=$BASE/run/munge.socket
dd if=/dev/urandom of="$BASE/munge/munge.key" bs=1024 count=1 status=none
chmod 700 "$BASE/munge"; chmod 400 "$BASE/munge/munge.key"
munged --force --socket="$MUNGE_SOCKET" --key-file="$BASE/munge/munge.key" --log-file="$BASE/log/munged.log" \
  --pid-file="$BASE/run/munged.pid" --seed-file="$BASE/munge/munged.seed"
wait_for 10 munge munge --socket="$MUNGE_SOCKET" -n

# --- MariaDB for slurmdbd -------------------------------------------------------------------------
DB_SOCKET=$BASE/run/mysqld.sock
mariadb-install-db --user=root --datadir="$BASE/mysql" --auth-root-authentication-method=socket \
  --skip-test-db > "$BASE/log/mariadb-install.log" 2>&1 || die "mariadb-install-db failed; see $BASE/log/mariadb-install.log"
nohup mariadbd --no-defaults --user=root --datadir="$BASE/mysql" --socket="$DB_SOCKET" --port="$DB_PORT" \
  --bind-address=127.0.0.1 --pid-file="$BASE/run/mariadb.pid" --log-error="$BASE/log/mariadb.log" \
  --innodb-buffer-pool-size=64M > /dev/null 2>&1 &
wait_for 30 MariaDB mariadb --no-defaults --socket="$DB_SOCKET" -uroot -e "SELECT 1"
mariadb --no-defaults --socket="$DB_SOCKET" -uroot <<SQL
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
FLUSH PRIVILEGES;
SQL

# --- configs --------------------------------------------------------------------------------------
HOST=$(hostname -s)
# Twice as many job slots as cores: the tests' jobs wait more than they compute (interpreter start,
# scheduling intervals, gates), so one slot per core leaves the cores idle while jobs queue.
# `config_overrides` (slurm.conf) lets slurmd run with more CPUs configured than it counts.
REAL_NODE=$(slurmd -C | head -n 1)
SLOTS=$(( $(echo "$REAL_NODE" | sed -E 's/.* CPUs=([0-9]+).*/\1/') * 2 ))
NODE_LINE="$(echo "$REAL_NODE" | sed -E "s/ CPUs=[0-9]+/ CPUs=$SLOTS/; s/SocketsPerBoard=[0-9]+/SocketsPerBoard=1/; \
  s/CoresPerSocket=[0-9]+/CoresPerSocket=$SLOTS/; s/ThreadsPerCore=[0-9]+/ThreadsPerCore=1/") NodeAddr=127.0.0.1"
export SLURM_CONF=$BASE/etc/slurm.conf

cat > "$BASE/etc/slurmdbd.conf" <<CONF
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=localhost
DbdPort=$DBD_PORT
SlurmUser=root
LogFile=$BASE/log/slurmdbd.log
PidFile=$BASE/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
CONF
chmod 600 "$BASE/etc/slurmdbd.conf"

sed -e "s|@BASE@|$BASE|g" -e "s|@HOST@|$HOST|g" -e "s|@CLUSTER@|$CLUSTER|g" -e "s|@MUNGE_SOCKET@|$MUNGE_SOCKET|g" \
    -e "s|@CTLD_PORT@|$CTLD_PORT|g" -e "s|@SLURMD_PORT@|$SLURMD_PORT|g" -e "s|@DBD_PORT@|$DBD_PORT|g" \
    -e "s|@NODE_LINE@|$NODE_LINE|g" "$HERE/slurm.conf.in" > "$SLURM_CONF"

# --- daemons ----------------------------------------------------------------------------------------
slurmdbd   # reads slurmdbd.conf beside $SLURM_CONF
wait_for 30 slurmdbd sacctmgr -n list cluster
sacctmgr -i add cluster "$CLUSTER" >/dev/null
slurmctld
wait_for 30 slurmctld scontrol ping
slurmd
wait_for 30 "the node to become idle" bash -c "sinfo -h -o %T | grep -qx idle"

printf 'export SLURM_CONF=%q\n' "$SLURM_CONF" > "$BASE/env"
say "up: cluster $CLUSTER on $HOST ($(sinfo -h -o '%c CPUs, %m MB')); run: source $BASE/env"

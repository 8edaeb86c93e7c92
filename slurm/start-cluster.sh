#!/usr/bin/env bash
# start-cluster.sh - bring up a REAL single-node Slurm on loopback for tests (Debian 12, root).
#
#   slurm/start-cluster.sh                  the main test cluster: munged, MariaDB + slurmdbd
#                                           (so sacct works), slurmctld, slurmd, 4 fake GPUs;
#                                           configs in /etc/slurm, where plain sbatch finds them
#   slurm/start-cluster.sh --no-accounting  a second, independent cluster with
#                                           AccountingStorageType=accounting_storage/none (no
#                                           sacct), its own ports and config file; use it with
#                                           SLURM_CONF=/tmp/launch-slurm-noacct/cluster/etc/slurm.conf
#
# Idempotent: installs missing packages (slurm/install.sh), rewrites the configs, starts what
# is not running (restarts slurmctld/slurmd when a config changed: GRES and node changes need a
# restart, not `scontrol reconfigure`) and waits until the node is idle. Everything mutable lives
# under $SLURM_TEST_BASE/cluster. Only processes named in its own pid files are ever signalled.
#
# The node advertises NODE_CPUS (default 8) CPUs whatever the hardware has (2 cores on CI):
# deliberate oversubscription so several tiny array tasks run at once.
#
# Knobs (environment):
#   SLURM_TEST_BASE  base dir           (default /tmp/launch-slurm, or /tmp/launch-slurm-noacct)
#   FAKE_GPUS        fake GPUs as GRES  (default 4; 0 = none)
#   NODE_CPUS        CPUs advertised    (default 8)
#   MAX_ARRAY_SIZE   MaxArraySize       (default 1001; 2 with --no-accounting, so tests there
#                                        exercise splitting a sweep into several arrays)
#   DB_PORT          MariaDB TCP port   (default 3307)
#   WAIT_S           seconds per step   (default 60)
# Stop with: slurm/stop-cluster.sh [--no-accounting] [--purge]
set -euo pipefail
umask 022

HERE=$(cd "$(dirname "$0")" && pwd)
WITH_ACCOUNTING=1
[ "${1:-}" = "--no-accounting" ] && WITH_ACCOUNTING=0
if [ "$WITH_ACCOUNTING" = 1 ]; then
  BASE=${SLURM_TEST_BASE:-/tmp/launch-slurm}
  CLUSTER_NAME=launchtest
  CONF_DIR=/etc/slurm
  CTLD_PORT=6817; SLURMD_PORT=6818; FIRST_JOB_ID=1
  MAX_ARRAY_SIZE=${MAX_ARRAY_SIZE:-1001}
else
  BASE=${SLURM_TEST_BASE:-/tmp/launch-slurm-noacct}
  CLUSTER_NAME=launchnoacct
  CONF_DIR=$BASE/cluster/etc
  CTLD_PORT=6827; SLURMD_PORT=6828; FIRST_JOB_ID=700000
  MAX_ARRAY_SIZE=${MAX_ARRAY_SIZE:-2}
fi
C=$BASE/cluster
export SLURM_CONF=$CONF_DIR/slurm.conf
FAKE_GPUS=${FAKE_GPUS:-4}
NODE_CPUS=${NODE_CPUS:-8}
DB_PORT=${DB_PORT:-3307}
DB_PASS=${DB_PASS:-launchtest}
WAIT_S=${WAIT_S:-60}
T_START=$(date +%s%N)

log() { local ms=$((($(date +%s%N) - T_START) / 1000000)); printf '[start-cluster %s +%d.%03ds] %s\n' "$CLUSTER_NAME" $((ms / 1000)) $((ms % 1000)) "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null && exec sudo -E bash "$0" "$@"
  die "must run as root"
fi

# alive PID COMM: exists, is not a zombie (dead daemons linger as zombies here), is named COMM
alive() {
  local pid=${1:-} comm=$2
  [[ "$pid" =~ ^[0-9]+$ ]] && [ -r "/proc/$pid/status" ] || return 1
  grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" && return 1
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$comm" ]
}
pid_in() { cat "$1" 2>/dev/null || true; }
wait_pidfile() { local i; for ((i = 0; i < 50; i++)); do [ -s "$1" ] && break; sleep 0.1; done; pid_in "$1"; }
wait_for() { # DESCRIPTION COMMAND...  (retries every 0.2 s up to WAIT_S)
  local what=$1 i; shift
  for ((i = 0; i < WAIT_S * 5; i++)); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  die "timed out after ${WAIT_S}s waiting for $what"
}

# ---------------------------------------------------------------- 1. packages
WITH_ACCOUNTING=$WITH_ACCOUNTING bash "$HERE/install.sh"
mkdir -p "$C"/{state,spool,log,run} "$CONF_DIR"
H=$(hostname -s)

# ---------------------------------------------------------------- 2. munge (shared)
[ -s /etc/munge/munge.key ] || mungekey --create --keyfile=/etc/munge/munge.key
chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
install -d -o munge -g munge -m 0755 /run/munge
if ! alive "$(pid_in /run/munge/munged.pid)" munged; then
  runuser -u munge -- /usr/sbin/munged </dev/null >/dev/null 2>&1
  log "munged started (pid $(wait_pidfile /run/munge/munged.pid))"
fi
wait_for "munge" bash -c 'munge -n | unmunge'

# ---------------------------------------------------------------- 3. MariaDB
DB=$C/mysql
if [ "$WITH_ACCOUNTING" = 1 ]; then
  install -d -o mysql -g mysql -m 0750 "$DB"
  if [ ! -d "$DB/mysql" ]; then
    mariadb-install-db --no-defaults --user=mysql --datadir="$DB" \
      --auth-root-authentication-method=socket --skip-test-db >"$C/log/mariadb-install.log" 2>&1 \
      || die "mariadb-install-db failed, see $C/log/mariadb-install.log"
  fi
  if ! alive "$(pid_in "$DB/mysqld.pid")" mariadbd; then
    # socket, pid file and log inside its own data folder; sizes slurmdbd insists on
    setsid /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$DB" \
      --socket="$DB/mysqld.sock" --pid-file="$DB/mysqld.pid" --log-error="$DB/mariadb.err" \
      --bind-address=127.0.0.1 --port="$DB_PORT" --skip-name-resolve \
      --innodb-buffer-pool-size=256M --innodb-log-file-size=64M --innodb-lock-wait-timeout=900 \
      </dev/null >/dev/null 2>&1 &
    wait_for "mariadbd" mariadb-admin --socket="$DB/mysqld.sock" ping
    log "mariadbd started (pid $(pid_in "$DB/mysqld.pid"))"
  fi
  mariadb --socket="$DB/mysqld.sock" -u root -e "
    CREATE DATABASE IF NOT EXISTS slurm_acct_db;
    CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
fi

# ---------------------------------------------------------------- 4. configs
HW=$(slurmd -C 2>/dev/null | head -1)
REAL_MEM=$(sed -n 's/.*\bRealMemory=\([0-9]*\).*/\1/p' <<<"$HW")
MEM=$((REAL_MEM > 2048 ? REAL_MEM - 512 : REAL_MEM))
TOPO="CPUs=$NODE_CPUS Boards=1 SocketsPerBoard=1 CoresPerSocket=$NODE_CPUS ThreadsPerCore=1"

GRES_NODE=""; GRES_LINES=""
if [ "$FAKE_GPUS" -gt 0 ]; then
  # gres/gpu needs File= pointing at character devices (Count= alone is dropped by slurmd
  # 22.05 and the node drains; regular files give no CUDA_VISIBLE_DEVICES). Major 195 = nvidia.
  mkdir -p "$C/dev"
  for ((i = 0; i < FAKE_GPUS; i++)); do
    [ -c "$C/dev/nvidia$i" ] || { rm -f "$C/dev/nvidia$i"; mknod -m 666 "$C/dev/nvidia$i" c 195 "$i"; }
  done
  GRES_NODE="Gres=gpu:$FAKE_GPUS"
  GRES_LINES="GresTypes=gpu"
  # slurmctld refuses gres TRES without slurmdbd
  if [ "$WITH_ACCOUNTING" = 1 ]; then GRES_LINES+=$'\nAccountingStorageTRES=gres/gpu'; fi
  if [ "$FAKE_GPUS" -eq 1 ]; then FILES="$C/dev/nvidia0"; else FILES="$C/dev/nvidia[0-$((FAKE_GPUS - 1))]"; fi
  printf 'AutoDetect=off\nName=gpu File=%s\n' "$FILES" >"$C/gres.conf.new"
fi

if [ "$WITH_ACCOUNTING" = 1 ]; then
  ACCT="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1"
else
  ACCT="AccountingStorageType=accounting_storage/none"
fi

cat >"$C/slurm.conf.new" <<EOF
# written by slurm/start-cluster.sh (launch test cluster)
ClusterName=$CLUSTER_NAME
SlurmctldHost=$H(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
MaxArraySize=$MAX_ARRAY_SIZE
# room for the 1,000-job benchmark run back to back (ended jobs count until MinJobAge)
MaxJobCount=100000
FirstJobId=$FIRST_JOB_ID
ReturnToService=2
MinJobAge=300
# Slurm's default: between SIGTERM and SIGKILL a job writes its checkpoint and the task
# its state. 5 s killed the task before it recorded the requeue on a busy box.
KillWait=30
InactiveLimit=0
Waittime=0
StateSaveLocation=$C/state
SlurmdSpoolDir=$C/spool
SlurmctldPidFile=$C/run/slurmctld.pid
SlurmdPidFile=$C/run/slurmd.pid
SlurmctldLogFile=$C/log/slurmctld.log
SlurmdLogFile=$C/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
$ACCT
JobAcctGatherType=jobacct_gather/linux
JobCompType=jobcomp/filetxt
JobCompLoc=$C/log/jobcomp.log
# NODE_CPUS may exceed the real core count: trust the config, not the hardware
SlurmdParameters=config_overrides
$GRES_LINES
NodeName=$H NodeAddr=127.0.0.1 $TOPO RealMemory=$MEM $GRES_NODE State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

cat >"$C/slurmdbd.conf.new" <<EOF
# written by slurm/start-cluster.sh (launch test cluster)
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=root
PidFile=$C/run/slurmdbd.pid
LogFile=$C/log/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF

CHANGED=0
install_conf() { # NEW DEST MODE
  if [ -e "$1" ]; then
    if ! cmp -s "$1" "$2"; then install -m "$3" "$1" "$2"; CHANGED=1; fi
    rm -f "$1"
  elif [ -e "$2" ]; then
    rm -f "$2"; CHANGED=1
  fi
}
install_conf "$C/slurm.conf.new" "$CONF_DIR/slurm.conf" 0644
install_conf "$C/gres.conf.new" "$CONF_DIR/gres.conf" 0644
if [ "$WITH_ACCOUNTING" = 1 ]; then
  install_conf "$C/slurmdbd.conf.new" "$CONF_DIR/slurmdbd.conf" 0600
fi
rm -f "$C/slurmdbd.conf.new"

# ---------------------------------------------------------------- 5. slurmdbd
if [ "$WITH_ACCOUNTING" = 1 ]; then
  if ! alive "$(pid_in "$C/run/slurmdbd.pid")" slurmdbd; then
    /usr/sbin/slurmdbd </dev/null >/dev/null 2>&1
    log "slurmdbd started (pid $(wait_pidfile "$C/run/slurmdbd.pid"))"
  fi
  # sacctmgr refuses to work until slurm.conf names slurmdbd (written above)
  wait_for "slurmdbd" sacctmgr -n list cluster
  sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER_NAME" \
    || sacctmgr -i add cluster "$CLUSTER_NAME" >/dev/null
fi

# ---------------------------------------------------------------- 6. slurmctld + slurmd
stop_pid() { # PIDFILE COMM
  local pid i; pid=$(pid_in "$1")
  alive "$pid" "$2" || return 0
  kill -TERM "$pid"
  for ((i = 0; i < WAIT_S * 5; i++)); do alive "$pid" "$2" || return 0; sleep 0.2; done
  kill -KILL "$pid" 2>/dev/null || true
}
if [ "$CHANGED" = 1 ]; then
  stop_pid "$C/run/slurmd.pid" slurmd
  stop_pid "$C/run/slurmctld.pid" slurmctld
fi
if ! alive "$(pid_in "$C/run/slurmctld.pid")" slurmctld; then
  /usr/sbin/slurmctld -f "$SLURM_CONF" </dev/null >/dev/null 2>&1
  log "slurmctld started (pid $(wait_pidfile "$C/run/slurmctld.pid"))"
fi
if ! alive "$(pid_in "$C/run/slurmd.pid")" slurmd; then
  /usr/sbin/slurmd -f "$SLURM_CONF" -N "$H" </dev/null >/dev/null 2>&1
  log "slurmd started (pid $(wait_pidfile "$C/run/slurmd.pid"))"
fi

state=""
for ((i = 0; i < WAIT_S * 2; i++)); do
  state=$(timeout 5 sinfo -h -n "$H" -o %T 2>/dev/null || true)
  case "$state" in
    idle | mixed | allocated | completing) break ;;
    *drain* | down* | inval* | fail*)
      # e.g. a node left drained by an earlier config: give it back
      ((i % 4 == 0)) && timeout 5 scontrol update nodename="$H" state=resume 2>/dev/null || true ;;
  esac
  sleep 0.5
done
case "$state" in idle | mixed | allocated | completing) ;; *)
  sinfo -N -l >&2 || true; scontrol show node "$H" | grep -i reason >&2 || true
  die "node $H not ready (state '$state'); logs in $C/log" ;;
esac

log "ready: node $H is $state; SLURM_CONF=$SLURM_CONF"
sinfo -o '%P %a %D %T %N %c %m %G' >&2

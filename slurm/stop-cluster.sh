#!/usr/bin/env bash
# stop-cluster.sh - stop a test cluster started by slurm/start-cluster.sh.
#   stop-cluster.sh                   cancel its jobs, stop slurmd, slurmctld, slurmdbd, mariadbd
#   stop-cluster.sh --no-accounting   the same for the second (accounting_storage/none) cluster
#   ... --purge                       also delete its folder and config files
#   ... --all                         both clusters, then munged (shared by both)
# Only processes named in the cluster's own pid files are signalled (never by name), and a pid
# is signalled only while /proc says it is alive, not a zombie, and has the expected name.
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
WITH_ACCOUNTING=1; PURGE=0; ALL=0
for a in "$@"; do
  case "$a" in
    --no-accounting) WITH_ACCOUNTING=0 ;;
    --purge) PURGE=1 ;;
    --all) ALL=1 ;;
    *) echo "usage: $0 [--no-accounting] [--purge] [--all]" >&2; exit 2 ;;
  esac
done
WAIT_S=${WAIT_S:-30}

log() { printf '[stop-cluster] %s\n' "$*" >&2; }
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null && exec sudo -E bash "$0" "$@"
  log "must run as root"; exit 1
fi

if [ "$ALL" = 1 ]; then
  P=(); [ "$PURGE" = 1 ] && P=(--purge)
  bash "$0" --no-accounting "${P[@]}"
  bash "$0" "${P[@]}"
  P_MUNGE=$(cat /run/munge/munged.pid 2>/dev/null || true)
  source "$HERE/pidlib.sh"
  stop_pid "$P_MUNGE" munged
  exit 0
fi

if [ "$WITH_ACCOUNTING" = 1 ]; then
  BASE=${SLURM_TEST_BASE:-/tmp/launch-slurm}; CONF_DIR=/etc/slurm
else
  BASE=${SLURM_TEST_BASE:-/tmp/launch-slurm-noacct}; CONF_DIR=$BASE/cluster/etc
fi
C=$BASE/cluster
export SLURM_CONF=$CONF_DIR/slurm.conf
source "$HERE/pidlib.sh"

# read every pid first: the daemons remove their pid files on exit
P_CTLD=$(pid_in "$C/run/slurmctld.pid")
P_D=$(pid_in "$C/run/slurmd.pid")
P_DBD=$(pid_in "$C/run/slurmdbd.pid")
P_DB=$(pid_in "$C/mysql/mysqld.pid")

# 1. cancel jobs first: slurmstepd keeps running jobs alive even when slurmd stops
if alive "$P_CTLD" slurmctld; then
  JOBS=$(timeout 10 squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ')
  if [ -n "${JOBS// /}" ]; then
    log "cancelling jobs: $JOBS"
    # shellcheck disable=SC2086  # job ids are digits from squeue
    timeout 10 scancel $JOBS 2>/dev/null
    for ((i = 0; i < WAIT_S * 5; i++)); do
      [ -z "$(timeout 10 squeue -h -o %A 2>/dev/null)" ] && break; sleep 0.2
    done
  fi
  # 2. `scontrol shutdown` stops slurmctld and its slurmd cleanly
  timeout 10 scontrol shutdown >/dev/null 2>&1 && log "scontrol shutdown sent"
  wait_gone "$P_D" slurmd "$WAIT_S"; wait_gone "$P_CTLD" slurmctld "$WAIT_S"
fi
stop_pid "$P_D" slurmd
stop_pid "$P_CTLD" slurmctld
# 3. accounting
stop_pid "$P_DBD" slurmdbd
stop_pid "$P_DB" mariadbd

if [ "$PURGE" = 1 ]; then
  rm -rf "$C"
  [ "$WITH_ACCOUNTING" = 1 ] && rm -f /etc/slurm/slurm.conf /etc/slurm/gres.conf /etc/slurm/slurmdbd.conf
  log "purged $C"
fi
log "cluster at $C stopped"

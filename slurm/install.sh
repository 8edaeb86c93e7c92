#!/usr/bin/env bash
# install.sh - install the Debian packages a single-node test Slurm needs (Debian 12, root).
#
# Idempotent: installs only what is missing. A policy-rc.d that exits 101 keeps the
# packages' postinst from starting munge/slurm/mariadb with their default configs
# (they would fight start-cluster.sh for ports and pid files).
#
#   slurm/install.sh                 munge, slurmctld, slurmd, slurm-client, slurmdbd, mariadb
#   WITH_ACCOUNTING=0 install.sh     without slurmdbd and mariadb-server
set -euo pipefail

WITH_ACCOUNTING=${WITH_ACCOUNTING:-1}
log() { printf '[slurm/install] %s\n' "$*" >&2; }

if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null && exec sudo -E bash "$0" "$@"
  log "must run as root"; exit 1
fi

PKGS=(munge slurmctld slurmd slurm-client)
[ "$WITH_ACCOUNTING" = 1 ] && PKGS+=(slurmdbd mariadb-server)
need=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done
if [ ${#need[@]} -eq 0 ]; then
  log "already installed: ${PKGS[*]}"
  exit 0
fi

log "installing: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
POLICY_CREATED=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
  chmod 755 /usr/sbin/policy-rc.d
  POLICY_CREATED=1
fi
cleanup() { if [ "$POLICY_CREATED" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi; }
trap cleanup EXIT
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
log "installed: ${need[*]}"

# pidlib.sh - sourced by stop-cluster.sh: signal daemons by the pids in our own pid files only.
# shellcheck shell=bash

log() { printf '[stop-cluster] %s\n' "$*" >&2; }
pid_in() { cat "$1" 2>/dev/null || true; }

# alive PID COMM: exists, is not a zombie (dead daemons linger as zombies here), is named COMM
alive() {
  local pid=${1:-} comm=$2
  [[ "$pid" =~ ^[0-9]+$ ]] && [ -r "/proc/$pid/status" ] || return 1
  grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" && return 1
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$comm" ]
}

wait_gone() { # PID COMM SECONDS
  local i
  for ((i = 0; i < $3 * 5; i++)); do alive "$1" "$2" || return 0; sleep 0.2; done
  return 1
}

stop_pid() { # PID COMM
  alive "$1" "$2" || return 0
  kill -TERM "$1" 2>/dev/null
  if ! wait_gone "$1" "$2" "${WAIT_S:-30}"; then
    log "$2 ($1) ignored SIGTERM for ${WAIT_S:-30}s, sending SIGKILL"
    kill -KILL "$1" 2>/dev/null
    wait_gone "$1" "$2" 5
  fi
  log "stopped $2 (pid $1)"
}

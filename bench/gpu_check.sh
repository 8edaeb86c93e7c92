#!/usr/bin/env bash
# The checks to run the moment an NVIDIA GPU (H100/H200) is at hand: under 8 minutes, every
# file under one folder. Where no GPU answers, what needs none still runs and the rest says
# "no GPU: skipped"; it exits 0 either way and says what failed at the end.
#
#   bash bench/gpu_check.sh [DIR]          DIR default: gpu-check-<host>-<time> here
#   PYTHON=python3 LAUNCH_DATA=~/data bash bench/gpu_check.sh /tmp/gc   # CIFAR-10 for time-to-94
#   GPU_CHECK_CPU=1 bash bench/gpu_check.sh /tmp/gc    # rehearse the GPU steps on the CPU, toy size
#
# Writes: env.txt, snapshot.json (anonymized: copy it into tests/fixtures/nvml/), status.txt,
# status-full.txt, status.json, smi.txt, pytest-gpu.txt, repro-1.jsonl, repro-2.jsonl,
# loaders.txt, time-to-94.txt, and summary.txt with every figure and verdict.
set -u
cd "$(dirname "$0")/.."
REPO=$PWD
PY=${PYTHON:-python3}
DIR=${1:-gpu-check-$(hostname)-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$DIR" && DIR=$(cd "$DIR" && pwd)
export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export LAUNCH_RUNS_DIR=$DIR/runs LAUNCH_LOCK_DIR=$DIR/locks
unset LAUNCH_NVML_SNAPSHOT
mkdir -p "$LAUNCH_LOCK_DIR"
START=$(date +%s)
LIMIT_S=${GPU_CHECK_LIMIT_S:-460}   # leaves a margin under 8 minutes
SUMMARY=$DIR/summary.txt
: >"$SUMMARY"
FAILED=()

say() { echo "$*" | tee -a "$SUMMARY"; }
elapsed() { echo $(($(date +%s) - START)); }
launch() { "$PY" -m launcher.cli "$@"; }
# step NAME SECONDS COMMAND...: runs COMMAND with a timeout, records its verdict.
step() {
    local name=$1 limit=$2
    shift 2
    local left=$((LIMIT_S - $(elapsed)))
    if ((left < 5)); then
        say "$name: skipped: out of time ($(elapsed) s used)"
        return 0
    fi
    ((limit > left)) && limit=$left
    local t0
    t0=$(date +%s)
    if timeout --kill-after=5 "$limit" "$@"; then
        say "$name: ok ($(($(date +%s) - t0)) s)"
    else
        local rc=$?
        say "$name: FAILED (exit $rc after $(($(date +%s) - t0)) s)"
        FAILED+=("$name")
    fi
}

GPU=0
CPU_FLAG=()
if [[ -n ${GPU_CHECK_CPU:-} ]]; then
    CPU_FLAG=(--cpu)
elif command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1 &&
    "$PY" -c 'import torch, sys; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
    GPU=1
fi
gpu_step() {  # the same as step, or "no GPU: skipped" (rehearsed on the CPU with GPU_CHECK_CPU)
    if ((GPU)) || [[ -n ${GPU_CHECK_CPU:-} ]]; then
        step "$@"
    else
        say "$1: no GPU: skipped"
    fi
}

say "gpu_check on $(hostname) at $(date -Is), writing $DIR; GPU: $([[ $GPU == 1 ]] && echo yes || echo no)"
{
    echo "# git"; git -C "$REPO" log -1 --oneline 2>/dev/null
    echo "# python"; "$PY" -c 'import sys, torch; print(sys.version); print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())'
    echo "# nvidia-smi"; nvidia-smi 2>&1 || echo "no nvidia-smi"
    echo "# cpus"; nproc; uptime
} >"$DIR/env.txt" 2>&1

# 1. What NVML says, as a fixture; status and nvidia-smi side by side, with a CUDA process
#    of ours on the GPU so that both have a process to show.
if ((GPU)); then
    "$PY" -c 'import time, torch; x = torch.ones(256 * 2**20, device="cuda"); print("ready", flush=True); time.sleep(120)' \
        >"$DIR/holder.txt" 2>&1 &
    HOLDER=$!
    for _ in $(seq 60); do grep -q ready "$DIR/holder.txt" 2>/dev/null && break; sleep 0.5; done
fi
step snapshot 20 bash -c 'launch() { "$0" -m launcher.cli "$@"; }; launch snapshot --anonymize >"$1/snapshot.json"' "$PY" "$DIR"
# status exits 3 without a driver and still shows the sweeps: both are answers worth keeping.
step status 20 bash -c '"$0" -m launcher.cli status >"$1/status.txt" 2>&1; [ $? -le 3 ]' "$PY" "$DIR"
step status-full 20 bash -c '"$0" -m launcher.cli status --full >"$1/status-full.txt" 2>&1; [ $? -le 3 ]' "$PY" "$DIR"
step status-json 20 bash -c '"$0" -m launcher.cli status --json >"$1/status.json" 2>"$1/status-json.err"; [ $? -le 3 ]' "$PY" "$DIR"
if ((GPU)); then
    { nvidia-smi; nvidia-smi --query-gpu=index,uuid,memory.used,memory.total --format=csv
      nvidia-smi --query-compute-apps=pid,gpu_uuid,used_memory --format=csv; } >"$DIR/smi.txt" 2>&1
    step status-vs-smi 20 bash -c '"$0" bench/gpu_check.py status-vs-smi "$1" | tee -a "$1/summary.txt"; exit "${PIPESTATUS[0]}"' "$PY" "$DIR"
    kill "$HOLDER" 2>/dev/null
    wait "$HOLDER" 2>/dev/null
else
    say "status-vs-smi: no GPU: skipped"
fi

# 2. The tests marked gpu (they skip themselves without one).
step pytest-gpu 90 bash -c '"$0" -m pytest -q -p no:cacheprovider -m gpu $(grep -rl "mark.gpu" tests) >"$1/pytest-gpu.txt" 2>&1; rc=$?; tail -1 "$1/pytest-gpu.txt"; [ $rc -eq 0 ] || [ $rc -eq 5 ]' "$PY" "$DIR"

# 3. Every model a few hundred steps with bf16, channels_last and reproducible: true, twice,
#    in two processes: the same weights_sha256 both times.
for run in 1 2; do
    gpu_step "repro-$run" 120 bash -c '"$0" bench/gpu_check.py repro "$1/repro-$2" "${@:3}" >"$1/repro-$2.jsonl"' "$PY" "$DIR" "$run" "${CPU_FLAG[@]}"
done
if [[ -s $DIR/repro-1.jsonl && -s $DIR/repro-2.jsonl ]]; then
    step same-hashes 10 bash -c '"$0" bench/gpu_check.py same-hashes "$1/repro-1.jsonl" "$1/repro-2.jsonl" | tee -a "$1/summary.txt"; exit "${PIPESTATUS[0]}"' "$PY" "$DIR"
fi

# 4. ResNet9 images/s: device loader, workers loader at a 2-CPU budget, a ready GPU tensor.
gpu_step loaders 150 bash -c '"$0" bench/gpu_check.py loaders "${@:2}" >"$1/loaders.txt" 2>&1; rc=$?; cat "$1/loaders.txt" >>"$1/summary.txt"; exit $rc' "$PY" "$DIR" "${CPU_FLAG[@]}"

# 5. Time to 94% for Page's ResNet9 on the real CIFAR-10, when the time left allows.
LEFT=$((LIMIT_S - $(elapsed)))
gpu_step time-to-94 "$LEFT" bash -c '"$0" bench/gpu_check.py time-to-94 --budget-s "$2" "${@:3}" >"$1/time-to-94.txt" 2>&1; rc=$?; grep "^time-to-94" "$1/time-to-94.txt" >>"$1/summary.txt"; exit $rc' "$PY" "$DIR" "$LEFT" "${CPU_FLAG[@]}"

rm -rf "$LAUNCH_RUNS_DIR" "$LAUNCH_LOCK_DIR" "$DIR"/repro-1 "$DIR"/repro-2
say "done in $(elapsed) s; ${#FAILED[@]} failed${FAILED[*]:+: ${FAILED[*]}}; everything is in $DIR"
exit 0

#!/usr/bin/env bash
# Pretraining throughput of 1 worker (pinned to core 0) vs 2
# MultiWorkerMirroredStrategy workers on 127.0.0.1 (pinned to cores 0 and 1),
# demo settings, the same per-worker batch (weak scaling: global batch 32 vs
# 64), negatives gathered across workers. Prints the median img/s (global) of
# the progress lines after the first (compile) loop.
#   bash results/multi_worker_throughput.sh [steps]
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-60}
out=$(mktemp -d)
run() {  # run <model_dir> <strategy> <global batch>
  .venv/bin/python -m cpc_tf.pretrain --flagfile=flags/demo_cpu.flags \
    --model_dir="$1" --strategy="$2" --batch_size="$3" --cross_replica_negatives \
    --train_steps="$steps" --steps_per_loop=10 --summary_every=10 \
    --checkpoint_every="$steps" --export=false --seed=0
}
median_rate() {  # global img/s of the chief's progress lines, first loop dropped
  grep -o '[0-9.]* img/s' "$1" | tail -n +2 | awk '{print $1}' | sort -n |
    awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'
}
taskset -c 0 bash -c "$(declare -f run); steps=$steps; run $out/one default 32" \
  2> "$out/one.log"
read -r p0 p1 < <(.venv/bin/python -c "
import socket
s=[socket.socket() for _ in range(2)]
[x.bind(('127.0.0.1',0)) for x in s]; print(*[x.getsockname()[1] for x in s])")
cluster="{\"worker\": [\"127.0.0.1:$p0\", \"127.0.0.1:$p1\"]}"
for i in 0 1; do
  TF_CONFIG="{\"cluster\": $cluster, \"task\": {\"type\": \"worker\", \"index\": $i}}" \
    taskset -c $i bash -c "$(declare -f run); steps=$steps; run $out/two multi_worker 64" \
    2> "$out/two.$i.log" &
done
wait
one=$(median_rate "$out/one.log"); two=$(median_rate "$out/two.0.log")
echo "1 worker  (core 0, batch 32):        $one img/s"
echo "2 workers (cores 0+1, 2 x 32 = 64):  $two img/s"
echo "speed-up: $(awk -v a="$one" -v b="$two" 'BEGIN {printf "%.2f", b / a}')x  (logs: $out)"

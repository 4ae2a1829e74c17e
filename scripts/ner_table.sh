#!/usr/bin/env bash
# The NER table of docs/results.md: the built-in People's Daily task scored on whole sentences
# (long ones read in windows), softmax head vs linear-chain CRF, from random weights vs our
# pretraining (the same `mini` encoder, character tokenizer and rotary positions as
# scripts/transfer.sh, whose pretraining it reuses or runs first, ~1 h on a 2-core CPU).
# The TF-IDF baseline beside it: python scripts/baseline_tfidf.py --task ner
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/pretrain_rope.sh   # sets PY, PRETRAIN, SPM; pretrains if missing
COMMON=(--config.train.epochs=3 --config.train.eval_every=200 --config.train.progress_bar=False
        --config.train.steps_per_execution=10)   # single steps' updates, ~1.35x faster on CPU
# pretrained rows first: they are the ones that can pass the baseline
for init in pretrained random; do
  for head in softmax crf; do
    ARGS=(--config.tasks.ner.crf=$([ $head = crf ] && echo True || echo False))
    if [ $init = pretrained ]; then ARGS+=(--config.init_from=$PRETRAIN)
    else ARGS+=(--config.data.tokenizer_path=$SPM --config.model.position_embedding=rotary); fi
    $PY run.py --config configs/finetune_ner.py --workdir runs/ner-$init-$head "${COMMON[@]}" "${ARGS[@]}"
  done
done
# The pretrained CRF row again with another fine-tuning seed: its margin over the baseline is
# about one standard error.
$PY run.py --config configs/finetune_ner.py --workdir runs/ner-pretrained-crf-seed1 "${COMMON[@]}" \
    --config.tasks.ner.crf=True --config.init_from=$PRETRAIN --config.train.seed=1
for d in runs/ner-{random,pretrained}-{softmax,crf} runs/ner-pretrained-crf-seed1; do
  echo "$d $(grep '"split": "test"' $d/metrics.jsonl)"
done

#!/usr/bin/env bash
# The sequence-to-sequence table of docs/results.md: BLEU / ROUGE on the built-in tasks' test
# splits, from random weights vs warm-started from our pretraining (BERT2BERT), each decoded with
# beam 4 (the configs' default, which also picks the best dev checkpoint) and greedily.
#
# - headline (People's Daily article -> its headline): Chinese to Chinese, so the pretraining's
#   character tokenizer serves both sides; random initialisation uses that tokenizer and the
#   encoder's rotary positions too, so only the starting weights differ.
# - pinyin (sentence -> tone-numbered Pinyin): from random weights only, with the config's own
#   tokenizer (Han characters and whole syllables). A character BERT's vocabulary spells Pinyin
#   letter by letter (median 151 pieces for a 32-character sentence), so a warm start there
#   would measure the tokenizer rather than the weights.
#
# Reuses scripts/pretrain_rope.sh's pretraining (or runs it first). Every run is an ordinary
# workdir; a rerun continues an interrupted one, and a finished one only decodes its test split
# again. The greedy figures come from a copy of each finished workdir rerun with
# --config.generate.method=greedy (same best checkpoint, its own test row).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/pretrain_rope.sh   # sets PY, PRETRAIN, SPM; pretrains if missing
COMMON=(--config.train.progress_bar=False --config.train.steps_per_execution=10)   # ~1.35x on CPU
HEADLINE=(--config.train.epochs=10 --config.train.eval_every=345)   # 2,196 articles: 69 steps an epoch
PINYIN=(--config.train.epochs=2 --config.train.eval_every=600)     # 28,879 sentences: 903 steps an epoch

both() {  # config workdir flags...: the run (beam 4), then a greedy decoding of its test split
  local config=$1 dir=$2; shift 2
  $PY run.py --config "$config" --workdir "$dir" "${COMMON[@]}" "$@"
  [ -d "$dir-greedy" ] || cp -r "$dir" "$dir-greedy"
  $PY run.py --config "$config" --workdir "$dir-greedy" "${COMMON[@]}" "$@" \
      --config.generate.method=greedy
}
both configs/finetune_seq2seq.py:headline runs/headline-random "${HEADLINE[@]}" \
    --config.data.tokenizer_path=$SPM --config.model.position_embedding=rotary
both configs/finetune_seq2seq.py:headline runs/headline-pretrained "${HEADLINE[@]}" \
    --config.init_from=$PRETRAIN
both configs/finetune_seq2seq.py:pinyin runs/pinyin-random "${PINYIN[@]}"
for d in runs/{headline-random,headline-pretrained,pinyin-random}{,-greedy}; do
  echo "$d $(grep '"split": "test"' $d/metrics.jsonl)"
done

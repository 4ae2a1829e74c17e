#!/usr/bin/env bash
# The pretraining the transfer tables of docs/results.md start from (sourced by transfer.sh and
# ner_table.sh): one piece per character (as Chinese BERT), rotary positions, 6,000 steps of
# 32 x 128 tokens (~5.5 passes over the built-in corpus; 1-3 h on a 2-core CPU), into $PRETRAIN
# unless it is there already; an interrupted run continues from its last checkpoint.
PY=${PYTHON:-python}
PRETRAIN=${PRETRAIN:-runs/pretrain-rope-6k}
if [ ! -d "$PRETRAIN/checkpoints/6000" ]; then
  $PY run.py --config configs/pretrain.py --workdir "$PRETRAIN" --config.data.tokenizer_model=char \
      --config.model.position_embedding=rotary \
      --config.train.num_steps=6000 --config.train.learning_rate=5e-4 \
      --config.train.warmup_steps=500 --config.train.eval_every=1000
fi
SPM=$PRETRAIN/tokenizer/spm.model   # random init uses the same tokenizer: only the weights differ

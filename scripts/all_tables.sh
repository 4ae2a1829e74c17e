#!/usr/bin/env bash
# The measured tables of docs/results.md, one after another: NER (whole sentences), few-shot,
# seq2seq, the longer character language model, PEFT and overfitting remedies, pretraining
# objectives. Every cell is a run.py workdir under runs/, so rerunning this script after an
# interruption (a preempted machine, a closed laptop) continues where it stopped and skips what is
# done. On a 2-core CPU the list takes days (a 6,000-step pretraining ~2 h, a 3-epoch NER run
# ~45 min, and the objectives table has four of the one and five of the other). Logs: runs/*.log.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
mkdir -p runs
PYTHON=$PY bash scripts/ner_table.sh >> runs/ner_table.log 2>&1
$PY scripts/fewshot_table.py runs/pretrain-rope-6k --out runs/fewshot >> runs/fewshot.log 2>&1
$PY scripts/fewshot_table.py runs/pretrain-rope-6k --lr 1e-4 --no-thousand --out runs/fewshot-lr1e-4 \
    >> runs/fewshot-lr1e-4.log 2>&1
$PY scripts/fewshot_table.py runs/pretrain-rope-6k --task ner --lr 1e-4 --out runs/fewshot-ner \
    >> runs/fewshot-ner.log 2>&1
PYTHON=$PY bash scripts/seq2seq_table.sh >> runs/seq2seq_table.log 2>&1
# The character LM of "Language model: held-out perplexity" at 6,000 steps (10 epochs).
$PY run.py --config configs/pretrain_lm.py --workdir runs/lm-char-6k \
    --config.data.tokenizer_model=char --config.train.num_steps=6000 \
    --config.train.eval_every=1000 --config.train.checkpoint_every=500 \
    --config.train.progress_bar=False >> runs/lm-char-6k.log 2>&1
$PY scripts/peft_table.py runs/pretrain-rope-6k --out runs/peft >> runs/peft.log 2>&1
$PY scripts/objectives_table.py --bert runs/pretrain-rope-6k --out runs/objectives \
    >> runs/objectives.log 2>&1

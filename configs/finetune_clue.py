r"""CLUE, the Chinese Language Understanding Evaluation benchmark, from CLUE's own files.

    python run.py --config configs/finetune_clue.py:tnews --workdir runs/tnews \
        --config.data_dir=tnews_public --config.init_from=DIR
    python run.py --config configs/finetune_clue.py:tnews --workdir runs/tnews \
        --mode predict --input tnews_public/test.json

Tasks: tnews, iflytek (classification), afqmc, ocnli, cmnli, csl (sentence pairs), cluener (NER,
10 entity types), cmrc2018 (extractive QA). `data_dir` is the unzipped <task>_public folder, in
CLUE's file names and formats (nlp_jax/data/clue.py). CLUE's test.json has no labels: training
holds out a seeded 5% of train.json to pick the best checkpoint, and the test rows are CLUE's
metric on dev.json (accuracy; entity F1 for cluener; EM and F1 on characters for cmrc2018).
`--mode predict --input DIR/test.json` writes the leaderboard's file (e.g. tnews11_predict.json,
one {"id", "label"} a line) into the workdir.
"""
import ml_collections

from configs import finetune_common
from nlp_jax.data import clue


def get_config(arg: str | None = None):
    if arg not in clue.TASKS:
        raise ValueError(f"configs/finetune_clue.py:{arg}: choose one of {', '.join(clue.TASKS)}")
    c = finetune_common.get_config()
    c.data_dir = ml_collections.FieldReference("", field_type=str)   # --config.data_dir=DIR
    c.tasks[arg] = finetune_common.task(arg, source="clue")
    c.tasks[arg].data_dir = c.get_ref("data_dir")
    c.train.best_metric = clue.METRIC[arg]
    if arg == "cmrc2018":   # BERT's SQuAD settings
        c.data.max_seq_len, c.data.doc_stride, c.data.max_query_len = 384, 128, 64
        c.train.epochs = 2
    return c

r"""Extractive question answering: a start/end head over [CLS] question [SEP] context [SEP] rows,
long contexts read in windows `data.doc_stride` pieces apart (BERT's run_squad.py recipe).

    python run.py --config configs/finetune_qa.py --workdir runs/squad --config.init_from=DIR
    python run.py --config configs/finetune_qa.py:squad_v2 --workdir runs/squad2 --config.init_from=DIR
    python run.py --config configs/finetune_qa.py:files --workdir runs/cmrc \
        --config.tasks.files.train_file=train.json --config.tasks.files.dev_file=dev.json \
        --config.init_from=DIR
    python run.py --config configs/finetune_qa.py:files --workdir runs/cmrc --mode predict --input q.jsonl

squad / squad_v2: TFDS's SQuAD 1.1 / 2.0 (through tfds.data_source; train minus a seeded 5% is
train, that 5% picks the best checkpoint, "validation" is the test split). files: SQuAD-format
JSON files (SQuAD, CMRC 2018, DRCD); without dev_file, dev is a seeded 10% of train. Scored with
SQuAD's exact match and F1 (on words), or CMRC 2018's (on characters) when the contexts are
Chinese; questions without answers (SQuAD 2.0) make "" a possible answer and add the HasAns /
NoAns figures. Predict takes JSON lines {"question", "context"} and prints {"answer", "score",
"start"} (character offset; "" and -1: no answer).
"""
from configs import finetune_common

_TFDS = {"squad": "squad", "squad_v2": "squad/v2.0"}


def get_config(arg: str | None = None):
    arg = arg or "squad"
    c = finetune_common.get_config()
    if arg in _TFDS:
        c.tasks[arg] = finetune_common.task(arg, source="tfds", tfds_name=_TFDS[arg])
    elif arg == "files":
        c.tasks.files = finetune_common.task("files", source="files", file_format="squad")
    else:
        raise ValueError(f"configs/finetune_qa.py:{arg}: choose squad, squad_v2 or files")
    c.data.max_seq_len, c.data.doc_stride, c.data.max_query_len = 384, 128, 64
    c.train.epochs, c.train.learning_rate, c.train.batch_size = 2, 5e-5, 32
    c.train.best_metric = "f1"
    return c

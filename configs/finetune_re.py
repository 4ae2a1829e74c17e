r"""Relation extraction: typed entity markers around the head and tail, and a classification head
on the vectors at their opening markers ("entity start", Baldini Soares et al. 2019).

    python run.py --config configs/finetune_re.py:files --workdir runs/re \
        --config.tasks.files.train_file=train.jsonl --config.tasks.files.dev_file=dev.jsonl \
        --config.tasks.files.test_file=test.jsonl --config.init_from=runs/pretrain
    python run.py --config configs/finetune_re.py:files --workdir runs/re --mode predict --input x.jsonl

Files hold one JSON object a line, {"text", "head": {"start", "end", "type"}, "tail": {...},
"relation"}, with character offsets (end exclusive; "type" optional); predict takes the same lines
without "relation". Scored as TACRED is: micro precision/recall/F1 over every relation but
tasks.files.negative_label (accuracy and macro F1 beside them; set it to "" when the data has no
no-relation label).
"""
from configs import finetune_common


def get_config(arg: str | None = None):
    if arg not in (None, "", "files"):
        raise ValueError(f"configs/finetune_re.py:{arg}: choose files")
    c = finetune_common.get_config()
    c.tasks.files = finetune_common.task("files", source="files", file_format="jsonl",
                                         negative_label="no_relation")
    c.train.best_metric = "micro_f1"
    return c

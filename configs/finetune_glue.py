r"""GLUE and other TFDS text classification by name (single texts and sentence pairs).

    python run.py --config configs/finetune_glue.py:sst2 --workdir runs/sst2 \
        --config.init_from=/path/to/bert-base-uncased
    python run.py --config configs/finetune_glue.py:mrpc --workdir runs/mrpc --config.init_from=...

The argument is a GLUE task (sst2, cola, mrpc, qqp, qnli, rte, mnli, stsb) or any TFDS name (e.g.
imdb_reviews). CoLA is scored by Matthews' correlation, STS-B (a regression: one output, mean
squared error) by Pearson and Spearman correlation, MNLI on its matched validation split as
`test` and its mismatched one as `test_mismatched`.
Data comes from `tfds.data_source` (prepare it once with `tfds build` or TFDS's download); GLUE's
test labels are hidden, so its validation split is the test split here (see nlp_jax/data/sources.py).
"""
from configs import finetune_common

GLUE = ("sst2", "cola", "mrpc", "qqp", "qnli", "rte", "mnli", "stsb")
# The dev metric that picks the best checkpoint, as GLUE scores each task.
BEST_METRIC = {"cola": "mcc", "mrpc": "f1_macro", "qqp": "f1_macro", "stsb": "pearson"}


def get_config(arg: str | None = None):
    arg = arg or "sst2"
    name = f"glue/{arg}" if arg in GLUE else arg
    c = finetune_common.get_config()
    c.tasks[arg.replace("/", "_")] = finetune_common.task(name, source="tfds", tfds_name=name)
    c.data.max_seq_len = 128
    c.train.learning_rate = 2e-5            # BERT's fine-tuning range (2e-5 .. 5e-5)
    c.train.best_metric = BEST_METRIC.get(arg, "accuracy")
    return c

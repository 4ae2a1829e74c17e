r"""The few-shot tables of docs/results.md: zero-shot, head fine-tuning and prompt fine-tuning
(PET / LM-BFF) on the built-in sentiment task, and head fine-tuning on built-in NER, from one
pretraining workdir, at k examples per class.

    python scripts/fewshot_table.py runs/pretrain-rope-6k            # the full sentiment grid
    python scripts/fewshot_table.py runs/pretrain-rope-6k --task ner --out runs/fewshot-ner
    python scripts/fewshot_table.py runs/pretrain --shots 8 --seeds 2 --steps 4 --no-thousand \
        --extra=--config.tasks.sentiment.max_examples=200             # a quick look

The protocol (LM-BFF, Gao et al. 2021): for each k, five subsets drawn by seeds 0..4
(tasks.sentiment.subset_seed), each with k training and k dev examples per class from the training
split (shots_per_class); the run with seed s also trains with train.seed=s. The dev set picks the
best checkpoint; every run is scored on the full test split. Zero-shot (train.epochs=0) depends on
neither seed: one run. Cells are the mean ± the sample standard deviation (ddof=1) of the test
accuracy over the seeds, in %.

NER (--task ner) has no prompt: the standard token-classification head, from the pretraining and,
as the control, from random weights (same architecture and tokenizer), scored by entity F1 on the
full test split. Its k is per entity type: greedily drawn sentences holding at least k
mentions of each of PER, LOC and ORG (`sources.few_shot`), and as many again for dev.

A last row revisits the 1,000-review result of docs/results.md (random initialisation 76.5%
against 72.0% from pretraining with a classification head): the same 1,000 reviews and settings
as scripts/transfer.sh (tasks.sentiment.train_examples=1000, 10 epochs, lr 1e-4, the full dev
split), head against prompt fine-tuning, training seeds 0 and 1 (--no-thousand leaves it out).

Every run is a `run.py` workdir under --out; a rerun skips those that already have a test row, so
an interrupted grid continues where it stopped. The table is printed and written to OUT/table.md.
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np

import tables   # scripts/tables.py


METRIC = {"sentiment": "accuracy", "ner": "entity_f1"}
METHODS = {  # task -> (workdir prefix, config, from the pretraining (or random weights))
    "sentiment": (("head", "finetune_cls.py:sentiment", True),
                  ("prompt", "finetune_cls.py:prompt", True)),
    "ner": (("head", "finetune_ner.py:ner", True), ("random", "finetune_ner.py:ner", False))}


def run(workdir: str, config: str, flags: list[str], metric: str = "accuracy") -> float:
    return tables.test_row(tables.run(workdir, config, flags))[metric]


def random_init(pretrain: str) -> list[str]:
    """Flags for random weights in the pretraining's architecture and with its tokenizer, so that
    only the starting weights differ from init_from."""
    with open(os.path.join(pretrain, "config.json")) as f:
        model = json.load(f)["model"]
    keys = ("size", "num_layers", "hidden_size", "num_heads", "position_embedding")
    return [f"--config.data.tokenizer_path={pretrain}/tokenizer/spm.model",
            *(f"--config.model.{key}={model[key]}" for key in keys if model.get(key))]


def cell(values: list[float]) -> str:
    values = 100 * np.asarray(values)
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{values.mean():.1f} ± {values.std(ddof=1):.1f}"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("pretrain", help="the pretraining workdir to start from (init_from)")
    p.add_argument("--task", default="sentiment", choices=sorted(METRIC), help="built-in task")
    p.add_argument("--out", default="runs/fewshot", help="where the runs' workdirs go")
    p.add_argument("--shots", default="8,16,32,64", help="k examples per class, comma-separated")
    p.add_argument("--seeds", type=int, default=5, help="subsets (and training seeds) per k")
    p.add_argument("--steps", type=int, default=200, help="training steps per run")
    p.add_argument("--eval-every", type=int, default=20, help="steps between dev evaluations")
    p.add_argument("--batch-size", type=int, default=8, help="training batch size")
    p.add_argument("--lr", type=float, default=2e-5, help="peak learning rate (no warm-up)")
    p.add_argument("--no-thousand", dest="thousand", action="store_false",
                   help="leave out the 1,000-review row")
    p.add_argument("--extra", action="append", default=[],
                   help="another run.py flag for every run, e.g. "
                   "--extra=--config.data.max_seq_len=64")
    args = p.parse_args(argv)
    shots = [int(k) for k in args.shots.split(",")]
    pretrain = os.path.abspath(args.pretrain)
    init = {True: [f"--config.init_from={pretrain}"], False: random_init(pretrain)}
    training = [f"--config.train.num_steps={args.steps}",
                f"--config.train.eval_every={args.eval_every}",
                f"--config.train.batch_size={args.batch_size}",
                f"--config.train.learning_rate={args.lr}", "--config.train.warmup_steps=0"]

    task, metric = args.task, METRIC[args.task]
    results = {}
    for method, config, pretrained in METHODS[task]:
        for k in shots:
            for seed in range(args.seeds):
                workdir = os.path.join(args.out, f"{method}-k{k}-seed{seed}")
                results.setdefault((method, k), []).append(run(workdir, config, [
                    *init[pretrained], *args.extra, *training, f"--config.train.seed={seed}",
                    f"--config.tasks.{task}.shots_per_class={k}",
                    f"--config.tasks.{task}.subset_seed={seed}"], metric))
    if task == "ner":
        lines = ["| k mentions per type | random initialisation | from the pretraining |",
                 "| --- | --- | --- |"]
        lines += [f"| {k} | {cell(results[('random', k)])} | {cell(results[('head', k)])} |"
                  for k in shots]
        args.thousand = False   # the 1,000-sentence NER row is scripts/objectives_table.py's
    else:
        # Zero-shot: the pretrained masked-LM head alone (the small dev set of the first k, unused).
        zero = run(os.path.join(args.out, "zero-shot"), "finetune_cls.py:prompt",
                   [*init[True], *args.extra, "--config.train.epochs=0",
                    f"--config.tasks.sentiment.shots_per_class={shots[0]}"])
        lines = ["| k per class | zero-shot (prompt) | head fine-tuning | prompt fine-tuning |",
                 "| --- | --- | --- | --- |",
                 f"| 0 | {cell([zero])} | – | – |"]
        lines += [f"| {k} | – | {cell(results[('head', k)])} | {cell(results[('prompt', k)])} |"
                  for k in shots]
    if args.thousand:   # scripts/transfer.sh's FEW settings, with both heads
        thousand = {method: [run(os.path.join(args.out, f"{method}-1000-seed{seed}"), config, [
            *init[True], *args.extra, "--config.tasks.sentiment.train_examples=1000",
            "--config.train.epochs=10", "--config.train.eval_every=100",
            f"--config.train.seed={seed}"]) for seed in range(2)]
            for method, config, _ in METHODS["sentiment"]}
        lines.append(f"| 1,000 reviews, full dev split | – | {cell(thousand['head'])} | "
                     f"{cell(thousand['prompt'])} |")
    table = "\n".join(lines)
    print(f"\nTest {metric} (%) on built-in {task}, mean ± std over {args.seeds} seeds, "
          f"from {args.pretrain}:\n\n{table}")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write(table + "\n")


if __name__ == "__main__":
    main()

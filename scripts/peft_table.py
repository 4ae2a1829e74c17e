r"""The parameter-efficient fine-tuning and overfitting tables of docs/results.md, from one
pretraining workdir, on the built-in tasks.

    python scripts/peft_table.py runs/pretrain-rope-6k                 # both tables
    python scripts/peft_table.py runs/pretrain --tasks sentiment --extra=--config.train.num_steps=20 \
        --seeds 1 --out runs/peft-quick                                 # a quick look

Table 1 (`methods`): each task fine-tuned the same way (3 epochs, batch 32, 128 tokens, the best
dev checkpoint tested) with peft.method none (full fine-tuning), lora (rank 8 on query and value,
alpha 16), adapter (64 units), adalora (rank 12 down to an average 8, the paper's), bitfit, and
train.freeze=encoder (the head alone). Each method gets the learning rate its paper uses at this
scale: 1e-4 for full fine-tuning, 5e-4 for LoRA, adapters and AdaLoRA, 1e-3 for BitFit and the
head. Columns: the test metric; trainable parameters (% of all) and optimiser-state bytes, from
the first train row; the bytes of the `best/` checkpoint on disk (with init_from a PEFT
checkpoint holds only what the base does not give); the median `examples_per_s` of the train
rows (the first, which includes compilation, aside).

Table 2 (`remedies`): 1,000 training examples (tasks.<name>.train_examples, 10 epochs, full
fine-tuning at 1e-4), plain vs FGM (epsilon 1) vs PGD (3 steps, epsilon 1) vs R-Drop (alpha 1)
vs EDA augmentation (character unit, 10%) vs all four (PGD standing for adversarial training),
each with training seeds 0 and 1; cells are the mean of the two and both values. NER refuses
augmentation (its tags would no longer match the text), so its "all" is PGD and R-Drop.

Every run is a `run.py` workdir under --out; a rerun skips those that already have a test row,
so an interrupted grid continues where it stopped. The tables are printed and written to
OUT/methods.md and OUT/remedies.md.
"""
from __future__ import annotations

import argparse
import os

import numpy as np

import tables   # scripts/tables.py
METRIC = {"sentiment": "accuracy", "ner": "entity_f1"}
METHODS = {  # name -> flags
    "full fine-tuning": ["--config.train.learning_rate=1e-4"],
    "LoRA (r = 8)": ["--config.peft.method=lora", "--config.peft.rank=8",
                     "--config.train.learning_rate=5e-4"],
    "adapters (64)": ["--config.peft.method=adapter", "--config.peft.adapter_size=64",
                      "--config.train.learning_rate=5e-4"],
    "AdaLoRA (12 -> 8)": ["--config.peft.method=adalora", "--config.peft.rank=12",
                          "--config.peft.target_rank=8", "--config.train.learning_rate=5e-4"],
    "BitFit": ["--config.peft.method=bitfit", "--config.train.learning_rate=1e-3"],
    "head only": ["--config.train.freeze=encoder", "--config.train.learning_rate=1e-3"],
}
PGD = ["--config.train.adversarial=pgd", "--config.train.adversarial_steps=3",
       "--config.train.adversarial_epsilon=1.0"]
RDROP = ["--config.train.rdrop_alpha=1.0"]
EDA = ["--config.data.augment=eda", "--config.data.augment_prob=0.1"]
REMEDIES = {
    "plain": [],
    "FGM": ["--config.train.adversarial=fgm", "--config.train.adversarial_epsilon=1.0"],
    "PGD": PGD,
    "R-Drop": RDROP,
    "EDA augmentation": EDA,
    "all (PGD, R-Drop, EDA)": [*PGD, *RDROP, *EDA],
}


def run(workdir: str, task: str, flags: list[str]) -> list[dict]:
    return tables.run(workdir, tables.CONFIGS[task], flags)


def test_metric(task: str, result: list[dict]) -> float:
    return tables.test_row(result)[METRIC[task]]


def directory_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000


def methods_table(tasks, out, common) -> str:
    lines = ["| method | " + " | ".join(f"{t} test {METRIC[t]}" for t in tasks) +
             " | trainable parameters | optimiser state | `best/` checkpoint | examples/s (" +
             ", ".join(tasks) + ") |",
             "| --- |" + " --- |" * (len(tasks) + 4)]
    for method, flags in METHODS.items():
        name = method.split(" (")[0].lower().replace(" ", "-")
        results = {t: run(os.path.join(out, f"{t}-{name}"), t, [*common, *flags]) for t in tasks}
        first = results[tasks[0]][0]   # the first train row (the sizes: alike for both tasks'
        workdir = os.path.join(out, f"{tasks[0]}-{name}")      # encoder, heads aside)
        speed = [np.median([r["examples_per_s"] for r in results[t]
                            if r["split"] == "train" and "examples_per_s" in r]) for t in tasks]
        lines.append(
            f"| {method} | " + " | ".join(f"{100 * test_metric(t, results[t]):.1f}" for t in tasks)
            + f" | {first['trainable_params']:,} ({100 * first['trainable_params'] / first['params']:.2f}%)"
            f" | {size(first['opt_state_bytes'])} | {size(directory_bytes(os.path.join(workdir, 'best')))}"
            f" | {', '.join(f'{s:.0f}' for s in speed)} |")
    return "\n".join(lines)


def remedies_table(tasks, out, common, seeds) -> str:
    lines = ["| 1,000 examples | " + " | ".join(f"{t} test {METRIC[t]}" for t in tasks) + " |",
             "| --- |" + " --- |" * len(tasks)]
    for remedy, flags in REMEDIES.items():
        name = remedy.split(" (")[0].lower().replace(" ", "-")
        cells = []
        for t in tasks:
            # NER refuses augmentation (entity tags would no longer match the rewritten text).
            if t == "ner" and remedy == "EDA augmentation":
                cells.append("–")
                continue
            own = [f for f in flags if f not in EDA] if t == "ner" else flags
            values = [100 * test_metric(t, run(
                os.path.join(out, f"{t}-few1000-{name}-seed{s}"), t,
                [*common, "--config.train.learning_rate=1e-4", "--config.train.epochs=10",
                 "--config.train.eval_every=100", f"--config.tasks.{t}.train_examples=1000",
                 f"--config.train.seed={s}", *own])) for s in range(seeds)]
            cells.append(f"{np.mean(values):.1f} ({', '.join(f'{v:.1f}' for v in values)})")
        lines.append(f"| {remedy} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("pretrain", help="the pretraining workdir to start from (init_from)")
    p.add_argument("--out", default="runs/peft", help="where the runs' workdirs go")
    p.add_argument("--tasks", default="sentiment,ner", help="built-in tasks, comma-separated")
    p.add_argument("--tables", default="methods,remedies", help="which tables, comma-separated")
    p.add_argument("--seeds", type=int, default=2, help="training seeds per remedy")
    p.add_argument("--extra", action="append", default=[],
                   help="another run.py flag for every run, e.g. --extra=--config.train.num_steps=20")
    args = p.parse_args(argv)
    tasks = args.tasks.split(",")
    common = [f"--config.init_from={os.path.abspath(args.pretrain)}",
              "--config.train.eval_every=200", *args.extra]
    os.makedirs(args.out, exist_ok=True)
    for table in args.tables.split(","):
        text = (methods_table(tasks, args.out, common) if table == "methods" else
                remedies_table(tasks, args.out, common, args.seeds))
        print(f"\n{table}, from {args.pretrain}:\n\n{text}\n", flush=True)
        with open(os.path.join(args.out, f"{table}.md"), "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()

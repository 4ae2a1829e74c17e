r"""The pretraining-objectives table of docs/results.md: BERT's masked LM + NSP against whole-word
masking (BERT-wwm), span masking (SpanBERT's), sentence-order prediction (ALBERT's SOP) and ELECTRA,
at equal pretraining compute, then each encoder fine-tuned on the built-in tasks.

    python scripts/objectives_table.py --bert runs/pretrain-rope-6k     # reuse that MLM + NSP run
    python scripts/objectives_table.py --steps 40 --out runs/objectives-quick \
        --extra-finetune=--config.train.num_steps=20 --max-examples 64   # a quick look

Equal compute here means the same model (`mini`, character tokenizer, rotary positions), the same
batches (train.num_steps x 32 rows x 128 tokens, the same documents in the same order) and the
same schedule (lr 5e-4, warm-up steps/12) for every objective; only data.masking,
data.sentence_task or model.electra differ. ELECTRA's generator (1/4 the width) adds its own
FLOPs to each step; the tokens/s column shows what that costs. The defaults are those of
scripts/pretrain_rope.sh, whose run is the MLM + NSP row (--bert reuses it).

Columns: held-out masked-LM accuracy where the objective has a masked LM (ELECTRA's is its
generator's), the sentence task's held-out accuracy (ELECTRA: replaced-token detection), the
pretraining's median tokens/s; then test figures after fine-tuning as scripts/transfer.sh does:
sentiment accuracy and NER entity F1 with all training examples (3 epochs), NER entity F1 with 1,000
training sentences (10 epochs). Every run is a `run.py` workdir under --out; a rerun skips finished
runs and continues interrupted ones. The table is printed and written to OUT/table.md.
"""
from __future__ import annotations

import argparse
import os

import tables   # scripts/tables.py

OBJECTIVES = {  # name -> (workdir name, pretraining flags)
    "MLM + NSP (BERT)": ("bert", []),
    "whole-word MLM + NSP (BERT-wwm)": ("wwm", ["--config.data.masking=whole_word"]),
    "span MLM + NSP (SpanBERT's masking)": ("span", ["--config.data.masking=span"]),
    "MLM + SOP (ALBERT's sentence task)": ("sop", ["--config.data.sentence_task=sop"]),
    "ELECTRA (generator 1/4 wide, RTD)": ("electra", ["--config.model.electra=True"]),
}
FINETUNES = {  # column -> (workdir suffix, task, flags, test metric)
    "sentiment accuracy": ("sentiment", "sentiment", [
        "--config.train.epochs=3", "--config.train.eval_every=200"], "accuracy"),
    "NER entity F1": ("ner", "ner", [
        "--config.train.epochs=3", "--config.train.eval_every=200"], "entity_f1"),
    "NER F1, 1,000 sentences": ("ner-few1000", "ner", [
        "--config.train.epochs=10", "--config.train.eval_every=100",
        "--config.tasks.ner.train_examples=1000"], "entity_f1"),
}


def pretrained(result: list[dict], steps: int) -> bool:
    return any(r["split"] == "eval" and r["step"] == steps for r in result)


def pct(value) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/objectives", help="where the runs' workdirs go")
    p.add_argument("--steps", type=int, default=6000, help="pretraining steps for every objective")
    p.add_argument("--bert", default="", help="an existing MLM + NSP pretraining with these "
                   "settings (scripts/pretrain_rope.sh's) to use as the first row instead of "
                   "running it")
    p.add_argument("--extra-pretrain", action="append", default=[], help="another pretraining flag")
    p.add_argument("--extra-finetune", action="append", default=[], help="another fine-tuning flag")
    p.add_argument("--max-examples", type=int, default=0,
                   help="> 0: cap each split of the fine-tuning tasks (quick looks)")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    common = ["--config.data.tokenizer_model=char", "--config.model.position_embedding=rotary",
              f"--config.train.num_steps={args.steps}", "--config.train.learning_rate=5e-4",
              f"--config.train.warmup_steps={max(1, args.steps // 12)}",
              f"--config.train.eval_every={max(1, args.steps // 6)}", *args.extra_pretrain]
    lines = ["| objective | held-out MLM accuracy | sentence task / RTD accuracy | "
             "pretraining tokens/s | " + " | ".join(FINETUNES) + " |",
             "| --- |" + " --- |" * (3 + len(FINETUNES))]
    tokenizer = []   # every objective reads the first run's tokenizer: the same pieces throughout
    for objective, (name, flags) in OBJECTIVES.items():
        workdir = args.bert if (name == "bert" and args.bert) else os.path.join(args.out, name)
        result = tables.run(workdir, "pretrain.py", [*common, *tokenizer, *flags],
                            lambda r: pretrained(r, args.steps))
        tokenizer = tokenizer or [f"--config.data.tokenizer_path={workdir}/tokenizer/spm.model"]
        final = [r for r in result if r["split"] == "eval"][-1]
        speed = sorted(r["tokens_per_s"] for r in result
                       if r["split"] == "train" and "tokens_per_s" in r)
        mlm = final.get("masked_lm_accuracy", final.get("generator_masked_lm_accuracy"))
        sentence = next((final[k] for k in ("next_sentence_accuracy", "sentence_order_accuracy",
                                            "rtd_accuracy") if k in final), None)
        cells = []
        for tag, task, task_flags, metric in FINETUNES.values():
            cap = ([f"--config.tasks.{task}.max_examples={args.max_examples}"]
                   if args.max_examples else [])
            ft = tables.run(os.path.join(args.out, f"{name}-{tag}"), tables.CONFIGS[task],
                            [f"--config.init_from={os.path.abspath(workdir)}", *task_flags, *cap,
                             *args.extra_finetune])
            cells.append(pct(tables.test_row(ft)[metric]))
        lines.append(f"| {objective} | {pct(mlm)} | {pct(sentence)} | "
                     f"{speed[len(speed) // 2]:,.0f} | " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    print(f"\nobjectives at {args.steps} pretraining steps:\n\n{text}\n", flush=True)
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()

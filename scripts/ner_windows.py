"""How many built-in NER sentences and entities one 128-token row cuts off, and how many rows the
windows make instead (docs/results.md, "NER on whole sentences"):

    python scripts/ner_windows.py [--max_seq_len 128]

With the character tokenizer of the transfer runs (one piece per character), trained on the
training sentences as a fine-tuning run from random weights trains it.
"""
import argparse
import logging
import os
import tempfile

import ml_collections
import numpy as np

from nlp_jax.data import encoding, sources
from nlp_jax.data.tokenizer import train_tokenizer


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max_seq_len", type=int, default=128)
    args = parser.parse_args()
    logging.disable(logging.INFO)
    task = sources.load_task(ml_collections.ConfigDict(dict(name="ner", source="builtin")))
    texts = ["".join(e["chars"]) for e in task.splits["train"]]
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = train_tokenizer(texts, 8000, os.path.join(tmp, "spm.model"), model_type="char")
    width = args.max_seq_len - 2
    print("| split | sentences | longer than one row | rows with windows | entities | "
          f"entities starting past character {width} |")
    print("| --- | --- | --- | --- | --- | --- |")
    for split in ("train", "dev", "test"):
        examples = task.splits[split]
        f = encoding.encode_task(task, split, tokenizer, args.max_seq_len)
        windows = np.bincount(f["example_index"])
        starts = [i for e in examples for i, t in enumerate(e["tags"])
                  if task.label_names[t].startswith("B-")]
        cut = sum(i >= width for i in starts)
        n, long = len(examples), int((windows > 1).sum())
        print(f"| {split} | {n:,} | {long:,} ({100 * long / n:.1f}%) | {len(f['input_ids']):,} "
              f"| {len(starts):,} | {cut:,} ({100 * cut / len(starts):.1f}%) |")


if __name__ == "__main__":
    main()

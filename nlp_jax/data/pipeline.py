"""Pretraining data: corpus, tokenizer and sentence-pair instances, read as masked batches per process.

`build_pretraining_data` builds everything once; `PretrainingData.train_iter` streams training
batches through `stream.batch_dataset` (instance indices, or packed rows with data.pack, masked
with an rng from (seed, position) as they are read), so the global order depends only on the seed
and a checkpointed position resumes under any process count. Held-out batches are fixed.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time

import grain
import numpy as np

from nlp_jax.data import corpora, packing, pretraining, stream
from nlp_jax.data import tokenizer as tokenizer_lib

_log = logging.getLogger(__name__)

# Held-out instances and their masks depend only on the data config, not on the training seed, so
# eval losses of runs with different seeds are computed on identical batches.
_HELDOUT_SEED_OFFSET = 1_000_003


@dataclasses.dataclass(frozen=True)
class PretrainingData:
    """Tokenizer, train/held-out instances and the recipe to batch them for one process."""

    tokenizer: tokenizer_lib.Tokenizer
    train_instances: pretraining.Instances
    heldout_instances: pretraining.Instances
    example_config: pretraining.ExampleConfig
    batch_size: int  # global
    seed: int
    num_eval_batches: int
    eval_seed: int
    process_index: int
    process_count: int
    num_threads: int
    prefetch: int
    packed_rows: packing.PackedRows | None = None   # data.pack: training rows of several instances

    @property
    def num_train_rows(self) -> int:
        return len(self.train_instances if self.packed_rows is None else self.packed_rows)

    @property
    def text_tokens_per_row(self) -> float:
        """Training tokens that are text, not padding, per row (averaged over an epoch)."""
        return len(self.train_instances.tokens) / self.num_train_rows

    @property
    def local_batch_size(self) -> int:
        return self.batch_size // self.process_count

    @property
    def steps_per_epoch(self) -> int:
        return self.num_train_rows // self.batch_size

    def train_dataset(self) -> grain.MapDataset:
        """This process's infinite MapDataset of local batches (see `stream.batch_dataset`)."""
        if self.packed_rows is None:
            make = functools.partial(pretraining.make_example, instances=self.train_instances,
                                     cfg=self.example_config)
        else:
            make = functools.partial(pretraining.make_packed_example, rows=self.packed_rows,
                                     instances=self.train_instances, cfg=self.example_config)
        return stream.batch_dataset(
            self.num_train_rows,
            batch_size=self.batch_size,
            seed=self.seed,
            # Masked as read, so every epoch sees new masks.
            row_fn=lambda index, rng: make(index, rng=rng),
            process_index=self.process_index,
            process_count=self.process_count,
        )

    def train_iter(self) -> grain.DatasetIterator:
        """Infinite iterator of local batches {name: array [local_batch, ...]} (shapes: make_example).

        get_state() -> JSON-serialisable dict, set_state(state) resumes exactly where it was taken.
        """
        return stream.iterate(self.train_dataset(), num_threads=self.num_threads,
                              prefetch=self.prefetch)

    def eval_batches(self) -> list[dict[str, np.ndarray]]:
        """num_eval_batches fixed local batches of held-out examples, identical in every call and run.

        Evaluation is never packed, so packed and unpacked runs are scored on the same batches.
        Example j of the eval stream is held-out instance j mod N, masked with rng (eval_seed, j); if N is
        smaller than the number of examples, instances repeat with different masks.
        """
        heldout = self.heldout_instances
        b = self.local_batch_size
        batches = []
        for k in range(self.num_eval_batches):
            first = k * self.batch_size + self.process_index * b
            examples = [
                pretraining.make_example(
                    j % len(heldout),
                    heldout,
                    np.random.default_rng([self.eval_seed, j]),
                    self.example_config,
                )
                for j in range(first, first + b)
            ]
            batches.append({name: np.stack([e[name] for e in examples]) for name in examples[0]})
        return batches


def build_pretraining_data(
    cfg_data,
    *,
    workdir: str | None,
    batch_size: int,
    seed: int,
    num_eval_batches: int,
    process_index: int = 0,
    process_count: int = 1,
) -> PretrainingData:
    """Loads the corpus, loads or trains the tokenizer (in workdir), and builds the sentence-pair
    instances (with word boundaries for data.masking whole_word or span; see pretraining.py).

    Every process builds everything (deterministic, a few seconds for the built-in corpus) and reads
    its own rows of each global batch of `batch_size` rows (examples, or packed rows with data.pack).
    """
    stream.check_sharding(batch_size, process_index, process_count)  # before the slow part
    start = time.perf_counter()
    corpus = corpora.load_corpus(cfg_data)
    tokenizer = tokenizer_lib.load_or_train_tokenizer(
        cfg_data, workdir, lambda: (s for document in corpus["train"] for s in document)
    )
    eval_seed = int(cfg_data.split_seed) + _HELDOUT_SEED_OFFSET
    example_config = pretraining.ExampleConfig.from_config(cfg_data, tokenizer)
    objectives = dict(
        sentence_task=example_config.sentence_task,
        # Whole words and spans need word boundaries: the corpus's own, else jieba's (Chinese).
        segment=None if example_config.masking == "token" else corpora.word_segmenter(cfg_data),
    )
    train = pretraining.create_instances(
        corpus["train"], tokenizer, cfg_data.max_seq_len, cfg_data.short_seq_prob, seed,
        **objectives
    )
    heldout = pretraining.create_instances(
        corpus["heldout"], tokenizer, cfg_data.max_seq_len, cfg_data.short_seq_prob, eval_seed,
        **objectives
    )
    rows = packing.pack_instances(train, cfg_data.max_seq_len) if cfg_data.get("pack") else None
    num_rows = len(train if rows is None else rows)
    if num_rows < batch_size:
        _log.warning(
            "Only %d training rows for a global batch of %d: every batch repeats some",
            num_rows,
            batch_size,
        )
    _log.info(
        "Pretraining data: %d train / %d held-out instances (%d / %d documents), %d train "
        "tokens, vocab %d, masking %s, sentence task %s, built in %.1fs%s",
        len(train),
        len(heldout),
        len(corpus["train"]),
        len(corpus["heldout"]),
        len(train.tokens),
        tokenizer.vocab_size,
        example_config.masking,
        example_config.sentence_task,
        time.perf_counter() - start,
        "" if rows is None else f"; packed into {len(rows)} rows",
    )
    return PretrainingData(
        tokenizer=tokenizer,
        train_instances=train,
        heldout_instances=heldout,
        example_config=example_config,
        batch_size=batch_size,
        seed=seed,
        num_eval_batches=num_eval_batches,
        eval_seed=eval_seed,
        process_index=process_index,
        process_count=process_count,
        num_threads=cfg_data.num_threads,
        prefetch=cfg_data.prefetch,
        packed_rows=rows,
    )

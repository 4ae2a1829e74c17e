r"""Sequence-to-sequence fine-tuning (translation, summarisation): a BERT encoder and a decoder of
the same layers with cross-attention (BERT2BERT), from random weights or warm-started from a BERT.

    python run.py --config configs/finetune_seq2seq.py:pinyin --workdir runs/pinyin
    python run.py --config configs/finetune_seq2seq.py:pinyin --workdir runs/pinyin-bert \
        --config.init_from=runs/pretrain                        # BERT2BERT: both halves from BERT
    python run.py --config configs/finetune_seq2seq.py:pinyin --workdir runs/pinyin \
        --mode generate --input sentences.txt                   # {"text": ...} per line
    python run.py --config configs/finetune_seq2seq.py:files --workdir runs/mine \
        --config.task.train_file=train.tsv --config.task.test_file=test.tsv

Tasks (the argument after the colon; nlp_jax/data/seq2seq.py): pinyin (built in: People's Daily
sentences -> tone-numbered Pinyin), headline (built in: People's Daily article -> its headline),
wmt (TFDS wmt19_translate/zh-en), cnn_dailymail, xsum (TFDS), files (TSV source<TAB>target or
JSONL). Dev and test rows carry BLEU (sacrebleu) and ROUGE-1/2/L (rouge-score), on characters
for Chinese targets.
"""
import ml_collections

from configs import finetune_common

# task -> (task.name, metrics reported, the dev metric that picks the best checkpoint,
#          max_source_len, max_target_len)
_TASKS = {
    "pinyin": ("pinyin", ("bleu", "rouge", "exact_match"), "bleu", 64, 96),
    "headline": ("headline", ("bleu", "rouge"), "rougeL", 256, 48),
    "wmt": ("wmt19_translate/zh-en", ("bleu",), "bleu", 128, 128),
    "cnn_dailymail": ("cnn_dailymail", ("rouge",), "rougeL", 512, 128),
    "xsum": ("xsum", ("rouge",), "rougeL", 512, 64),
    "files": ("files", ("bleu", "rouge"), "bleu", 128, 128),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = arg or "pinyin"
    if arg not in _TASKS:
        raise ValueError(f"configs/finetune_seq2seq.py:{arg}: choose one of {', '.join(_TASKS)}")
    name, metrics, best, max_source, max_target = _TASKS[arg]
    c = finetune_common.get_config()        # model, tokenizer, peft, train and mesh keys
    c.recipe = "seq2seq"                    # nlp_jax/train/recipes/seq2seq.py
    del c.tasks

    c.task = ml_collections.ConfigDict()    # the task (nlp_jax/data/seq2seq.py)
    c.task.name = name                      # pinyin | headline | files | a TFDS dataset name
    c.task.metrics = metrics                # of bleu, rouge (rouge1/2/L), exact_match
    c.task.max_examples = 0                 # > 0: the first that many examples of each split
    c.task.max_source_chars = 0             # pinyin: longest sentence (0: 64); headline: body kept (0: 400)
    c.task.source_lang = ""                 # TFDS translation: source language (empty: the builder's)
    c.task.target_lang = ""                 # TFDS translation: target language
    c.task.source_key = ""                  # other TFDS datasets: the source feature
    c.task.target_key = ""                  # ... and the target feature (empty: supervised keys)
    c.task.train_file = ""                  # files: TSV source<TAB>target or JSONL {"source", "target"}
    c.task.dev_file = ""                    # files: empty: a seeded 10% of the training file
    c.task.test_file = ""                   # files: empty: the dev split
    c.task.file_format = ""                 # files: tsv | jsonl (empty: from the extension)

    d = c.data
    for key in ("max_seq_len", "doc_stride", "max_query_len", "pack", "augment", "augment_prob",
                "augment_unit"):
        del d[key]                          # classification keys
    d.max_source_len = max_source           # source pieces kept
    d.max_target_len = max_target           # target pieces kept, EOS included
    d.split_seed = 0                        # seed of the built-in splits
    d.eval_examples = 500                   # dev examples decoded at each evaluation (0: all); the
                                            # test split is always decoded whole
    d.tokenizer_model = "unigram"           # random init: a tokenizer trained on the sources and
                                            # targets (pinyin: Han characters and syllables)
    d.vocab_size = 8000

    c.losses = {"seq2seq": 1.0}             # teacher-forced next-token cross-entropy
    c.train.label_smoothing = 0.1           # as in Vaswani et al. (2017)
    c.train.epochs = 10
    c.train.learning_rate = 5e-4 if arg == "pinyin" else 1e-4
    c.train.warmup_steps = 200
    c.train.best_metric = best              # dev metric that picks the best checkpoint
    del c.train.best_task

    c.generate = ml_collections.ConfigDict()  # decoding of dev, test and --mode generate
    c.generate.method = "beam"              # greedy | beam | sample
    c.generate.num_beams = 4                # beam: hypotheses kept
    c.generate.length_penalty = 0.6         # beam: score / ((5 + length) / 6) ** length_penalty (GNMT)
    c.generate.max_new_tokens = 0           # 0: data.max_target_len
    c.generate.temperature = 1.0            # sample: logits / temperature
    c.generate.top_k = 0                    # sample: only the k most likely tokens (0: all)
    c.generate.top_p = 1.0                  # sample: nucleus probability (1: all)
    c.generate.seed = 0                     # sample: the draw, reproducible per seed
    c.generate.batch_size = 32              # sources decoded together
    return c

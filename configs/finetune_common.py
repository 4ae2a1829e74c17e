"""What every fine-tuning config shares (imported by configs/finetune_*.py; not run by itself)."""
import ml_collections


def task(name: str, source: str = "builtin", **fields) -> ml_collections.ConfigDict:
    """One task: where its examples come from (see nlp_jax/data/sources.py)."""
    t = ml_collections.ConfigDict()
    t.name = name                  # builtin: sentiment | ner; tfds: the dataset name; files: any
    t.source = source              # builtin | tfds | files | clue
    t.tfds_name = ""               # e.g. glue/sst2 (source=tfds)
    t.text_key = ""                # TFDS feature holding the text (empty: the dataset's usual one)
    t.text_b_key = ""              # TFDS feature holding the second text of a pair
    t.label_key = ""               # TFDS feature holding the label
    t.train_file = ""              # source=files: TSV (text[, text_b], label), JSONL or CoNLL
    t.dev_file = ""                # empty: a seeded 10% of the training file
    t.test_file = ""               # empty: the dev split
    t.file_format = "tsv"          # tsv | jsonl | conll (NER) | squad (QA: SQuAD-format JSON)
    t.label_names = ()             # empty: inferred from the training data
    t.data_dir = ""                # source=clue: the folder of the task's CLUE files
    t.split_seed = 0               # seed of the built-in / held-out splits
    t.max_examples = 0             # > 0: cap each split (quick experiments)
    t.train_examples = 0           # > 0: a random subset of the training split (learning curves)
    t.shots_per_class = 0          # > 0: few-shot (LM-BFF's protocol): k training and k other dev
                                   # examples per class (NER: sentences holding >= k mentions of
                                   # each entity type), drawn from the training split; test kept
    t.subset_seed = 0              # seed of the train_examples / shots_per_class draw (apart from
                                   # split_seed and train.seed)
    t.prompt = ""                  # classification: a PET pattern, e.g. "{text}总之很[MASK]。" ({text},
                                   # optional {text_b}, one [MASK]); the masked-LM head scores the
                                   # verbalizer's words there (zero-shot with train.epochs=0)
    t.verbalizer = ()              # with prompt: one word per label, in label_names order, e.g.
                                   # ("差", "好"); words of n pieces fill n masks (n equal for all)
    t.weight = 1.0                 # multi-task: share of the steps spent on this task
    t.negative_label = ""          # relation extraction: the no-relation label, left out of micro
                                   # P/R/F1 as TACRED scores it (e.g. "no_relation")
    t.crf = False                  # token classification: a linear-chain CRF over the tags (loss
                                   # `crf`, Viterbi decoding) instead of a softmax per token
    t.max_answer_len = 30          # question answering: longest answer, in pieces
    t.losses = {}                  # registered loss name -> weight; empty: the loss of the task's
                                   # kind (classification | token_classification); see loss_modules
    t.update(fields)
    return t


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.recipe = "finetune"                   # what the trainer runs (nlp_jax/train/recipes/)
    c.tasks = ml_collections.ConfigDict()   # task name -> task(...); the first one picks the best checkpoint
    c.init_from = ""                        # pretraining workdir (or its checkpoints/<step>), or a
                                            # Hugging Face BERT directory; empty: random initialisation

    # The architecture keys (size ... position_embedding) are for random initialisation; with
    # init_from the checkpoint's architecture is used, and a key set here must agree with it.
    c.model = ml_collections.ConfigDict()
    c.model.size = ""                       # preset: tiny, mini, small, medium, base, large ("": mini)
    c.model.num_layers = 0                  # > 0 overrides the preset
    c.model.hidden_size = 0                 # > 0 overrides the preset
    c.model.num_heads = 0                   # > 0 overrides the preset
    c.model.max_position_embeddings = 0     # longest sequence the position table covers (0: 512)
    c.model.position_embedding = ""         # absolute (BERT's learned table) | rotary (RoPE) ("": absolute)
    c.model.dropout_rate = 0.1              # dropout in the encoder and before each head
    c.model.dtype = "float32"               # compute dtype ("bfloat16" on GPU/TPU)
    c.model.remat = False                   # recompute layer activations in backward (saves memory)

    c.data = ml_collections.ConfigDict()
    c.data.max_seq_len = 128                # tokens per row, specials included (longer texts:
                                            # truncated; NER and QA: read in overlapping windows)
    c.data.doc_stride = 0                   # NER and QA: pieces between window starts (0: half a window)
    c.data.max_query_len = 64               # QA: question pieces kept
    c.data.pack = False                     # training rows hold several examples each (fewer steps
                                            # per epoch; see packing.pack_features and docs/results.md)
    c.data.tokenizer_path = ""              # random init: an existing SentencePiece model to use
    c.data.tokenizer_model = "unigram"      # random init without tokenizer_path: unigram | bpe | char
    c.data.vocab_size = 8000                # ... with this many pieces (char: at most)
    c.data.augment = "none"                 # none | eda: training texts rewritten at every read
                                            # (random deletion, swap, insertion; seeded, so resume is
                                            # exact); classification and regression tasks only
    c.data.augment_prob = 0.1               # eda: share of the units changed (EDA's alpha)
    c.data.augment_unit = "char"            # eda: char | word (jieba's words for Chinese)
    c.data.num_threads = 2                  # Grain reader threads
    c.data.prefetch = 4                     # batches Grain prepares ahead

    # Parameter-efficient fine-tuning: what trains besides the task heads (nlp_jax/models/peft.py).
    c.peft = ml_collections.ConfigDict()
    c.peft.method = "none"                  # none (everything) | lora | adalora | adapter |
                                            # bitfit (biases and LayerNorms)
    c.peft.targets = ("query", "value")     # lora: projections among query, key, value,
                                            # attention_output, intermediate, output
    c.peft.rank = 8                         # lora: r; adalora: the initial rank (paper: 12)
    c.peft.alpha = 16.0                     # lora: the update is scaled by alpha / r
    c.peft.dropout = 0.0                    # lora: dropout on its input
    c.peft.adapter_size = 64                # adapter: bottleneck units (Houlsby et al. 2019)
    # AdaLoRA (Zhang et al. 2023; nlp_jax/train/adalora.py): rank budget from rank to target_rank
    c.peft.target_rank = 4                  # average final rank per matrix (paper: 8 from 12)
    c.peft.t_init = 0.1                     # share of the steps at the full budget first
    c.peft.t_final = 0.4                    # share of the steps at the final budget last
    c.peft.delta_t = 10                     # steps between reallocations (paper: 100 of ~50k)
    c.peft.beta1 = 0.85                     # EMA of the sensitivity
    c.peft.beta2 = 0.85                     # EMA of its uncertainty
    c.peft.orth_gamma = 0.1                 # weight of the orthogonality regulariser on P and Q

    c.loss_args = ml_collections.ConfigDict()  # extra keyword arguments per loss name
    c.loss_modules = ()                     # modules to import first: your own losses (used by
                                            # name in a task's `losses`) and recipes

    c.train = ml_collections.ConfigDict()
    c.train.epochs = 3                      # passes over the training data (0, with num_steps=0:
                                            # no training, dev and test scored as loaded: zero-shot)
    c.train.num_steps = 0                   # > 0: this many steps instead of `epochs`
    c.train.batch_size = 32                 # global batch size (all devices and hosts)
    c.train.grad_accum_steps = 1            # split each batch into this many sequential micro-batches
    c.train.steps_per_execution = 1         # at most this many optimiser steps per jitted call
                                            # (lax.scan; same updates; one task only)
    c.train.optimizer = "adamw"             # adamw | adam | sgd
    c.train.learning_rate = 1e-4            # peak learning rate
    c.train.warmup_steps = 100              # linear warm-up
    c.train.decay = "linear"                # linear | cosine | constant after warm-up
    c.train.weight_decay = 0.01             # AdamW only; not on LayerNorm or biases
    c.train.momentum = 0.9                  # SGD only
    c.train.adam_b1 = 0.9                   # Adam first-moment decay
    c.train.adam_b2 = 0.999                 # Adam second-moment decay
    c.train.adam_eps = 1e-6                 # Adam epsilon (BERT: 1e-6)
    c.train.grad_clip_norm = 1.0            # clip gradients to this global norm
    c.train.label_smoothing = 0.0           # cross-entropy label smoothing
    c.train.rdrop_alpha = 0.0               # > 0: R-Drop, two dropout passes + alpha x their
                                            # symmetric KL (logged as rdrop_loss)
    c.train.adversarial = "none"            # none | fgm | pgd: adversarial training on the word
                                            # embeddings (logged as adversarial_loss)
    c.train.adversarial_epsilon = 1.0       # fgm / pgd: the perturbation's norm (at most, for pgd)
    c.train.adversarial_steps = 3           # pgd: ascent steps
    c.train.early_stopping_patience = 0     # > 0: stop after this many evaluations without a
                                            # better dev score (0: train all steps)
    c.train.freeze = "none"                 # none | embeddings | encoder (train the heads only)
    c.train.freeze_layers = 0               # > 0: freeze the embeddings and the bottom N layers
    c.train.layerwise_lr_decay = 1.0        # < 1: layer i's LR x decay^(depth from the top)
    c.train.seed = 0                        # head init, dropout, data order
    c.train.log_every = 50                  # steps between train rows in metrics.jsonl
    c.train.eval_every = 0                  # steps between dev evaluations (0: every epoch)
    c.train.checkpoint_every = 0            # steps between checkpoints (0: at every evaluation)
    c.train.max_checkpoints = 2             # checkpoints kept (the best one is kept apart, in best/)
    c.train.progress_bar = True             # tqdm bar with the loss
    c.train.best_metric = "accuracy"        # dev metric that picks the best checkpoint
    c.train.best_task = ""                  # whose metric (empty: the first task reporting it)

    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1                        # data-parallel devices (-1: all remaining)
    c.mesh.fsdp = 1                         # FSDP devices
    c.mesh.tensor = 1                       # tensor-parallel devices
    c.mesh.rules = ()                       # extra (logical axis, mesh axis) pairs
    return c

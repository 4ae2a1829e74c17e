"""Data for pretraining and fine-tuning, one job a module:

  corpora      pretraining corpora (documents of sentences) and the built-in tasks' seeded splits
  tokenizer    SentencePiece tokenizer (train, load, encode with character offsets)
  wordpiece    WordPiece tokenizer of Hugging Face BERT checkpoints
  pretraining  NSP sentence pairs (built once) and masked-LM examples (masked per read)
  pipeline     pretraining data for one process: tokenizer, instances, training stream, eval batches
  sources      fine-tuning tasks' examples: built-in, TFDS or files (`load_task`)
  encoding     task splits as fixed-shape arrays (`encode_task`)
  bio          the BIO tag scheme: tags <-> entities, at characters and at pieces
  packing      sequence packing: several examples per row
  stream       Grain batch streams, per process, in an order set by the seed alone
"""

from nlp_jax.data.bio import bio_entities, char_tags, entities_from_pieces
from nlp_jax.data.corpora import (
    load_corpus,
    load_documents,
    ner_splits,
    sentiment_splits,
    split_sentences,
)
from nlp_jax.data.encoding import encode_task
from nlp_jax.data.packing import PackedRows, best_fit, pack_features, pack_instances
from nlp_jax.data.pipeline import PretrainingData, build_pretraining_data
from nlp_jax.data.pretraining import (
    ExampleConfig,
    Instances,
    create_instances,
    make_example,
    make_packed_example,
    mask_instance,
)
from nlp_jax.data.sources import TaskData, load_task
from nlp_jax.data.stream import eval_batches, task_batches
from nlp_jax.data.tokenizer import (
    CLS,
    MASK,
    PAD,
    SEP,
    UNK,
    Tokenizer,
    load_or_train_tokenizer,
    train_tokenizer,
)

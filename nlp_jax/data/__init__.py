"""Data for BERT pretraining: corpora, SentencePiece tokenizer, NSP/MLM examples, Grain loader."""

from nlp_jax.data.corpora import (
    load_corpus,
    load_documents,
    ner_splits,
    sentiment_splits,
    split_sentences,
)
from nlp_jax.data.pipeline import PretrainingData, build_pretraining_data
from nlp_jax.data.pretraining import (
    ExampleConfig,
    Instances,
    PackedRows,
    create_instances,
    make_example,
    make_packed_example,
    mask_instance,
    pack_instances,
)
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

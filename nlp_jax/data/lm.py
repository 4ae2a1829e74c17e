"""Causal language-model data: documents as one token stream, cut into packed rows, per process.

`build_lm_data` loads the corpus (`corpora.load_corpus`: builtin / text / tfds, with its held-out
split), loads or trains the tokenizer, and lays every document out as

    [CLS] pieces of sentence 1 ... pieces of sentence n [SEP]

([CLS] = BOS, [SEP] = EOS). The documents of a split are concatenated into one stream, which is cut
into rows of `max_seq_len` tokens, as GPT-2/3 pretraining does (concatenate and chunk): no token is
dropped and there is no padding except at the end of the last row, while a long document simply
continues in the next row. Row r holds stream[r*L : (r+1)*L] and its labels are the next tokens,
stream[r*L+1 : (r+1)*L+1], so the last position of a row is labelled with the first token of the
next row.

Documents stay apart inside a row: `attention_mask` numbers the documents of the row (1, 2, ...;
0 = padding), the convention of packed BERT rows (see `BertEncoder`), so a causal mask built from it
stops at every document boundary; `position_ids` restart at 0 wherever a document starts *and* at
the start of every row (a continued document restarts its positions too: positions then never
exceed max_seq_len - 1, which learned position tables need, and rotary attention, which sees only
differences of positions, is unaffected). `label_weights` is 1 where the label is the next token of
the same document: 0 at each [SEP] (whose next token is another document's [CLS]) and on padding.
So per document the model is scored on predicting every piece and the closing [SEP] from [CLS]
onwards, exactly the events `ngram_perplexity` scores for the baseline.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence

import grain
import numpy as np

from nlp_jax.data import corpora, stream
from nlp_jax.data import tokenizer as tokenizer_lib

_log = logging.getLogger(__name__)

ROW_KEYS = ("input_ids", "labels", "label_weights", "attention_mask", "position_ids")


@dataclasses.dataclass(frozen=True)
class TokenStream:
    """The documents of one split, concatenated: tokens[i] belongs to document document_ids[i]
    (0, 1, ... in corpus order). Every document is [CLS] ... [SEP], so none is empty."""

    tokens: np.ndarray  # int32 [num_tokens]
    document_ids: np.ndarray  # int32 [num_tokens]

    def __len__(self) -> int:
        return len(self.tokens)

    def documents(self) -> list[np.ndarray]:
        """The token array of each document, in order."""
        starts = np.flatnonzero(np.diff(self.document_ids, prepend=-1))
        return np.split(self.tokens, starts[1:])


def token_stream(documents: Sequence[Sequence[str]], tokenizer) -> TokenStream:
    """Documents (lists of sentences) -> one stream of [CLS] pieces... [SEP] per document."""
    sentences = [s for d in documents for s in d]
    pieces = tokenizer.encode_batch(sentences) if sentences else []
    tokens, document_ids, k = [], [], 0
    for d, document in enumerate(documents):
        ids = [tokenizer.cls_id]
        for ids_of_sentence in pieces[k : k + len(document)]:
            ids.extend(ids_of_sentence)
        ids.append(tokenizer.sep_id)
        k += len(document)
        tokens.append(np.asarray(ids, np.int32))
        document_ids.append(np.full(len(ids), d, np.int32))
    if not tokens:
        return TokenStream(np.zeros(0, np.int32), np.zeros(0, np.int32))
    return TokenStream(np.concatenate(tokens), np.concatenate(document_ids))


def num_rows(stream_: TokenStream, max_seq_len: int) -> int:
    """Rows of max_seq_len tokens the stream fills (the last one padded)."""
    return -(-len(stream_) // max_seq_len)


def make_row(stream_: TokenStream, r: int, max_seq_len: int, pad_id: int) -> dict[str, np.ndarray]:
    """Row r of the stream: {name: [max_seq_len]} for every name of ROW_KEYS (module docstring).

    input_ids, labels, attention_mask, position_ids int32; label_weights float32."""
    L, start = max_seq_len, r * max_seq_len
    tokens = stream_.tokens[start : start + L + 1]  # one more: the last position's label
    docs = stream_.document_ids[start : start + L + 1]
    n = min(L, len(tokens))  # real tokens in the row
    row = {k: np.zeros(L, np.int32) for k in ROW_KEYS}
    row["input_ids"][:] = pad_id
    row["input_ids"][:n] = tokens[:n]
    row["labels"][: len(tokens) - 1] = tokens[1:]
    same_document = docs[1:] == docs[:-1]
    row["label_weights"] = np.zeros(L, np.float32)
    row["label_weights"][: len(same_document)] = same_document
    # Documents are numbered consecutively in the stream, so this numbers them 1, 2, ... per row.
    row["attention_mask"][:n] = docs[:n] - docs[0] + 1
    # Position within the document's piece of this row: index minus the index where it started.
    starts = np.flatnonzero(np.diff(docs[:n], prepend=-1))
    row["position_ids"][:n] = np.arange(n) - np.repeat(starts, np.diff(np.append(starts, n)))
    return row


def make_rows(stream_: TokenStream, max_seq_len: int, pad_id: int) -> dict[str, np.ndarray]:
    """Every row of the stream at once: {name: [num_rows, max_seq_len]}."""
    rows = [make_row(stream_, r, max_seq_len, pad_id) for r in range(num_rows(stream_, max_seq_len))]
    return {k: np.stack([row[k] for row in rows]) for k in ROW_KEYS}


@dataclasses.dataclass(frozen=True)
class LMData:
    """Tokenizer, train/held-out token streams and the recipe to batch them for one process.

    Batches are {name: [local_batch, max_seq_len]} for every name of ROW_KEYS."""

    tokenizer: tokenizer_lib.Tokenizer
    train: TokenStream
    heldout: TokenStream
    max_seq_len: int
    batch_size: int  # global
    seed: int
    num_eval_batches: int
    process_index: int
    process_count: int
    num_threads: int
    prefetch: int

    @property
    def num_train_rows(self) -> int:
        return num_rows(self.train, self.max_seq_len)

    @property
    def local_batch_size(self) -> int:
        return self.batch_size // self.process_count

    @property
    def steps_per_epoch(self) -> int:
        return self.num_train_rows // self.batch_size

    @property
    def tokens_per_row(self) -> float:
        """Training tokens that are text, not padding, per row (averaged over an epoch; packing
        leaves padding only in the last row, so this is max_seq_len to within a row)."""
        return len(self.train) / self.num_train_rows

    @property
    def heldout_predictions(self) -> int:
        """Next-token predictions in the held-out split (the sum of its label_weights): every
        held-out token but the [CLS] opening each document."""
        return len(self.heldout) - int(self.heldout.document_ids[-1]) - 1

    def train_dataset(self) -> grain.MapDataset:
        """This process's infinite MapDataset of local batches (see `stream.batch_dataset`)."""
        train, L, pad = self.train, self.max_seq_len, self.tokenizer.pad_id
        return stream.batch_dataset(
            self.num_train_rows,
            batch_size=self.batch_size,
            seed=self.seed,
            row_fn=lambda index, rng: make_row(train, int(index), L, pad),
            process_index=self.process_index,
            process_count=self.process_count,
        )

    def train_iter(self) -> grain.DatasetIterator:
        """Infinite iterator of shuffled local batches {name: [local_batch, max_seq_len]}
        (reshuffled every epoch). get_state() -> a JSON-serialisable dict; set_state(state)
        resumes exactly where it was taken, also under another process count."""
        return stream.iterate(self.train_dataset(), num_threads=self.num_threads,
                              prefetch=self.prefetch)

    def eval_batches(self, num_batches: int | None = None) -> list[dict[str, np.ndarray]]:
        """Fixed local batches of held-out rows in stream order, identical in every call and run.

        num_batches (default: num_eval_batches) > 0: that many global batches, row j of the eval
        stream being held-out row j mod R (rows repeat if there are fewer). num_batches <= 0:
        every held-out row once, the last global batch padded with rows of label_weights 0 and
        attention_mask 0, so that summing over all processes' batches gives the perplexity of the
        whole held-out split (`heldout_predictions` predictions), the number to put beside
        `ngram_perplexity`.
        """
        num_batches = self.num_eval_batches if num_batches is None else num_batches
        rows = make_rows(self.heldout, self.max_seq_len, self.tokenizer.pad_id)
        R = len(rows["input_ids"])
        if num_batches > 0:
            index = np.arange(num_batches * self.batch_size) % R
        else:
            index = np.arange(-(-R // self.batch_size) * self.batch_size)
            index[R:] = -1
        b, batches = self.local_batch_size, []
        for k in range(len(index) // self.batch_size):
            first = k * self.batch_size + self.process_index * b
            take = index[first : first + b]
            batch = {name: v[np.maximum(take, 0)] for name, v in rows.items()}
            padding = take < 0  # a padding row: a copy of row 0 that nothing attends to or scores
            batch["label_weights"][padding] = 0.0
            batch["attention_mask"][padding] = 0
            batches.append(batch)
        return batches


def build_lm_data(
    cfg_data,
    *,
    workdir: str | None,
    batch_size: int,
    seed: int,
    num_eval_batches: int,
    process_index: int = 0,
    process_count: int = 1,
) -> LMData:
    """Loads the corpus, loads or trains the tokenizer (in workdir), and lays out both splits as
    token streams (module docstring). cfg_data keys: those of `corpora.load_corpus` and
    `tokenizer.load_or_train_tokenizer`, plus max_seq_len, num_threads, prefetch.

    Every process builds everything (deterministic) and reads its own rows of each global batch
    of `batch_size` rows.
    """
    stream.check_sharding(batch_size, process_index, process_count)  # before the slow part
    max_seq_len = int(cfg_data.max_seq_len)
    if max_seq_len < 2:
        raise ValueError(f"data.max_seq_len={max_seq_len} is too short for a language model; "
                         "use at least 2 (e.g. 128)")
    start = time.perf_counter()
    corpus = corpora.load_corpus(cfg_data)
    tokenizer = tokenizer_lib.load_or_train_tokenizer(
        cfg_data, workdir, lambda: (s for document in corpus["train"] for s in document)
    )
    train = token_stream(corpus["train"], tokenizer)
    heldout = token_stream(corpus["heldout"], tokenizer)
    rows = num_rows(train, max_seq_len)
    if rows < batch_size:
        _log.warning("Only %d training rows for a global batch of %d: every batch repeats some",
                     rows, batch_size)
    _log.info(
        "LM data: %d train / %d held-out tokens (%d / %d documents) in %d / %d rows of %d, "
        "vocab %d, built in %.1fs",
        len(train), len(heldout), len(corpus["train"]), len(corpus["heldout"]), rows,
        num_rows(heldout, max_seq_len), max_seq_len, tokenizer.vocab_size,
        time.perf_counter() - start,
    )
    return LMData(
        tokenizer=tokenizer,
        train=train,
        heldout=heldout,
        max_seq_len=max_seq_len,
        batch_size=batch_size,
        seed=seed,
        num_eval_batches=num_eval_batches,
        process_index=process_index,
        process_count=process_count,
        num_threads=int(cfg_data.num_threads),
        prefetch=int(cfg_data.prefetch),
    )


# ----------------------------------------------------------------------------------------------
# The n-gram baseline: interpolated Kneser-Ney over the same tokens, scored on the same events.


def _keys(grams: np.ndarray, base: int) -> np.ndarray:
    """[N, k] token ids -> [N] int64 keys (mixed radix in `base`), one per distinct k-gram."""
    keys = np.zeros(len(grams), np.int64)
    for j in range(grams.shape[1]):
        keys = keys * base + grams[:, j]
    return keys


def _lookup(sorted_keys: np.ndarray, values: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """values[i] where sorted_keys[i] == query, else 0."""
    i = np.clip(np.searchsorted(sorted_keys, queries), 0, max(len(sorted_keys) - 1, 0))
    found = (sorted_keys[i] == queries) if len(sorted_keys) else np.zeros(len(queries), bool)
    return np.where(found, values[i] if len(values) else 0, 0)


def _discount(counts: np.ndarray) -> float:
    """Ney's D = n1 / (n1 + 2 n2) from the counts of counts, 0.75 where it is undefined."""
    n1, n2 = np.sum(counts == 1), np.sum(counts == 2)
    return float(n1 / (n1 + 2 * n2)) if n1 and n1 + 2 * n2 and n1 / (n1 + 2 * n2) < 1 else 0.75


def _windows(documents: Sequence[Sequence[int]], n: int) -> np.ndarray:
    """[P, n] int64: each predicted token (all but a document's first) with the n - 1 tokens before
    it; a document's start is padded with copies of its first token ([CLS], i.e. BOS)."""
    out = []
    for d in documents:
        d = np.asarray(d, np.int64)
        if len(d) < 2:
            continue
        padded = np.concatenate([np.full(n - 2, d[0]), d]) if n > 2 else d
        out.append(np.lib.stride_tricks.sliding_window_view(padded, max(n, 2))[:, -n:]
                   if n > 1 else d[1:, None])
    return np.concatenate(out) if out else np.zeros((0, n), np.int64)


class KneserNey:
    """Interpolated Kneser-Ney n-gram model (Chen & Goodman 1998, one discount per order, Ney's
    estimate), counted with numpy over int64 n-gram keys; the unigram level is interpolated with
    the uniform distribution over `vocab_size` tokens, so no token has probability 0.

    The highest order uses counts, lower orders continuation counts (how many distinct tokens
    precede the n-gram); an unseen context backs off entirely to the next lower order.
    """

    def __init__(self, documents: Sequence[Sequence[int]], n: int, vocab_size: int):
        if n < 1:
            raise ValueError(f"n={n}: an n-gram model needs n >= 1")
        if float(vocab_size) ** n >= 2.0 ** 63:
            raise ValueError(f"n={n} with a vocabulary of {vocab_size} overflows 64-bit n-gram keys; "
                             "use a smaller n or vocabulary (e.g. a char tokenizer)")
        self.n, self.V = n, int(vocab_size)
        windows = _windows(documents, n)
        if not len(windows):
            raise ValueError("no training tokens for the n-gram model; give non-empty documents")
        # levels[k-1]: (sorted k-gram keys, their (continuation) counts, sorted (k-1)-context keys,
        # total count after each context, distinct tokens after each context, discount)
        self.levels = []
        for k in range(1, n + 1):
            if k == n:
                keys, counts = np.unique(_keys(windows[:, n - k:], self.V), return_counts=True)
                grams = windows[:, n - k:]
                grams = grams[np.unique(_keys(grams, self.V), return_index=True)[1]]
            else:
                # Continuation count: the distinct (k+1)-grams that end in this k-gram.
                longer = np.unique(windows[:, n - k - 1:], axis=0)
                keys, counts = np.unique(_keys(longer[:, 1:], self.V), return_counts=True)
                grams = np.unique(longer[:, 1:], axis=0)  # sorted like `keys`
            contexts = _keys(grams[:, :-1], self.V)
            ctx_keys, inverse = np.unique(contexts, return_inverse=True)
            totals = np.bincount(inverse, weights=counts, minlength=len(ctx_keys))
            distinct = np.bincount(inverse, minlength=len(ctx_keys))
            self.levels.append((keys, counts, ctx_keys, totals, distinct, _discount(counts)))

    def probabilities(self, windows: np.ndarray) -> np.ndarray:
        """[P, n] (n - 1 context tokens, then the token) -> [P] P(token | context)."""
        windows = np.asarray(windows, np.int64)
        p = np.full(len(windows), 1.0 / self.V)
        for k, (keys, counts, ctx_keys, totals, distinct, D) in enumerate(self.levels, 1):
            grams = windows[:, self.n - k:]
            c = _lookup(keys, counts, _keys(grams, self.V))
            context = _keys(grams[:, :-1], self.V)
            total = _lookup(ctx_keys, totals, context)
            types = _lookup(ctx_keys, distinct, context)
            seen = total > 0
            safe = np.where(seen, total, 1.0)
            p = np.where(seen, np.maximum(c - D, 0) / safe + D * types / safe * p, p)
        return p


def ngram_perplexity(
    train_documents: Sequence[Sequence[int]],
    heldout_documents: Sequence[Sequence[int]],
    *,
    n: int = 4,
    vocab_size: int,
) -> dict[str, float]:
    """Held-out perplexity of an interpolated Kneser-Ney n-gram model (`KneserNey`) trained on
    `train_documents`, per token of the documents' tokenizer.

    Documents are token-id sequences laid out as the language model sees them ([CLS] ... [SEP],
    e.g. `TokenStream.documents()`); every token but each document's first is predicted from the
    n - 1 before it in its document, exactly the held-out events `LMData.eval_batches(0)` weights,
    so the two perplexities are comparable. With a char tokenizer (data.tokenizer_model='char')
    this is a character n-gram model.

    Returns {"perplexity", "nll" (mean, nats per token), "tokens" (predictions scored)}.
    """
    model = KneserNey(train_documents, n, vocab_size)
    windows = _windows(heldout_documents, n)
    if not len(windows):
        raise ValueError("no held-out tokens to score; give non-empty held-out documents")
    nll = float(-np.mean(np.log(model.probabilities(windows))))
    return {"perplexity": float(np.exp(nll)), "nll": nll, "tokens": float(len(windows))}

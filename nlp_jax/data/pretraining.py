"""BERT pretraining examples: sentence pairs (built once) and masked-LM masking (per read).

Follows BERT's create_pretraining_data.py, with one deliberate difference: pairs are built once
(dupe_factor=1) and masked afresh each time an example is read, with an rng the loader derives from
(seed, position in the stream). Every epoch therefore sees new masks ("dynamic masking", RoBERTa)
without storing dupe_factor copies of the corpus.

Objectives (data.masking, data.sentence_task):
  masking "token"       BERT: 15% of the pieces, each on its own.
          "whole_word"  BERT-wwm (Cui et al.): whole words, until 15% of the pieces; 80/10/10 per
                        piece, as Google's create_pretraining_data does with do_whole_word_mask.
          "span"        SpanBERT (Joshi et al., 2020): spans of whole words, lengths ~ Geo(0.2)
                        truncated to 1..10 words, until 15% of the pieces; 80/10/10 per span.
  sentence_task "nsp"   BERT: B continues A (0) or comes from another document (1).
                "sop"   ALBERT's sentence-order prediction: A and B are consecutive segments of one
                        document, swapped with probability 1/2 (sentence_order_labels 1 = swapped).
                "both"  NSP's pairs, and on those whose B is from A's document the SOP swap too
                        (SOP is weighted 0 where B comes from another document).

Word boundaries are computed once, when the instances are built, as a word-start flag per piece
(`Instances.word_starts`, 1 byte a token beside the tokens): see `encode_words`.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Sequence

import numpy as np

from nlp_jax.data.packing import PackedRows

# [CLS] A [SEP] B [SEP] with non-empty A and B.
MIN_SEQ_LEN = 5

MASKING = ("token", "whole_word", "span")
SENTENCE_TASKS = ("nsp", "sop", "both")


def check_choice(key: str, value: str, choices: Sequence[str]) -> None:
    """One clear line for a config value outside its choices (data.masking, data.sentence_task)."""
    if value not in choices:
        raise ValueError(f"{key}={value!r} is unknown; choose one of {', '.join(choices)}")


@dataclasses.dataclass(frozen=True)
class Instances:
    """N sentence-pair instances stored flat, so random access is an O(1) slice and memory is ~4 B/token.

    Instance i is tokens[offsets[i]:offsets[i+1]] = [CLS] A [SEP] B [SEP], where B starts at
    segment_b_start[i] (the index after the first [SEP]).
    """

    tokens: np.ndarray  # int32 [total_tokens]
    offsets: np.ndarray  # int64 [N + 1]
    segment_b_start: np.ndarray  # int32 [N]
    next_sentence_labels: np.ndarray  # int32 [N]: 0 IsNext, 1 NotNext (B from another document)
    document_index: np.ndarray  # int32 [N]: index of A's document in the input (provenance)
    # bool [total_tokens]: the token starts a word (True on [CLS] and [SEP]); None: not computed
    # (token masking needs none).
    word_starts: np.ndarray | None = None
    # int32 [N]: 0 A comes before B in the document, 1 swapped, -1 no order (B from another
    # document); None: built without sentence-order prediction.
    sentence_order_labels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.segment_b_start)

    def instance(self, i: int) -> tuple[np.ndarray, int, int]:
        """(tokens int32 [length], segment_b_start, next_sentence_label) of instance i."""
        return (
            self.tokens[self.offsets[i] : self.offsets[i + 1]],
            int(self.segment_b_start[i]),
            int(self.next_sentence_labels[i]),
        )

    @property
    def max_length(self) -> int:
        return int(np.diff(self.offsets).max(initial=0))


def _truncate_seq_pair(
    a: list[int], b: list[int], max_num_tokens: int, rng: np.random.Generator
) -> tuple[list[int], list[int]]:
    """BERT's truncate_seq_pair: trim the longer side one token at a time, from its front or its back
    with equal probability. Same distribution, computed without the per-token loop: the final lengths
    are deterministic and the number of front trims of each side is Binomial(trimmed, 1/2)."""
    len_a, len_b = len(a), len(b)
    while len_a + len_b > max_num_tokens:
        if len_a > len_b:
            len_a -= 1
        else:
            len_b -= 1
    front_a = int(rng.binomial(len(a) - len_a, 0.5))
    front_b = int(rng.binomial(len(b) - len_b, 0.5))
    return a[front_a : front_a + len_a], b[front_b : front_b + len_b]


def _random_other_document(num_documents: int, current: int, rng: np.random.Generator) -> int:
    if (
        num_documents == 1
    ):  # nothing else to pick (a tiny held-out split): BERT's fallback, same doc
        return current
    other = int(rng.integers(num_documents - 1))
    return other + (other >= current)


def _pairs_from_document(
    documents: Sequence[Sequence[list[int]]],
    doc_index: int,
    max_num_tokens: int,
    short_seq_prob: float,
    rng: np.random.Generator,
    sentence_task: str = "nsp",
):
    """BERT's create_instances_from_document; yields (tokens_a, tokens_b, is_random_next, swapped).

    sentence_task "sop" never takes B from another document and "both" does so as "nsp" does; with
    either, a B that continues A is swapped with it on a coin flip (ALBERT's
    create_instances_from_document_albert). "nsp" draws exactly BERT's random numbers."""
    random_next_allowed = sentence_task != "sop"
    order_coin = sentence_task != "nsp"
    document = documents[doc_index]
    # Mostly fill the sequence, but sometimes use a shorter target so the model also sees short inputs
    # (fine-tuning sequences are often short).
    target_seq_length = max_num_tokens
    if rng.random() < short_seq_prob:
        target_seq_length = int(rng.integers(2, max_num_tokens + 1))
    chunk: list[list[int]] = []
    chunk_length = 0
    i = 0
    while i < len(document):
        chunk.append(document[i])
        chunk_length += len(document[i])
        if i == len(document) - 1 or chunk_length >= target_seq_length:
            segments, whole_sentences = chunk, True
            if len(chunk) == 1 and len(chunk[0]) >= 2:
                # Deviation from BERT, which makes every one-sentence chunk a NotNext pair: on short documents
                # (reviews, last sentences) that skews labels to ~70% NotNext. Cutting the sentence in two at
                # a random token gives it a true continuation, so the coin below keeps labels at ~50/50.
                cut = int(rng.integers(1, len(chunk[0])))
                segments, whole_sentences = [chunk[0][:cut], chunk[0][cut:]], False
            a_end = int(rng.integers(1, len(segments))) if len(segments) >= 2 else 1
            tokens_a = [t for segment in segments[:a_end] for t in segment]
            swapped = False
            if len(segments) == 1 and not random_next_allowed:
                tokens_b = None  # a one-token chunk has no second segment to order: SOP drops it
            elif len(segments) == 1 or (random_next_allowed and rng.random() < 0.5):
                is_random_next = True
                target_b_length = target_seq_length - len(tokens_a)
                random_document = documents[_random_other_document(len(documents), doc_index, rng)]
                tokens_b = []
                for segment in random_document[int(rng.integers(len(random_document))) :]:
                    tokens_b.extend(segment)
                    if len(tokens_b) >= target_b_length:
                        break
                if whole_sentences:
                    # Put the unused sentences back so they start the next chunk instead of being wasted.
                    i -= len(segments) - a_end
            else:
                is_random_next = False
                tokens_b = [t for segment in segments[a_end:] for t in segment]
                if order_coin and rng.random() < 0.5:
                    tokens_a, tokens_b, swapped = tokens_b, tokens_a, True
            if tokens_b is not None:
                yield (*_truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng),
                       is_random_next, swapped)
            chunk, chunk_length = [], 0
        i += 1


def encode_words(
    tokenizer, sentences: Sequence[str], segment: Callable[[str], Sequence[int]]
) -> tuple[list[list[int]], np.ndarray]:
    """Encodes `sentences` and flags the pieces that start a word: (ids of each sentence, as
    tokenizer.encode gives them; bool per piece of all the sentences, one sentence after the other).

    One rule for both tokenizers, from the pieces' text and `segment(sentence)` (str offsets where
    the sentence's words start: the corpus's own segmentation, else jieba for Chinese; see
    corpora.word_segmenter):
      * a sentence's first piece starts a word;
      * a WordPiece "##" piece continues the word before it;
      * a SentencePiece piece that starts with "▁" starts a word, and the piece after a bare "▁"
        (a space, or the dummy prefix, kept as a piece of its own) continues it;
      * any other piece starts a word iff a word of the segmentation starts where the piece does:
        Chinese pieces follow the segmenter's words, whatever the tokenizer.
    A word boundary inside a piece (a SentencePiece piece spanning two words) joins those words:
    pieces are never split, so every word of the segmentation lies inside one masking word.
    The tokenizer needs encode_batch_with_offsets or encode_with_offsets, and id_to_piece.
    """
    if not sentences:
        return [], np.zeros(0, bool)
    if hasattr(tokenizer, "encode_batch_with_offsets"):
        encoded = tokenizer.encode_batch_with_offsets(sentences)
    else:
        encoded = [tokenizer.encode_with_offsets(s) for s in sentences]
    pieces = [tokenizer.id_to_piece(i) for i in range(tokenizer.vocab_size)]
    continues, spaced, bare_space = (
        np.array([test(p) for p in pieces], bool)
        for test in (lambda p: p.startswith("##"), lambda p: p.startswith("▁"), lambda p: p == "▁")
    )
    # Offsets are made corpus-wide (each sentence shifted past the previous one and a gap), so that
    # one isin matches every piece against its own sentence's word starts.
    bases = np.cumsum([0] + [len(s) + 1 for s in sentences[:-1]])
    ids = np.fromiter(itertools.chain.from_iterable(i for i, _ in encoded), np.int64)
    piece_starts = np.fromiter(
        (base + a for base, (_, spans) in zip(bases, encoded) for a, _ in spans), np.int64,
        count=len(ids))
    word_starts = np.concatenate(
        [np.zeros(0, np.int64)]
        + [np.asarray(segment(s), np.int64) + base for s, base in zip(sentences, bases)])
    starts = spaced[ids] | np.isin(piece_starts, word_starts)
    starts &= ~continues[ids] & ~np.r_[False, bare_space[ids[:-1]]]
    first_pieces = np.cumsum([0] + [len(i) for i, _ in encoded[:-1]])
    starts[first_pieces[[len(i) > 0 for i, _ in encoded]]] = True
    return [list(i) for i, _ in encoded], starts


def create_instances(
    documents: Sequence[Sequence[str]],
    tokenizer,
    max_seq_len: int,
    short_seq_prob: float,
    seed: int,
    *,
    sentence_task: str = "nsp",
    segment: Callable[[str], Sequence[int]] | None = None,
) -> Instances:
    """Sentence pairs from `documents` (lists of sentences), deterministic for `seed`.

    sentence_task "nsp" (next-sentence prediction): about half the pairs continue A with the text
    that follows it (label 0, IsNext); the others take B from a random other document (label 1,
    NotNext). A chunk of one sentence is cut in two to get a true continuation (BERT would always
    make it NotNext), so labels stay balanced on short documents. "sop": every B continues A, and
    half the pairs are swapped (sentence_order_labels 1); "both": NSP's pairs, the continuing ones
    swapped on a coin flip (see `Instances.sentence_order_labels`). "nsp" makes exactly the
    instances of before sentence_task existed.

    segment: sentence -> offsets where its words start; given, the instances carry word_starts
    (`encode_words`), which whole-word and span masking need.
    """
    if max_seq_len < MIN_SEQ_LEN:
        raise ValueError(
            f"max_seq_len={max_seq_len} is too small: need at least {MIN_SEQ_LEN} for "
            f"[CLS] A [SEP] B [SEP] with one token in A and in B; raise data.max_seq_len"
        )
    check_choice("data.sentence_task", sentence_task, SENTENCE_TASKS)
    sentences = [s for d in documents for s in d]
    if segment is None:
        encoded, piece_word_starts = tokenizer.encode_batch(sentences), None
    else:
        encoded, piece_word_starts = encode_words(tokenizer, sentences, segment)
    cls, sep = tokenizer.cls_id, tokenizer.sep_id
    # Pairs are built from positions in the corpus's token array (a range per sentence), so that
    # anything stored per token (the word starts) follows its token through pairing and
    # truncation; [CLS] and [SEP] are its last two entries.
    corpus_ids = np.fromiter(
        itertools.chain(itertools.chain.from_iterable(encoded), (cls, sep)), np.int32)
    cls_at, sep_at = len(corpus_ids) - 2, len(corpus_ids) - 1
    tokenized, source_index = [], []  # per document, its sentences' positions; empty ones dropped
    sentence_ranges = iter(_ranges(len(ids) for ids in encoded))
    del encoded  # corpus_ids holds the ids now, in 4 bytes each
    for index, document in enumerate(documents):
        if segments := [r for r in itertools.islice(sentence_ranges, len(document)) if r]:
            tokenized.append(segments)
            source_index.append(index)
    if not tokenized:
        raise ValueError(
            "no document has a non-empty sentence after tokenization; check the corpus"
        )
    rng = np.random.default_rng(seed)
    flat: list[int] = []
    offsets, b_starts, labels, order_labels, doc_ids = [0], [], [], [], []
    # BERT shuffles the documents' order only to mix instances; the loader shuffles globally anyway.
    for doc_index in range(len(tokenized)):
        for tokens_a, tokens_b, is_random_next, swapped in _pairs_from_document(
            tokenized, doc_index, max_seq_len - 3, short_seq_prob, rng, sentence_task
        ):
            flat += [cls_at, *tokens_a, sep_at, *tokens_b, sep_at]
            offsets.append(len(flat))
            b_starts.append(len(tokens_a) + 2)
            labels.append(int(is_random_next))
            order_labels.append(-1 if is_random_next else int(swapped))
            doc_ids.append(source_index[doc_index])
    flat = np.asarray(flat, np.int64)
    word_starts = None
    if piece_word_starts is not None:
        word_starts = np.concatenate([piece_word_starts, [True, True]])[flat]
    return Instances(
        tokens=corpus_ids[flat],
        offsets=np.asarray(offsets, np.int64),
        segment_b_start=np.asarray(b_starts, np.int32),
        next_sentence_labels=np.asarray(labels, np.int32),
        document_index=np.asarray(doc_ids, np.int32),
        word_starts=word_starts,
        sentence_order_labels=(
            None if sentence_task == "nsp" else np.asarray(order_labels, np.int32)),
    )


def _ranges(lengths) -> list[range]:
    """Consecutive ranges of the given lengths, from 0."""
    ranges, start = [], 0
    for n in lengths:
        ranges.append(range(start, start + n))
        start += n
    return ranges


def mask_instance(
    tokens: np.ndarray,
    rng: np.random.Generator,
    *,
    vocab_size: int,
    mask_id: int,
    special_ids: Sequence[int],
    max_predictions: int,
    mask_prob: float = 0.15,
    masking: str = "token",
    word_starts: np.ndarray | None = None,
    span_p: float = 0.2,
    max_span_length: int = 10,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """BERT's masked-LM corruption of one sequence (tokens: int [L]).

    The budget is round(mask_prob * #non-special tokens) positions (at least 1, at most
    max_predictions); special tokens are never picked. masking:
      "token"       the budget's positions, drawn without replacement (BERT);
      "whole_word"  whole words in random order, skipping any that would overrun the budget, until
                    it is spent (Google's do_whole_word_mask; BERT-wwm);
      "span"        spans of whole words (SpanBERT; see `_spans`) until the budget is spent.
    word_starts: bool [L], True where a word starts (`Instances.word_starts`); None: every piece is
    a word. A word never reaches over a special token.
    Each masked position is replaced by [MASK] 80% of the time, by a random non-special id 10%, and
    kept 10%: drawn per position, except with "span", where a whole span shares one draw (SpanBERT).
    Returns masked_tokens int32 [L], masked_lm_positions int32 [P], masked_lm_ids int32 [P] (original
    tokens) and masked_lm_weights float32 [P] (1 real, 0 padding), P = max_predictions, sorted by position.
    """
    check_choice("masking", masking, MASKING)
    tokens = np.asarray(tokens, np.int32)
    specials = np.unique(np.asarray(special_ids, np.int32))
    is_candidate = (tokens[:, None] != specials).all(axis=1)  # a few x faster than isin
    candidates = np.flatnonzero(is_candidate)
    num = min(max_predictions, max(1, round(len(candidates) * mask_prob)), len(candidates))
    if masking == "token":
        positions = np.sort(rng.choice(candidates, size=num, replace=False)).astype(np.int32)
        action = rng.random(num)
    elif masking == "whole_word":
        begins, lengths = _words(is_candidate, word_starts)
        chosen = _whole_words(lengths, num, rng)
        positions = _positions(begins[chosen], lengths[chosen])
        action = rng.random(len(positions))
    else:  # span
        begins, lengths = _words(is_candidate, word_starts)
        spans = _spans(begins, lengths, num, rng, span_p, max_span_length)
        words = np.asarray([w for span in spans for w in span], np.int64)
        positions = _positions(begins[words], lengths[words])
        span_of_word = np.repeat(np.arange(len(spans)), [len(span) for span in spans])
        action = np.repeat(rng.random(len(spans))[span_of_word], lengths[words])
        order = np.argsort(positions)
        positions, action = positions[order], action[order]
    num = len(positions)  # whole words and spans may leave part of the budget unspent
    masked = tokens.copy()
    # Random replacements come uniformly from the non-special ids: draw from [0, V - #specials) and
    # step over each special id (ascending) at or below the draw.
    random_ids = rng.integers(0, vocab_size - len(specials), size=num)
    for s in specials:
        random_ids += random_ids >= s
    masked[positions] = np.where(
        action < 0.8, mask_id, np.where(action < 0.9, tokens[positions], random_ids)
    )
    # Fixed-size outputs, zero-padded (np.pad costs more than the masking itself at these sizes).
    masked_lm_positions = np.zeros(max_predictions, np.int32)
    masked_lm_ids = np.zeros(max_predictions, np.int32)
    masked_lm_weights = np.zeros(max_predictions, np.float32)
    masked_lm_positions[:num] = positions
    masked_lm_ids[:num] = tokens[positions]
    masked_lm_weights[:num] = 1.0
    return masked, masked_lm_positions, masked_lm_ids, masked_lm_weights


def _words(is_candidate: np.ndarray, word_starts: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(first position, number of pieces) of each word among the candidate positions: a word starts
    at a flagged piece or after a special token, and ends before the next start or special."""
    after_special = np.ones_like(is_candidate)
    after_special[1:] = ~is_candidate[:-1]
    starts = is_candidate & (after_special | (True if word_starts is None else word_starts))
    begins = np.flatnonzero(starts)
    cuts = np.append(np.flatnonzero(starts | ~is_candidate), len(is_candidate))
    ends = cuts[np.searchsorted(cuts, begins, side="right")]
    return begins, ends - begins


def _positions(begins: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """int32 positions of the words (begins[i], lengths[i]), word after word."""
    first_of_word = np.repeat(np.cumsum(lengths) - lengths, lengths)
    return (np.repeat(begins, lengths) + np.arange(lengths.sum()) - first_of_word).astype(np.int32)


def _whole_words(lengths: np.ndarray, budget: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of the words to mask, in ascending order: Google's whole-word masking visits the
    words in random order and takes each that still fits in the budget, until it is spent."""
    chosen, total, sizes = [], 0, lengths.tolist()
    for w in rng.permutation(len(sizes)).tolist():
        if total >= budget:
            break
        if total + sizes[w] <= budget:
            chosen.append(w)
            total += sizes[w]
    return np.sort(np.asarray(chosen, np.int64))


def span_length_pmf(p: float, max_length: int) -> np.ndarray:
    """P(span length = 1..max_length): SpanBERT's geometric distribution, p (1 - p)^(l - 1),
    truncated at max_length and renormalised (its "clipped" Geo(0.2) at 10 has mean 3.8)."""
    pmf = p * (1 - p) ** np.arange(max_length)
    return pmf / pmf.sum()


def sample_span_lengths(rng: np.random.Generator, size: int, p: float, max_length: int) -> np.ndarray:
    """`size` span lengths (int64) drawn from `span_length_pmf(p, max_length)`."""
    cdf = np.cumsum(span_length_pmf(p, max_length))
    return 1 + np.minimum(np.searchsorted(cdf, rng.random(size), side="right"), max_length - 1)


def _spans(begins: np.ndarray, lengths: np.ndarray, budget: int, rng: np.random.Generator,
           p: float, max_length: int) -> list[list[int]]:
    """SpanBERT's span masking over words: list of spans, each the indices of the words it masks.

    Until the budget (in pieces) is spent: draw a length l (`span_length_pmf`), an anchor piece
    uniformly among the pieces not masked yet, and mask l whole words from the start of the
    anchor's word (SpanBERT). A span stops early at a special token and before a word that would
    overrun the budget (words are never cut); it runs on through words an earlier span masked.
    Only anchors whose word still fits are drawn, so the loop ends when no word fits.
    """
    masked = np.zeros(len(lengths), bool)
    # Word w + 1 continues word w's run when nothing (no special token) lies between them.
    joined = (begins[1:] == begins[:-1] + lengths[:-1]).tolist() + [False]
    sizes = lengths.tolist()
    # Every span masks a piece or more, so `budget` spans at most: their numbers drawn at once.
    span_lengths = sample_span_lengths(rng, budget, p, max_length).tolist()
    anchors = rng.random(budget).tolist()
    spans, total = [], 0
    for span_length, anchor in zip(span_lengths, anchors):
        # The anchor piece, uniform over the pieces of the unmasked words that still fit.
        weight = np.cumsum(lengths * (~masked & (lengths <= budget - total)))
        if not weight[-1]:
            break
        w = int(np.searchsorted(weight, anchor * weight[-1], side="right"))
        words = [w]
        masked[w], total = True, total + sizes[w]
        for _ in range(span_length - 1):
            if not joined[w]:
                break
            w += 1
            if not masked[w]:
                if total + sizes[w] > budget:
                    break
                words.append(w)
                masked[w], total = True, total + sizes[w]
        spans.append(words)
    return spans


@dataclasses.dataclass(frozen=True)
class ExampleConfig:
    """Static shapes and ids `make_example` needs, and the objectives (see the module docstring)."""

    max_seq_len: int
    max_predictions: int
    mask_prob: float
    vocab_size: int
    pad_id: int
    mask_id: int
    special_ids: tuple[int, ...]
    masking: str = "token"
    span_p: float = 0.2
    max_span_length: int = 10
    sentence_task: str = "nsp"

    def __post_init__(self):
        check_choice("data.masking", self.masking, MASKING)
        check_choice("data.sentence_task", self.sentence_task, SENTENCE_TASKS)

    @classmethod
    def from_config(cls, cfg_data, tokenizer) -> ExampleConfig:
        return cls(
            max_seq_len=cfg_data.max_seq_len,
            max_predictions=cfg_data.max_predictions,
            mask_prob=cfg_data.mask_prob,
            vocab_size=tokenizer.vocab_size,
            pad_id=tokenizer.pad_id,
            mask_id=tokenizer.mask_id,
            special_ids=tuple(tokenizer.special_ids),
            masking=cfg_data.get("masking", "token"),
            span_p=cfg_data.get("span_length_p", 0.2),
            max_span_length=cfg_data.get("max_span_length", 10),
            sentence_task=cfg_data.get("sentence_task", "nsp"),
        )


def make_example(
    index: int, instances: Instances, rng: np.random.Generator, cfg: ExampleConfig
) -> dict[str, np.ndarray]:
    """Masked, padded model input for instance `index`; shapes L = cfg.max_seq_len, P = cfg.max_predictions:

    input_ids int32 [L], token_type_ids int32 [L] (1 on B [SEP]), attention_mask int32 [L],
    masked_lm_positions int32 [P], masked_lm_ids int32 [P], masked_lm_weights float32 [P],
    with sentence_task nsp or both: next_sentence_labels int32 [] (0 IsNext, 1 NotNext),
    with sop or both: sentence_order_labels int32 [] (1 swapped) and sentence_order_weights
    float32 [] (0 where B comes from another document).
    """
    row = _make_row([index], instances, rng, cfg, slots=1)
    keys = ("input_ids", "token_type_ids", "attention_mask", "masked_lm_positions",
            "masked_lm_ids", "masked_lm_weights")
    per_instance = [k for k in ("next_sentence_labels", "sentence_order_labels",
                                "sentence_order_weights") if k in row]
    return {**{k: row[k] for k in keys}, **{k: row[k][0] for k in per_instance}}


def make_packed_example(
    row: int, rows: PackedRows, instances: Instances, rng: np.random.Generator, cfg: ExampleConfig
) -> dict[str, np.ndarray]:
    """Model input for packed row `row`: its instances one after the other, masked as one sequence
    (the same 15% of the row's text and the same P = cfg.max_predictions as `make_example`, so the
    masked-LM head costs no more per row). K = rows.max_per_row:

    input_ids, token_type_ids int32 [L] as in make_example; attention_mask int32 [L] = the
    instance's number in the row (1, 2, ...; 0 = padding) and position_ids int32 [L] (0, 1, ... per
    instance), which keep attention and positions within each instance (see BertEncoder);
    masked_lm_* [P] index the row; cls_positions int32 [K] (each instance's [CLS]),
    next_sentence_labels int32 [K] and next_sentence_weights float32 [K] (0 on empty slots), or
    with sop, sentence_order_labels int32 [K] and sentence_order_weights float32 [K] (both with
    both).
    """
    return _make_row(rows.row(row), instances, rng, cfg, slots=rows.max_per_row)


def _make_row(
    indices, instances: Instances, rng: np.random.Generator, cfg: ExampleConfig, slots: int
) -> dict[str, np.ndarray]:
    L = cfg.max_seq_len
    nsp, sop = cfg.sentence_task in ("nsp", "both"), cfg.sentence_task in ("sop", "both")
    if sop and instances.sentence_order_labels is None:
        raise ValueError(f"data.sentence_task={cfg.sentence_task!r} needs instances built with "
                         "it (create_instances(sentence_task=...))")
    # Spans count words where the instances know them, else pieces; whole words need them.
    by_words = cfg.masking != "token" and instances.word_starts is not None
    if cfg.masking == "whole_word" and not by_words:
        raise ValueError("data.masking='whole_word' needs instances with word boundaries "
                         "(create_instances(segment=...))")
    out = {k: np.zeros(L, np.int32)
           for k in ("input_ids", "token_type_ids", "attention_mask", "position_ids")}
    out["input_ids"][:] = cfg.pad_id
    out["cls_positions"] = np.zeros(slots, np.int32)
    if nsp:
        out["next_sentence_labels"] = np.zeros(slots, np.int32)
        out["next_sentence_weights"] = np.zeros(slots, np.float32)
    if sop:
        out["sentence_order_labels"] = np.zeros(slots, np.int32)
        out["sentence_order_weights"] = np.zeros(slots, np.float32)
    word_starts = np.ones(L, bool) if by_words else None
    start = 0
    for slot, index in enumerate(indices):
        tokens, b_start, label = instances.instance(index)
        n = len(tokens)
        if start + n > L:
            raise ValueError(
                f"instance {index} has {n} tokens, more than the {L - start} left of "
                f"max_seq_len={L}; build the instances with the same max_seq_len"
            )
        out["input_ids"][start : start + n] = tokens
        out["token_type_ids"][start + b_start : start + n] = 1
        out["attention_mask"][start : start + n] = slot + 1
        out["position_ids"][start : start + n] = np.arange(n)
        out["cls_positions"][slot] = start
        if nsp:
            out["next_sentence_labels"][slot] = label
            out["next_sentence_weights"][slot] = 1.0
        if sop:
            order = int(instances.sentence_order_labels[index])
            out["sentence_order_labels"][slot] = max(order, 0)
            out["sentence_order_weights"][slot] = float(order >= 0)
        if by_words:
            first = instances.offsets[index]
            word_starts[start : start + n] = instances.word_starts[first : first + n]
        start += n
    (
        out["input_ids"][:start],
        out["masked_lm_positions"],
        out["masked_lm_ids"],
        out["masked_lm_weights"],
    ) = mask_instance(
        out["input_ids"][:start],
        rng,
        vocab_size=cfg.vocab_size,
        mask_id=cfg.mask_id,
        special_ids=cfg.special_ids,
        max_predictions=cfg.max_predictions,
        mask_prob=cfg.mask_prob,
        masking=cfg.masking,
        word_starts=None if word_starts is None else word_starts[:start],
        span_p=cfg.span_p,
        max_span_length=cfg.max_span_length,
    )
    return out

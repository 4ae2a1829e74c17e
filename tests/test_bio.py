"""Tests of nlp_jax.data.bio: chunking tags into entities, token and piece tags, entities back.

The expected entities are what seqeval 1.2.2 (default mode) gives on the same inputs, written out
by hand. Note seqeval's get_entities reports inclusive ends; bio_entities' ends are exclusive.
"""
import pytest

from nlp_jax.data import bio
from nlp_jax.data.bio import bio_entities
from nlp_jax.data.sources import NER_LABELS

# ------------------------------------------------------------------------------------------------
# bio_entities


@pytest.mark.parametrize("tags, expected", [
    (["B-PER", "I-PER", "O", "B-LOC"], {("PER", 0, 2), ("LOC", 3, 4)}),
    # I- without B-, at the start and after O: starts an entity (conlleval), is not dropped.
    (["I-PER", "I-PER", "O"], {("PER", 0, 2)}),
    (["B-PER", "O", "I-PER"], {("PER", 0, 1), ("PER", 2, 3)}),
    # Type switch inside a span: I-LOC after PER closes PER and opens LOC.
    (["B-PER", "I-LOC", "I-LOC"], {("PER", 0, 1), ("LOC", 1, 3)}),
    (["I-LOC", "I-PER", "B-PER", "I-PER"], {("LOC", 0, 1), ("PER", 1, 2), ("PER", 2, 4)}),
    # Entity running to the end of the sentence.
    (["O", "B-LOC", "I-LOC"], {("LOC", 1, 3)}),
    (["O", "O", "B-ORG"], {("ORG", 2, 3)}),
    # Adjacent B-B of one type: two entities.
    (["B-ORG", "B-ORG", "I-ORG"], {("ORG", 0, 1), ("ORG", 1, 3)}),
    (["O", "O"], set()),
    ([], set()),
])
def test_bio_entities(tags, expected):
    assert bio_entities(tags) == expected


@pytest.mark.parametrize("tag", ["B", "X-PER", "S-PER", "B-", "o"])
def test_bio_entities_rejects_non_iob2_tags(tag):
    with pytest.raises(ValueError, match="IOB2"):
        bio_entities(["O", tag])


# ------------------------------------------------------------------------------------------------
# Token, piece and character tags


def test_token_tags():
    assert bio.token_tags("江泽民", "B-PER") == ["B-PER", "I-PER", "I-PER"]
    assert bio.token_tags("北京", "I-LOC") == ["I-LOC", "I-LOC"]
    assert bio.token_tags("说", "O") == ["O"]


def test_piece_labels_rules():
    names = NER_LABELS
    tags = [0, 5, 6, 6, 0]  # "x江泽民y"
    # A piece starting at O takes the entity start: the next piece inside the entity becomes B-PER.
    assert bio.piece_labels([(0, 2), (2, 4), (4, 5)], tags, names) == [0, 5, 0]
    assert bio.piece_labels([(0, 1), (1, 3), (3, 4), (4, 4), (4, 5)], tags, names) == [
        0, 5, 6, 0, 0]


def test_entities_from_pieces_and_back_to_char_tags():
    text = "x江泽民在北京"
    spans = [(0, 1), (1, 3), (3, 4), (4, 5), (5, 7)]
    found = bio.entities_from_pieces(["O", "B-PER", "I-PER", "O", "B-LOC"], spans, text)
    assert found == [{"text": "江泽民", "type": "PER", "start": 1, "end": 4},
                     {"text": "北京", "type": "LOC", "start": 5, "end": 7}]
    tags = bio.char_tags(found, len(text))
    assert tags == ["O", "B-PER", "I-PER", "I-PER", "O", "B-LOC", "I-LOC"]
    assert bio_entities(tags) == {("PER", 1, 4), ("LOC", 5, 7)}

"""The BIO (IOB2) tag scheme, in one place: tags <-> entities, at characters and at pieces.

Token-classification examples carry one tag per character ("O", "B-<type>", "I-<type>").
`token_tags` spreads a file's token tag over the token's characters, `piece_labels` gives each
tokenizer piece a tag, `entities_from_pieces` reads predicted piece tags back as character spans,
and `char_tags` writes entities as character tags again, so that predictions are scored against
the gold tags character by character.

`bio_entities` chunks tags as seqeval's default (non-strict, "conlleval") mode does, so entity
scores (`metrics.entity_report`) are comparable with published ones.
"""

from __future__ import annotations

from collections.abc import Sequence

Entity = tuple[str, int, int]  # (type, start, end exclusive)


def _split_tag(tag: str) -> tuple[str, str]:
    """Splits "B-PER" into ("B", "PER"), "O" into ("O", ""). Other schemes (IOBES) are rejected
    rather than misread."""
    if tag == "O":
        return "O", ""
    prefix, sep, entity_type = tag.partition("-")
    if not sep or prefix not in ("B", "I") or not entity_type:
        raise ValueError(f"not an IOB2 tag (O, B-<type>, I-<type>): {tag!r}")
    return prefix, entity_type


def bio_entities(tags: Sequence[str]) -> set[Entity]:
    """Entities (type, start, end exclusive) of one sentence's IOB2 tags, chunked like seqeval's
    default mode (conlleval).

    Lenient on ill-formed sequences, as conlleval is, rather than dropping tokens: an I-X that does
    not continue an X entity (after O, at the start, or after a different type) starts a new entity;
    B-X always starts a new one, so "B-X B-X" is two entities.
    """
    entities: set[Entity] = set()
    start, current = 0, None  # current: type of the open entity, None outside one
    for i, tag in enumerate(tags):
        prefix, entity_type = _split_tag(tag)
        continues = prefix == "I" and entity_type == current
        if current is not None and not continues:
            entities.add((current, start, i))
            current = None
        if prefix != "O" and not continues:
            start, current = i, entity_type
    if current is not None:  # an entity running to the end of the sentence
        entities.add((current, start, len(tags)))
    return entities


def token_tags(token: str, tag: str) -> list[str]:
    """A multi-character token's tag spread over its characters: B-X, I-X, I-X..."""
    if tag.startswith("B-"):
        return [tag] + ["I-" + tag[2:]] * (len(token) - 1)
    return [tag] * len(token)


def piece_labels(spans, tags: Sequence[int], label_names: Sequence[str]) -> list[int]:
    """Tag of each piece: that of its first character, except that the first piece starting inside
    an entity is B-X even when it starts past the entity's first character (a piece that starts
    before the entity took it); pieces covering no character are "O"."""
    label_id = {name: i for i, name in enumerate(label_names)}
    # entity_start[c] = index of the first character of the entity holding c (-1 outside).
    entity_start, start, prev = [], -1, "O"
    for c, t in enumerate(tags):
        name = label_names[t]
        if name.startswith("B-") or (name.startswith("I-") and prev[2:] != name[2:]):
            start = c
        elif not name.startswith("I-"):
            start = -1
        entity_start.append(start)
        prev = name
    labels, labeled_entities = [], set()
    for s, e in spans:
        if s >= e or entity_start[s] < 0:
            labels.append(label_id.get("O", 0) if s >= e else tags[s])
            continue
        entity = label_names[tags[s]][2:]
        first = entity_start[s] not in labeled_entities
        labeled_entities.add(entity_start[s])
        labels.append(label_id.get(("B-" if first else "I-") + entity, tags[s]))
    return labels


def entities_from_pieces(tags: Sequence[str], spans, text: str) -> list[dict]:
    """Piece-level BIO tags + their character spans -> entities with text, type, start, end."""
    result = []
    for kind, start, end in sorted(bio_entities(list(tags)), key=lambda e: e[1]):
        s, e = int(spans[start][0]), int(spans[end - 1][1])
        result.append({"text": text[s:e], "type": kind, "start": s, "end": e})
    return result


def char_tags(entities: list[dict], length: int) -> list[str]:
    """BIO tags of `length` characters holding `entities` (as `entities_from_pieces` returns)."""
    tags = ["O"] * length
    for ent in entities:
        tags[ent["start"]] = "B-" + ent["type"]
        for i in range(ent["start"] + 1, ent["end"]):
            tags[i] = "I-" + ent["type"]
    return tags

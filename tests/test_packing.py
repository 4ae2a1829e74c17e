"""Tests of nlp_jax.data.packing's fine-tuning rows (pretraining rows: test_data.py)."""

import numpy as np
import pytest

from nlp_jax.data import packing


@pytest.mark.parametrize("token_level", [False, True])
def test_pack_features_keeps_every_example_once_in_few_rows(token_level):
    rng = np.random.default_rng(0)
    n, L = 200, 32
    lengths = rng.integers(3, L + 1, n)
    mask = (np.arange(L)[None] < lengths[:, None]).astype(np.int32)
    f = {"input_ids": np.where(mask, rng.integers(5, 1000, (n, L)), 0).astype(np.int32),
         "token_type_ids": (mask * (np.arange(L)[None] >= lengths[:, None] // 2)).astype(np.int32),
         "attention_mask": mask}
    if token_level:
        f["labels"] = (rng.integers(0, 5, (n, L)) * mask).astype(np.int32)
        f["label_weights"] = mask.astype(np.float32)
        f["token_spans"] = np.zeros((n, L, 2), np.int32)
    else:
        f["labels"] = rng.integers(0, 3, n).astype(np.int32)
    p = packing.pack_features(f, pad_id=0, max_per_row=4)
    seen = []
    for r in range(len(p["input_ids"])):
        seg = p["attention_mask"][r]
        assert 1 <= seg.max() <= 4 and (np.diff(seg[seg > 0]) >= 0).all()  # contiguous examples
        for slot in range(1, seg.max() + 1):
            where = np.flatnonzero(seg == slot)
            ids = p["input_ids"][r, where]
            # Find the example by its tokens; positions restart at 0; types travel along.
            (i,) = [i for i in range(n) if lengths[i] == len(where)
                    and (f["input_ids"][i, :len(where)] == ids).all()]
            seen.append(i)
            assert p["position_ids"][r, where].tolist() == list(range(len(where)))
            np.testing.assert_array_equal(p["token_type_ids"][r, where], f["token_type_ids"][i, :len(where)])
            if token_level:
                np.testing.assert_array_equal(p["labels"][r, where], f["labels"][i, :len(where)])
                np.testing.assert_array_equal(p["label_weights"][r, where], 1.0)
            else:
                assert p["cls_positions"][r, slot - 1] == where[0]
                assert p["labels"][r, slot - 1] == f["labels"][i]
                assert p["label_weights"][r, slot - 1] == 1.0
        if not token_level:
            assert p["label_weights"][r, seg.max():].sum() == 0       # empty slots weigh nothing
    assert sorted(seen) == list(range(n))
    # Best-fit decreasing leaves little room: close to the token count's lower bound.
    assert len(p["input_ids"]) <= 1.1 * np.ceil(lengths.sum() / L) + 1
    assert "token_spans" not in p

"""Tests of nlp_jax.data.stream's task batches: coverage, order, sharding, resuming.

The pretraining stream, built on the same `batch_dataset`, is tested with its data in
test_data.py."""

import numpy as np
import pytest

from nlp_jax.data import stream


def fake_features(n=23):
    return {"input_ids": np.arange(n * 3, dtype=np.int32).reshape(n, 3),
            "labels": np.arange(n, dtype=np.int32),
            "label_weights": np.ones((n, 3), np.float32)}


@pytest.mark.parametrize("process_count", [1, 2])
def test_eval_batches_cover_once(process_count):
    f = fake_features(23)
    seen, total_weight = [], 0.0
    per_process = [stream.eval_batches(f, 8, p, process_count) for p in range(process_count)]
    assert len({len(b) for b in per_process}) == 1 and len(per_process[0]) == 3
    for k in range(3):
        for p in range(process_count):
            b = per_process[p][k]
            assert b["labels"].shape == (8 // process_count,)
            assert b["example_weights"].dtype == np.float32
            seen += b["labels"][b["example_weights"] > 0].tolist()
            total_weight += b["example_weights"].sum()
            assert (b["label_weights"][b["example_weights"] == 0] == 0).all()
    assert seen == list(range(23)) and total_weight == 23


def test_train_order_independent_of_process_count_and_resumable():
    f = fake_features(23)
    one = stream.task_batches(f, batch_size=4, seed=3, shuffle=True, drop_remainder=True)
    global_order = [next(one)["labels"].tolist() for _ in range(12)]  # > 2 epochs
    flat = [x for b in global_order for x in b]
    assert sorted(flat[:23]) != flat[:23] and sorted(flat[:23]) == list(range(23))  # shuffled
    assert flat[23:46] != flat[:23] and sorted(flat[23:46]) == list(range(23))  # reshuffled
    two = [stream.task_batches(f, batch_size=4, seed=3, shuffle=True, drop_remainder=True,
                               process_index=p, process_count=2) for p in range(2)]
    for k in range(12):
        assert next(two[0])["labels"].tolist() + next(two[1])["labels"].tolist() == global_order[k]
    it = stream.task_batches(f, batch_size=4, seed=3, shuffle=True, drop_remainder=True)
    for _ in range(5):
        next(it)
    state = it.get_state()
    it2 = stream.task_batches(f, batch_size=4, seed=3, shuffle=True, drop_remainder=True)
    it2.set_state(state)
    assert [next(it2)["labels"].tolist() for _ in range(3)] == global_order[5:8]
    other_seed = stream.task_batches(f, batch_size=4, seed=4, shuffle=True, drop_remainder=True)
    assert [next(other_seed)["labels"].tolist() for _ in range(3)] != global_order[:3]
    finite = stream.task_batches(f, batch_size=4, seed=3, shuffle=True, drop_remainder=True,
                                 num_epochs=1)
    assert len(list(finite)) == 5
    with pytest.raises(ValueError, match="not divisible by process_count=3"):
        stream.task_batches(f, batch_size=4, seed=0, shuffle=True, drop_remainder=True,
                            process_count=3)


def test_task_order_is_pinned():
    """The order refactors must keep: every seed's training order, and where a checkpointed
    iterator state resumes, depend on it (values from the stream as first written)."""
    f = fake_features(23)
    it = stream.task_batches(f, batch_size=4, seed=3, shuffle=True, drop_remainder=True)
    assert [next(it)["labels"].tolist() for _ in range(3)] == [
        [19, 3, 14, 17], [4, 5, 10, 7], [21, 15, 6, 1]]
    assert it.get_state() == {"next_index": 3}
    # Two finite epochs, padded to whole global batches of 4, as process 1 of 2 reads them.
    batches = list(stream.task_batches(f, batch_size=4, seed=3, shuffle=True, drop_remainder=False,
                                       num_epochs=2, process_index=1, process_count=2))
    assert [b["labels"].tolist() for b in batches] == [
        [14, 17], [10, 7], [6, 1], [12, 18], [13, 0], [2, 5], [12, 21], [0, 19], [11, 20], [4, 8],
        [14, 1], [0, 0]]
    assert [b["example_weights"].tolist() for b in batches] == [[1.0, 1.0]] * 11 + [[0.0, 0.0]]

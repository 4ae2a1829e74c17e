"""Losses against hand computation, and the registry contract."""
import numpy as np
import pytest

from nlp_jax import losses


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_mlm_loss_is_weighted_mean_cross_entropy_over_masked_positions():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 3, 7)).astype(np.float32)
    ids = np.array([[1, 2, 0], [6, 0, 0]], np.int32)
    weights = np.array([[1, 1, 0], [1, 0, 0]], np.float32)   # 3 real predictions, 3 padding
    loss, metrics = losses.get("mlm")({"masked_lm_logits": logits},
                                      {"masked_lm_ids": ids, "masked_lm_weights": weights})
    logp = _log_softmax(logits.astype(np.float64))
    expected = -(logp[0, 0, 1] + logp[0, 1, 2] + logp[1, 0, 6]) / 3
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    hits = (logits[0, 0].argmax() == 1) + (logits[0, 1].argmax() == 2) + (logits[1, 0].argmax() == 6)
    np.testing.assert_allclose(float(metrics["masked_lm_accuracy"]), hits / 3, rtol=1e-6)


def test_nsp_loss_is_mean_cross_entropy():
    logits = np.array([[2.0, -1.0], [0.5, 0.5], [-3.0, 1.0]], np.float32)
    labels = np.array([0, 1, 0], np.int32)
    loss, metrics = losses.get("nsp")({"next_sentence_logits": logits},
                                      {"next_sentence_labels": labels})
    logp = _log_softmax(logits.astype(np.float64))
    np.testing.assert_allclose(float(loss), -np.mean(logp[[0, 1, 2], labels]), rtol=1e-6)
    np.testing.assert_allclose(float(metrics["next_sentence_accuracy"]), 1 / 3, rtol=1e-6)


def test_nsp_loss_of_packed_rows_is_mean_over_real_instances():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 3, 2)).astype(np.float32)   # 2 rows of up to 3 instances
    labels = np.array([[0, 1, 0], [1, 0, 1]], np.int32)
    weights = np.array([[1, 1, 0], [1, 0, 0]], np.float32)   # 3 real, 3 empty slots
    loss, metrics = losses.get("nsp")({"next_sentence_logits": logits},
                                      {"next_sentence_labels": labels, "next_sentence_weights": weights})
    logp = _log_softmax(logits.astype(np.float64))
    np.testing.assert_allclose(float(loss), -(logp[0, 0, 0] + logp[0, 1, 1] + logp[1, 0, 1]) / 3,
                               rtol=1e-6)
    hits = (logits[0, 0].argmax() == 0) + (logits[0, 1].argmax() == 1) + (logits[1, 0].argmax() == 1)
    np.testing.assert_allclose(float(metrics["next_sentence_accuracy"]), hits / 3, rtol=1e-6)


def test_combined_loss_is_weighted_sum_and_reports_each_part():
    outputs = {"masked_lm_logits": np.zeros((1, 1, 4), np.float32),
               "next_sentence_logits": np.zeros((1, 2), np.float32)}
    batch = {"masked_lm_ids": np.zeros((1, 1), np.int32),
             "masked_lm_weights": np.ones((1, 1), np.float32),
             "next_sentence_labels": np.zeros((1,), np.int32)}
    total, metrics = losses.combined_loss({"mlm": 1.0, "nsp": 0.5})(outputs, batch)
    np.testing.assert_allclose(float(metrics["mlm_loss"]), np.log(4), rtol=1e-6)
    np.testing.assert_allclose(float(metrics["nsp_loss"]), np.log(2), rtol=1e-6)
    np.testing.assert_allclose(float(total), np.log(4) + 0.5 * np.log(2), rtol=1e-6)
    assert float(metrics["loss"]) == float(total)


def test_unknown_loss_names_the_registered_ones():
    with pytest.raises(KeyError, match="registered losses are .*'mlm'"):
        losses.combined_loss({"no_such_loss": 1.0})


def test_registering_a_name_twice_is_refused():
    with pytest.raises(ValueError, match="registered twice"):
        losses.register("mlm")(lambda outputs, batch: (0.0, {}))


def test_classification_loss_with_label_smoothing_and_padding_rows():
    logits = np.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0], [5.0, 5.0, 5.0]], np.float32)
    labels = np.array([0, 2, 1], np.int32)
    weights = np.array([1.0, 1.0, 0.0], np.float32)   # the last row pads an eval batch
    fn = losses.combined_loss({"classification": 1.0}, {"classification": {"label_smoothing": 0.1}})
    loss, metrics = fn({"logits": logits}, {"labels": labels, "example_weights": weights})
    logp = _log_softmax(logits.astype(np.float64))
    target = np.full((3, 3), 0.1 / 3)
    target[np.arange(3), labels] += 0.9
    per_row = -(target * logp).sum(-1)
    np.testing.assert_allclose(float(loss), per_row[:2].mean(), rtol=1e-5)
    np.testing.assert_allclose(float(metrics["accuracy"]), 0.5, rtol=1e-6)


def test_token_classification_loss_ignores_special_and_padding_tokens():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(1, 4, 3)).astype(np.float32)
    labels = np.array([[0, 2, 1, 0]], np.int32)
    label_weights = np.array([[0, 1, 1, 0]], np.float32)  # [CLS] x x [SEP]
    loss, _ = losses.get("token_classification")({"logits": logits},
                                                 {"labels": labels, "label_weights": label_weights})
    logp = _log_softmax(logits.astype(np.float64))
    np.testing.assert_allclose(float(loss), -(logp[0, 1, 2] + logp[0, 2, 1]) / 2, rtol=1e-5)


def test_classification_loss_of_packed_rows_equals_one_example_per_row():
    from nlp_jax.losses.tasks import classification_loss
    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=(5, 3)).astype(np.float32), np.array([0, 2, 1, 1, 0], np.int32)
    flat = classification_loss({"logits": logits}, {"labels": labels,
                                                    "example_weights": np.ones(5, np.float32)})
    # The same five examples as two packed rows of up to three: slots 3 of row 1 empty (weight 0).
    slots = np.array([[0, 1, 2], [3, 4, 0]])
    packed = classification_loss(
        {"logits": logits[slots]},
        {"labels": labels[slots], "label_weights": np.array([[1, 1, 1], [1, 1, 0]], np.float32),
         "example_weights": np.ones(2, np.float32)})
    np.testing.assert_allclose(packed[0], flat[0], rtol=1e-6)
    np.testing.assert_allclose(packed[1]["accuracy"], flat[1]["accuracy"], rtol=1e-6)

"""Precision and recall (Kynkaanniemi et al. 2019) in the book's classifier features.

They split FID's one number into "do the samples look real" (precision) and "do they cover the data"
(recall): identical sets score 1 and 1, a set collapsed to one digit per class keeps its precision and
loses its recall, and sets far apart score 0.
"""

from __future__ import annotations

import pytest
import torch

from diffusion_edu.data import load_embedded_mnist
from diffusion_edu.metrics import classifier_outputs, precision_recall, precision_recall_from_features


def test_identical_sets_score_one_and_one():
    f = torch.randn(200, 16, generator=torch.Generator().manual_seed(0))
    assert precision_recall_from_features(f, f.clone()) == {"precision": 1.0, "recall": 1.0}


def test_disjoint_far_apart_sets_score_zero():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(100, 8, generator=g), torch.randn(120, 8, generator=g) + 100.0
    assert precision_recall_from_features(a, b) == {"precision": 0.0, "recall": 0.0}


def test_a_set_collapsed_to_one_digit_per_class_keeps_precision_and_loses_recall():
    """Real digits: 500 random training digits score high on both against the held-out digits; the same
    count made of 10 typical digits (per class, the one nearest the class's mean feature) repeated, a
    sampler collapsed onto each class's mode, stays precise but covers almost nothing."""
    train = load_embedded_mnist("train")
    held = load_embedded_mnist("heldout").tensors()[0]
    gen = torch.Generator().manual_seed(2)
    real = train.batch(torch.randperm(len(train), generator=gen)[:500])[0]
    f_train, _ = classifier_outputs(train.tensors()[0])
    one_each = []
    for c in range(10):
        idx = torch.nonzero(train.labels == c)[:, 0]
        one_each.append(idx[(f_train[idx] - f_train[idx].mean(0)).norm(dim=1).argmin()])
    collapsed = train.batch(torch.stack(one_each).repeat(50))[0]
    f_ref, _ = classifier_outputs(held)
    full = precision_recall_from_features(classifier_outputs(real)[0], f_ref)
    coll = precision_recall_from_features(classifier_outputs(collapsed)[0], f_ref)
    assert full["precision"] > 0.8 and full["recall"] > 0.8, full
    assert coll["precision"] >= 0.9 and coll["recall"] < 0.05, coll
    assert precision_recall(collapsed, held) == {**coll, "k": 3}  # the image path: the same features as FID


def test_more_neighbours_widen_the_manifold():
    """Radii grow with k, so precision and recall can only grow."""
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(150, 8, generator=g), torch.randn(150, 8, generator=g) + 0.7
    p3, p10 = precision_recall_from_features(a, b, 3), precision_recall_from_features(a, b, 10)
    assert p10["precision"] >= p3["precision"] and p10["recall"] >= p3["recall"]
    assert 0.0 < p3["precision"] < 1.0 and 0.0 < p3["recall"] < 1.0


def test_bad_input_is_named():
    f = torch.randn(10, 4)
    with pytest.raises(ValueError, match="k must be an int >= 1"):
        precision_recall_from_features(f, f, k=0)
    with pytest.raises(ValueError, match="more than k images"):
        precision_recall_from_features(f[:3], f, k=3)
    with pytest.raises(ValueError, match="same d"):
        precision_recall_from_features(f, torch.randn(10, 5))

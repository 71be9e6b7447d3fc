from __future__ import annotations

import pytest
import torch

from fsar_metric import create_metric, to_flat, to_way_major


def test_flat_support_with_shuffled_labels_groups_by_label_in_original_order():
    features = torch.arange(6.0)[:, None, None].expand(6, 2, 3)  # video i is filled with i
    labels = torch.tensor([2, 0, 1, 0, 1, 2])
    grouped = to_way_major(features, labels)  # [3, 2, 2, 3]
    assert grouped.shape == (3, 2, 2, 3)
    assert grouped[:, :, 0, 0].tolist() == [[1.0, 3.0], [2.0, 4.0], [0.0, 5.0]]


def test_round_trip_through_flat_layout():
    support = torch.randn(5, 3, 8, 4)
    flat, labels = to_flat(support)
    assert flat.shape == (15, 8, 4)
    assert labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]
    assert torch.equal(to_way_major(flat, labels), support)


def test_text_features_convert_too():
    text = torch.randn(6, 16)
    assert to_way_major(text, torch.tensor([1, 1, 0, 0, 2, 2])).shape == (3, 2, 16)


def test_metric_on_converted_public_layout_equals_way_major():
    support, query = torch.randn(5, 2, 8, 16), torch.randn(5, 8, 16)
    flat, labels = to_flat(support)
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(0))
    otam = create_metric("otam")
    torch.testing.assert_close(otam(to_way_major(flat[perm], labels[perm]), query), otam(support, query))


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (torch.tensor([0, 0, 1]), r"every class needs the same number of shots K; videos per label: \{0: 2, 1: 1\}"),
        (torch.tensor([0, 2, 0]), r"labels must cover 0..N-1 with no gaps, got the label set \[0, 2\]"),
        (torch.tensor([0, -1, 0]), r"labels must cover 0..N-1"),
        (torch.tensor([0.0, 1.0, 0.0]), "labels must be a 1-D integer tensor"),
        (torch.tensor([0, 1]), r"features \[3, 4\] and labels \[2\] disagree on N\*K"),
    ],
)
def test_bad_labels_are_refused_with_a_clear_message(labels, message):
    with pytest.raises(ValueError, match=message):
        to_way_major(torch.randn(3, 4), labels)


def test_empty_support_is_refused():
    with pytest.raises(ValueError, match="zero support videos"):
        to_way_major(torch.randn(0, 4), torch.tensor([], dtype=torch.long))

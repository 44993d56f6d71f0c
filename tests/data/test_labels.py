"""Label names, NIH label parsing, No Finding and similarity levels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cxrhash.data.labels import (
    CHEXPERT_PATHOLOGIES,
    NIH_PATHOLOGIES,
    PHANTOM_PATHOLOGIES,
    LabelError,
    add_no_finding,
    label_names,
    normalize_label,
    parse_finding_labels,
    relevance_labels,
    similarity_levels,
    with_no_finding,
    with_no_finding_np,
)


def test_name_lists_follow_torchxrayvision() -> None:
    assert len(NIH_PATHOLOGIES) == 14 and NIH_PATHOLOGIES == sorted(NIH_PATHOLOGIES)
    assert "Pleural_Thickening" in NIH_PATHOLOGIES and "Effusion" in NIH_PATHOLOGIES
    assert "Effusion" in CHEXPERT_PATHOLOGIES and "No Finding" not in CHEXPERT_PATHOLOGIES
    assert "Pleural Effusion" not in CHEXPERT_PATHOLOGIES
    assert set(PHANTOM_PATHOLOGIES) <= set(NIH_PATHOLOGIES)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Pleural Effusion", "Effusion"),
        ("pleural_thickening", "Pleural_Thickening"),
        ("Pleural Thickening", "Pleural_Thickening"),
        ("  CARDIOMEGALY ", "Cardiomegaly"),
        ("no finding", "No Finding"),
        ("lung_opacity", "Lung Opacity"),
        ("Something New", "Something New"),
    ],
)
def test_normalize_label(raw: str, expected: str) -> None:
    assert normalize_label(raw) == expected


def test_parse_finding_labels_multi_hot_in_given_order() -> None:
    out = parse_finding_labels("Mass|Effusion|Pleural_Thickening", NIH_PATHOLOGIES, "x")
    expected = np.zeros(14, dtype=np.float32)
    for name in ("Mass", "Effusion", "Pleural_Thickening"):
        expected[NIH_PATHOLOGIES.index(name)] = 1.0
    assert out.dtype == np.float32
    assert np.array_equal(out, expected)
    assert not parse_finding_labels("No Finding", NIH_PATHOLOGIES, "x").any()


def test_unknown_label_names_where_and_the_known_names() -> None:
    with pytest.raises(LabelError, match=r"labels.csv line 18.*'Hernia'.*Cardiomegaly"):
        parse_finding_labels("Mass|Hernia", PHANTOM_PATHOLOGIES, "labels.csv line 18")


def test_add_no_finding_counts_nan_as_not_positive() -> None:
    labels = np.array([[1, 0], [0, 0], [np.nan, 0], [np.nan, 1]], dtype=np.float32)
    out, names = add_no_finding(labels, ["A", "B"])
    assert names == ["A", "B", "No Finding"]
    assert np.array_equal(out[:, 2], [0, 1, 1, 0])
    assert np.array_equal(out[:, :2], labels, equal_nan=True)


def test_no_finding_column_marks_rows_without_positive_finding() -> None:
    nan = float("nan")
    lab = torch.tensor([[0.0, 0.0], [1.0, 0.0], [nan, 0.0], [nan, 1.0]])
    out = with_no_finding(lab, True)
    assert out.shape == (4, 3)
    assert out[:, 2].tolist() == [1.0, 0.0, 1.0, 0.0]  # NaN is not a positive finding
    assert torch.isnan(out[2, 0])  # unknown stays unknown for the BCE mask
    assert with_no_finding(lab, False) is lab
    assert label_names(["A", "B"], True) == ["A", "B", "No Finding"]


def test_the_numpy_and_tensor_no_finding_columns_agree() -> None:
    labels = np.array([[1, 0], [0, 0], [np.nan, 0], [np.nan, 1]], dtype=np.float32)
    out = with_no_finding_np(labels, True)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, with_no_finding(torch.from_numpy(labels), True).numpy())
    np.testing.assert_array_equal(out, add_no_finding(labels, ["A", "B"])[0])
    np.testing.assert_array_equal(with_no_finding_np(labels, False), labels)
    assert label_names(["A", "B"], False) == ["A", "B"]


def test_relevance_labels_treat_unknown_as_absent() -> None:
    rel = relevance_labels(np.array([[np.nan, 1.0, 0.0]]))
    assert rel.tolist() == [[0.0, 1.0, 0.0]]


def test_similarity_levels_match_set_intersections() -> None:
    rng = np.random.default_rng(1)
    a = rng.choice([0.0, 1.0, np.nan], size=(5, 6)).astype(np.float32)
    b = rng.choice([0.0, 1.0, np.nan], size=(4, 6)).astype(np.float32)
    got = similarity_levels(a, b)
    for i in range(5):
        for j in range(4):
            shared = {c for c in range(6) if a[i, c] == 1} & {c for c in range(6) if b[j, c] == 1}
            assert got[i, j] == len(shared)
    assert got.dtype == np.float32 and got.shape == (5, 4)

import numpy as np
import torch

from cxrhash.training.targets import label_names, relevance_labels, with_no_finding


def test_no_finding_column_marks_rows_without_positive_finding() -> None:
    nan = float("nan")
    lab = torch.tensor([[0.0, 0.0], [1.0, 0.0], [nan, 0.0], [nan, 1.0]])
    out = with_no_finding(lab, True)
    assert out.shape == (4, 3)
    assert out[:, 2].tolist() == [1.0, 0.0, 1.0, 0.0]  # NaN is not a positive finding
    assert torch.isnan(out[2, 0])  # unknown stays unknown for the BCE mask
    assert with_no_finding(lab, False) is lab
    assert label_names(["A", "B"], True) == ["A", "B", "No Finding"]


def test_relevance_labels_treat_unknown_as_absent() -> None:
    rel = relevance_labels(np.array([[np.nan, 1.0, 0.0]]))
    assert rel.tolist() == [[0.0, 1.0, 0.0]]

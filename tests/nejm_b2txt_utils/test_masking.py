"""Time masking and speckled channel masking (issue 23): what the config says is what gets masked."""

import pytest
import torch

from nejm_b2txt_utils.augmentation import speckle_mask, time_mask, time_mask_spans, transform_data


def test_time_mask_spans_counts_widths_and_bounds_on_a_fixed_seed():
    lens = torch.tensor([200, 150, 7, 0])
    spans = time_mask_spans(lens, 4, 10, torch.Generator().manual_seed(3))
    assert spans.shape == (4, 4, 2)
    starts, widths = spans[..., 0], spans[..., 1]
    assert widths[:2].min() >= 1 and widths[:2].max() <= 10
    assert (starts >= 0).all() and (starts + widths <= lens.unsqueeze(1)).all()
    assert (widths[3] == 0).all()  # an empty trial: nothing to mask
    many = time_mask_spans(torch.full((2000,), 500), 1, 10, torch.Generator().manual_seed(0))[..., 1]
    assert set(many.flatten().tolist()) == set(range(1, 11))  # widths uniform in 1..max_width
    assert abs(many.float().mean().item() - 5.5) < 0.2


def test_time_mask_zeroes_exactly_the_drawn_spans_across_all_channels():
    x = torch.randn(3, 120, 5) + 10.0  # no element is 0 before masking
    lens = torch.tensor([120, 90, 60])
    out = time_mask(x, lens, 3, 8, torch.Generator().manual_seed(11))
    spans = time_mask_spans(lens, 3, 8, torch.Generator().manual_seed(11))
    expected = torch.zeros(3, 120, dtype=torch.bool)
    for b in range(3):
        for start, width in spans[b].tolist():
            expected[b, start:start + width] = True
    zero_bins = (out == 0).all(dim=2)
    assert torch.equal(zero_bins, expected)
    assert ((out == 0).any(dim=2) == zero_bins).all()  # a masked bin is masked in every channel
    assert torch.equal(out[~expected], x[~expected])  # everything else untouched
    counts = expected.sum(dim=1)
    assert (counts >= 1).all() and (counts <= 3 * 8).all()
    assert (expected[1, 90:] == 0).all() and (expected[2, 60:] == 0).all()  # inside the valid bins


def test_speckle_mask_drops_the_configured_fraction():
    x = torch.ones(4, 200, 64)
    out = speckle_mask(x, 0.1, torch.Generator().manual_seed(0))
    dropped = (out == 0).float().mean().item()
    assert abs(dropped - 0.1) < 0.01
    assert set(out.unique().tolist()) == {0.0, 1.0}


def test_transform_data_masks_in_training_only_and_defaults_change_nothing():
    x = torch.randn(2, 100, 8) + 5.0
    lens = torch.tensor([100, 100])
    cfg = {"time_mask_count": 2, "time_mask_max_width": 5, "smooth_data": False}
    torch.manual_seed(0)
    train, _ = transform_data(x, lens, cfg, "train")
    zero_bins = (train == 0).all(dim=2).sum(dim=1)
    assert ((zero_bins >= 1) & (zero_bins <= 10)).all()
    val, _ = transform_data(x, lens, cfg, "val")
    assert torch.equal(val, x)
    plain, _ = transform_data(x, lens, {"smooth_data": False}, "train")  # the original's keys: no masking
    assert torch.equal(plain, x)


def test_bad_time_mask_settings_name_the_keys():
    with pytest.raises(ValueError, match="time_mask_max_width"):
        time_mask_spans(torch.tensor([10]), 2, 0)

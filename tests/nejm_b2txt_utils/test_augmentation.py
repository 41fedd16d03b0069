import numpy as np
import pytest
import torch

from nejm_b2txt_utils import augmentation as aug

SPEC_TAPS = [0.02763, 0.06628, 0.12383, 0.18017, 0.20416, 0.18017, 0.12383, 0.06628, 0.02763]
TRANSFORMS = {"white_noise_std": 1.0, "constant_offset_std": 0.2, "random_walk_std": 0.0, "random_walk_axis": -1,
              "static_gain_std": 0.0, "random_cut": 3, "smooth_kernel_size": 100, "smooth_data": True,
              "smooth_kernel_std": 2}


def test_kernel_is_the_nine_thresholded_taps():
    k = aug.gauss_kernel(2, 100)
    assert k.dtype == np.float32 and k.shape == (9,)
    np.testing.assert_allclose(k, SPEC_TAPS, atol=5e-6)
    assert abs(float(k.sum()) - 1.0) < 1e-6
    np.testing.assert_array_equal(k, k[::-1])


def test_same_and_valid_smoothing_lengths_and_alignment():
    x = torch.randn(2, 40, 5)
    same = aug.gauss_smooth(x, padding="same")
    valid = aug.gauss_smooth(x, padding="valid")
    assert same.shape == (2, 40, 5) and valid.shape == (2, 32, 5)
    # valid output j is centred on input bin j + 4, i.e. same output j + 4 away from the edges
    torch.testing.assert_close(valid, same[:, 4:36], rtol=1e-5, atol=1e-6)
    # matches a per-channel numpy convolution (zero padding for 'same')
    ref = np.convolve(x[1, :, 3].numpy(), aug.gauss_kernel(), mode="same")
    np.testing.assert_allclose(same[1, :, 3].numpy(), ref, rtol=1e-5, atol=1e-6)
    # a constant signal stays constant in the interior and is attenuated at zero-padded edges
    ones = aug.gauss_smooth(torch.ones(1, 20, 2))
    torch.testing.assert_close(ones[0, 4:16], torch.ones(12, 2))
    assert float(ones[0, 0, 0]) == pytest.approx(sum(SPEC_TAPS[4:]), abs=1e-4)
    with pytest.raises(ValueError, match="'same' or 'valid'"):
        aug.gauss_smooth(x, padding="full")


def test_bf16_input_on_cpu_smooths_without_dtype_clash():
    out = aug.gauss_smooth(torch.randn(1, 30, 4).to(torch.bfloat16), padding="valid")
    assert out.dtype == torch.bfloat16 and out.shape == (1, 22, 4)


def test_noise_offset_walk_and_gain_shapes_and_statistics():
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(8, 200, 64)
    noisy = aug.white_noise(x, 1.0, generator=g)
    assert (noisy != 0).all()  # padding included
    assert float(noisy.std()) == pytest.approx(1.0, abs=0.02)
    off = aug.constant_offset(x, 0.2, generator=g)
    assert torch.equal(off, off[:, :1].expand_as(off))  # constant over time
    assert float(off[:, 0].std()) == pytest.approx(0.2, abs=0.03)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    walk = aug.random_walk(x, 0.5, axis=-1, generator=g1)
    torch.testing.assert_close(walk, torch.cumsum(torch.randn(x.shape, generator=g2) * 0.5, dim=-1))
    g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    y = torch.randn(2, 10, 6)
    gained = aug.static_gain(y, 0.1, generator=g1)
    warp = torch.eye(6) + torch.randn((2, 6, 6), generator=g2) * 0.1
    torch.testing.assert_close(gained, y @ warp)
    torch.testing.assert_close(aug.static_gain(y, 0.0), y)


def test_random_cut_is_one_value_in_0_1_2_removed_from_the_start():
    x = torch.arange(2 * 10 * 1, dtype=torch.float32).reshape(2, 10, 1)
    lens = torch.tensor([10, 7])
    cuts = set()
    for s in range(60):
        out, new_lens, cut = aug.random_cut(x, lens, 3, rng=np.random.default_rng(s))
        cuts.add(cut)
        assert torch.equal(out, x[:, cut:]) and torch.equal(new_lens, lens - cut)
    assert cuts == {0, 1, 2}


def test_transform_data_applies_the_original_order():
    torch.manual_seed(5)
    np.random.seed(5)
    x = torch.randn(3, 50, 8)
    lens = torch.tensor([50, 40, 30])
    out, out_lens = aug.transform_data(x.clone(), lens, TRANSFORMS, "train")
    # replay: white noise [B,T,C], then offset [B,1,C] (torch RNG), then the cut (NumPy RNG), then 'same' smoothing
    torch.manual_seed(5)
    np.random.seed(5)
    x2 = torch.randn(3, 50, 8)
    x2 = x2 + torch.randn(3, 50, 8) * 1.0
    x2 = x2 + torch.randn(3, 1, 8) * 0.2
    cut = np.random.randint(0, 3)
    ref = aug.gauss_smooth(x2[:, cut:], padding="same")
    torch.testing.assert_close(out, ref)
    assert torch.equal(out_lens, lens - cut)
    val, val_lens = aug.transform_data(x, lens, TRANSFORMS, "val")
    torch.testing.assert_close(val, aug.gauss_smooth(x, padding="same"))
    assert torch.equal(val_lens, lens)
    valid, _ = aug.transform_data(x, lens, TRANSFORMS, "val", padding="valid")
    assert valid.shape[1] == 42

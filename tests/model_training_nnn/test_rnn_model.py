"""TripleGRUDecoder (spec nnn §2, §7): shapes and dtypes, GRL maths and sign, residual, gathers, size."""

import pytest
import torch

from model_training.rnn_model import GRUDecoder
from model_training_nnn.rnn_model import TripleGRUDecoder, gradient_reverse

# quick_test_xla's tiny model: 8 features, patches 2/1, 16 units, 3 days (noise hidden = 2 * 8 = 16)
TINY = dict(neural_dim=8, n_units=16, n_days=3, n_classes=41, rnn_dropout=0.0, input_dropout=0.0, patch_size=2,
            patch_stride=1)
B, T = 3, 12
P = (T - 2) // 1 + 1


def tiny_model(**kw):
    torch.manual_seed(0)
    return TripleGRUDecoder(**{**TINY, **kw})


def inputs(dtype=torch.float32):
    g = torch.Generator().manual_seed(1)
    return torch.randn(B, T, 8, generator=g).to(dtype), torch.tensor([2, 0, 2])


@pytest.mark.parametrize("precision", ["fp32", "bf16_autocast", "bf16_cast"])
def test_shapes_and_dtypes_in_both_modes(precision):
    model = tiny_model().eval()
    x, day = inputs()
    if precision == "bf16_cast":
        model, x = model.to(torch.bfloat16), x.to(torch.bfloat16)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16_autocast"):
        clean, noisy, noise = model(x, day, mode="full", grl_lambda=0.5)
        logits = model(x, day)  # mode='inference' by default: the GRUDecoder call
        logits2, (noise_state, clean_state) = model(x, day, states=None, return_state=True)
    head = torch.float32 if precision == "fp32" else torch.bfloat16
    assert clean.shape == noisy.shape == (B, P, 41) and noise.shape == (B, P, 16)
    assert clean.dtype == noisy.dtype == logits.dtype == head
    # under CPU autocast the GRUs run in fp32 (the input's dtype); pure bf16 keeps bf16 everywhere
    assert noise.dtype == (torch.bfloat16 if precision == "bf16_cast" else torch.float32)
    assert torch.equal(logits, clean) and torch.equal(logits2, clean)
    assert noise_state.shape == (2, B, 16) and clean_state.shape == (3, B, 16)


@pytest.mark.parametrize("precision", ["bf16_autocast", "bf16_cast"])
def test_bf16_full_forward_backward_has_no_dtype_mismatch(precision):
    model = tiny_model(rnn_dropout=0.4, input_dropout=0.2).train()
    x, day = inputs()
    if precision == "bf16_cast":
        model, x = model.to(torch.bfloat16), x.to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16_autocast"):
        clean, noisy, noise = model(x, day, mode="full", grl_lambda=torch.tensor(0.7))
        loss = clean.float().logsumexp(-1).mean() + noisy.float().logsumexp(-1).mean() + noise.float().pow(2).mean()
    loss.backward()
    for name, p in model.named_parameters():
        used_day = not ("day_" in name and name.split(".")[-1] == "1")  # day 1 is not in the batch
        assert (p.grad is not None) == used_day, name
        if p.grad is not None:
            assert p.grad.dtype == p.dtype and torch.isfinite(p.grad).all(), name


def test_grl_is_identity_forward_and_minus_lambda_g_backward():
    x = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    g = torch.randn(4, 5, dtype=torch.float64)
    for lam in (0.37, torch.tensor(0.37, dtype=torch.float64, requires_grad=True)):
        y = gradient_reverse(x, lam)
        assert torch.equal(y, x) and y.dtype == x.dtype
        x.grad = None
        y.backward(g)
        assert torch.equal(x.grad, g * -0.37)  # exactly -lambda * g
        if torch.is_tensor(lam):
            assert lam.grad is None  # no gradient for lambda
    xb = torch.randn(3, dtype=torch.bfloat16)
    assert gradient_reverse(xb, 1.0).dtype == torch.bfloat16


def _noise_grads(model, lam, x, day):
    model.zero_grad()
    _, noisy, _ = model(x, day, mode="full", grl_lambda=lam)
    noisy.square().mean().backward()  # a loss of the noisy head only
    noise = {n: p.grad.clone() for n, p in model.noise_model.named_parameters() if p.grad is not None}
    adversary = {n: p.grad.clone() for n, p in model.noisy_speech_model.named_parameters()}
    clean = [p.grad for p in model.clean_speech_model.parameters()]
    return noise, adversary, clean


def test_grl_sign_through_the_model_and_the_lambda_zero_quirk():
    x, day = inputs(torch.float64)
    model = tiny_model().double().eval()
    plain, adv_plain, clean = _noise_grads(model, None, x, day)  # no GRL
    assert all(g is None for g in clean)  # the noisy branch never touches the clean model
    reversed_, adv_rev, _ = _noise_grads(model, 0.5, x, day)
    assert plain.keys() == reversed_.keys() and len(plain) > 5
    for n in plain:
        torch.testing.assert_close(reversed_[n], -0.5 * plain[n], rtol=1e-12, atol=1e-15)
    for n in adv_plain:
        assert torch.equal(adv_rev[n], adv_plain[n])  # the adversary's own gradient is unchanged
    skipped, _, _ = _noise_grads(model, 0.0, x, day)  # the quirk: lambda 0 skips the GRL -> +1 x gradient
    for n in plain:
        assert torch.equal(skipped[n], plain[n])
    model.grl_skip_when_zero = False  # lambda 0 applied: no adversarial gradient reaches the noise model
    zeroed, _, _ = _noise_grads(model, 0.0, x, day)
    assert all(float(g.abs().max()) == 0.0 for g in zeroed.values())


def test_zero_noise_gives_the_standalone_clean_decoder(monkeypatch):
    model = tiny_model().eval()
    x, day = inputs()
    monkeypatch.setattr(model.noise_model, "forward",
                        lambda x, day_idx, states=None: (torch.zeros(B, P, 16), torch.zeros(2, B, 16)))
    clean = model.clean_speech_model
    reference = GRUDecoder(8, 16, 3, 41, n_layers=3, patch_size=2, patch_stride=1).eval()
    reference.load_state_dict(clean.state_dict())  # same keys as the baseline decoder: day_weights.N, gru.*, out.*, h0
    with torch.no_grad():
        assert torch.equal(model(x, day), clean(x, day))
        torch.testing.assert_close(model(x, day), reference(x, day), rtol=0, atol=1e-6)


def test_index_select_gather_equals_the_list_gather():
    model = tiny_model()
    with torch.no_grad():
        for p in model.clean_speech_model.day_weights:
            p.add_(0.1 * torch.randn_like(p))
    x, day = inputs()
    clean = model.clean_speech_model
    clean.day_gather = "list"
    ref = clean.day_layer(x, day)
    ref.sum().backward()
    assert clean.day_weights[1].grad is None  # absent days get no gradient (AdamW leaves them alone)
    clean.day_gather = "index_select"
    torch.testing.assert_close(clean.day_layer(x, day), ref, rtol=0, atol=1e-6)
    clean.day_gather = "nope"
    with pytest.raises(ValueError, match="day_gather"):
        clean.day_layer(x, day)


def test_full_config_parameter_count_on_the_meta_device():
    with torch.device("meta"):
        model = TripleGRUDecoder(neural_dim=512, n_units=768, n_days=45, n_classes=41, rnn_dropout=0.4,
                                 input_dropout=0.2, patch_size=14, patch_stride=4)
    count = {n: sum(p.numel() for p in getattr(model, n).parameters())
             for n in ("noise_model", "clean_speech_model", "noisy_speech_model")}
    assert count == {"noise_model": 628_475_392, "clean_speech_model": 37_228_073, "noisy_speech_model": 21_865_001}
    assert sum(p.numel() for p in model.parameters()) == 687_568_466
    assert next(model.parameters()).device.type == "meta"
    assert model.noise_model.gru.weight_hh_l1.shape == (3 * 7168, 7168)
    with pytest.raises(ValueError, match="noise_units"):
        TripleGRUDecoder(**TINY, noise_units=12)

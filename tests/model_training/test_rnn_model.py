import math

import pytest
import torch

from model_training.checkpoint import with_compile_prefix
from model_training.rnn_model import GRUDecoder, patchify

FULL = dict(neural_dim=512, n_units=768, n_days=45, n_classes=41, rnn_dropout=0.4, input_dropout=0.2,
            n_layers=5, patch_size=14, patch_stride=4)


def original_key_list(n_days=45, n_layers=5):
    keys = ["h0"] + [f"day_weights.{i}" for i in range(n_days)] + [f"day_biases.{i}" for i in range(n_days)]
    for k in range(n_layers):
        keys += [f"gru.weight_ih_l{k}", f"gru.weight_hh_l{k}", f"gru.bias_ih_l{k}", f"gru.bias_hh_l{k}"]
    return keys + ["out.weight", "out.bias"]


@pytest.fixture(scope="module")
def full_model():
    torch.manual_seed(10)
    return GRUDecoder(**FULL)


def test_full_config_parameter_count_and_keys(full_model):
    params = dict(full_model.named_parameters())
    assert sum(p.numel() for p in params.values()) == 44_315_177
    assert sum(p.numel() for n, p in params.items() if "day" in n) == 11_819_520
    assert params["gru.weight_ih_l0"].shape == (2304, 7168)
    sd = full_model.state_dict()
    assert list(sd) == original_key_list()
    assert list(with_compile_prefix(sd)) == ["_orig_mod." + k for k in original_key_list()]


def test_initialisation(full_model):
    for i in (0, 44):
        assert torch.equal(full_model.day_weights[i], torch.eye(512))
        assert torch.equal(full_model.day_biases[i], torch.zeros(1, 512))
    w_hh = full_model.gru.weight_hh_l3.detach()
    torch.testing.assert_close(w_hh.T @ w_hh, torch.eye(768), atol=1e-4, rtol=0)  # orthogonal columns
    w_ih = full_model.gru.weight_ih_l1.detach()
    assert float(w_ih.abs().max()) <= math.sqrt(6 / (768 + 2304)) + 1e-7
    assert float(w_ih.abs().max()) > 0.9 * math.sqrt(6 / (768 + 2304))  # xavier, not the default U(±1/sqrt(768))
    assert full_model.h0.shape == (1, 1, 768) and float(full_model.h0.detach().abs().max()) <= 0.0625


def test_patches_are_flattened_time_major():
    x = torch.randn(2, 30, 5)
    p = patchify(x, 14, 4)
    assert p.shape == (2, (30 - 14) // 4 + 1, 70)
    manual = torch.stack([torch.cat([x[:, 4 * j + k] for k in range(14)], dim=-1) for j in range(p.shape[1])], dim=1)
    assert torch.equal(p, manual)
    assert torch.equal(p[1, 2, 3 * 5 + 4], x[1, 2 * 4 + 3, 4])  # feature index k*D + f


def small_model(**kw):
    torch.manual_seed(0)
    args = dict(neural_dim=16, n_units=12, n_days=3, n_classes=41, rnn_dropout=0.0, input_dropout=0.0,
                n_layers=2, patch_size=14, patch_stride=4)
    args.update(kw)
    return GRUDecoder(**args).eval()


def test_forward_shapes_day_routing_and_shared_h0():
    m = small_model()
    x = torch.randn(3, 50, 16)
    days = torch.tensor([0, 1, 2])
    logits, state = m(x, days, return_state=True)
    assert logits.shape == (3, (50 - 14) // 4 + 1, 41) and state.shape == (2, 3, 12)
    explicit = m.h0.expand(2, 3, 12).contiguous()
    assert torch.equal(m(x, days, states=explicit), logits)
    with torch.no_grad():
        m.day_weights[1].mul_(2.0)
    changed = m(x, days)
    assert torch.equal(changed[0], logits[0]) and torch.equal(changed[2], logits[2])
    assert not torch.allclose(changed[1], logits[1])


def test_unused_days_get_no_gradient():
    m = small_model().train()
    m(torch.randn(2, 30, 16), torch.tensor([0, 2])).sum().backward()
    assert m.day_weights[0].grad is not None and m.day_weights[2].grad is not None
    assert m.day_weights[1].grad is None and m.day_biases[1].grad is None


def test_streaming_one_patch_at_a_time_equals_the_full_sequence():
    m = small_model()
    x = torch.randn(1, 62, 16)
    day = torch.tensor([1])
    full = m(x, day)
    state, frames = None, []
    for p in range(full.shape[1]):
        out, state = m(x[:, 4 * p:4 * p + 14], day, states=state, return_state=True)
        frames.append(out)
    torch.testing.assert_close(torch.cat(frames, dim=1), full, rtol=1e-5, atol=1e-6)


def test_one_layer_gru_builds_without_torch_dropout_warning(recwarn):
    """Issue case: 1-layer configs printed torch's 'dropout expects num_layers greater than 1' warning."""
    from model_training.rnn_model import GRUDecoder

    model = GRUDecoder(neural_dim=8, n_units=16, n_days=2, n_classes=41, rnn_dropout=0.4, n_layers=1,
                       patch_size=2, patch_stride=2)
    assert model.gru.num_layers == 1 and model.gru.dropout == 0.0
    assert not [w for w in recwarn if "dropout" in str(w.message)]
    two = GRUDecoder(neural_dim=8, n_units=16, n_days=2, n_classes=41, rnn_dropout=0.4, n_layers=2,
                     patch_size=2, patch_stride=2)
    assert two.gru.dropout == 0.4

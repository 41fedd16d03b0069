import pytest
import torch
from omegaconf import OmegaConf

from model_training.config import DEFAULT_CONFIG
from model_training.optim import cosine_lr_factor, create_lr_scheduler, create_optimizer
from model_training.rnn_model import GRUDecoder

ARGS = OmegaConf.load(DEFAULT_CONFIG)


def model(n_days=3):
    return GRUDecoder(16, 8, n_days, 41, n_layers=2, patch_size=14, patch_stride=4)


def test_parameter_groups_follow_the_original_rules():
    m = model()
    opt = create_optimizer(m, ARGS)
    names = {id(p): n for n, p in m.named_parameters()}
    groups = [(g["group_type"], g["lr"], g["weight_decay"], sorted(names[id(p)] for p in g["params"]))
              for g in opt.param_groups]
    assert [g[0] for g in groups] == ["bias", "day_layer", "other"]
    assert groups[0][1:3] == (0.005, 0) and groups[0][3] == sorted(
        [f"gru.bias_{t}_l{k}" for k in range(2) for t in ("ih", "hh")] + ["out.bias"])
    assert groups[1][1:3] == (0.005, 0) and len(groups[1][3]) == 6 and all("day_" in n for n in groups[1][3])
    assert groups[2][1:3] == (0.005, 0.001) and groups[2][3] == sorted(
        ["h0", "out.weight"] + [f"gru.weight_{t}_l{k}" for k in range(2) for t in ("ih", "hh")])
    assert opt.defaults["eps"] == 0.1 and opt.defaults["betas"] == (0.9, 0.999)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(m.parameters()))


def test_no_day_group_without_day_layers():
    opt = create_optimizer(model(n_days=0), ARGS)
    assert [g["group_type"] for g in opt.param_groups] == ["bias", "other"]


def lrs_over(args, n):
    opt = create_optimizer(model(), args)
    sched = create_lr_scheduler(opt, args)
    out = []
    for _ in range(n):
        out.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    return out


def test_warmup_cosine_schedule_of_the_original_config():
    lrs = lrs_over(ARGS, 1001)
    assert lrs[0] == [0.0, 0.0, 0.0]  # batch 0 trains with lr 0
    assert lrs[1][0] == pytest.approx(5e-6) and lrs[999][2] == pytest.approx(0.004995)
    assert lrs[1000] == pytest.approx([0.005] * 3)
    f = cosine_lr_factor
    assert 0.005 * f(60_500, 0.02, 1000, 120_000) == pytest.approx(0.0001 + 0.0049 * 0.5)
    assert 0.005 * f(119_999, 0.02, 1000, 120_000) == pytest.approx(1e-4, rel=1e-3)
    assert 0.005 * f(150_000, 0.02, 1000, 120_000) == pytest.approx(1e-4)


def test_day_group_has_its_own_schedule_and_linear_option():
    args = OmegaConf.merge(ARGS, {"lr_max_day": 0.01, "lr_min_day": 0.001, "lr_warmup_steps_day": 10})
    lrs = lrs_over(args, 11)
    assert lrs[5][1] == pytest.approx(0.005) and lrs[10][1] == pytest.approx(0.01)
    assert lrs[5][0] == pytest.approx(0.005 * 5 / 1000)
    lin = lrs_over(OmegaConf.merge(ARGS, {"lr_scheduler_type": "linear", "lr_decay_steps": 10}), 12)
    assert lin[0][0] == pytest.approx(0.005) and lin[11][0] == pytest.approx(1e-4)
    with pytest.raises(ValueError, match="lr_scheduler_type"):
        create_lr_scheduler(torch.optim.SGD(model().parameters(), lr=1), OmegaConf.merge(
            ARGS, {"lr_scheduler_type": "step"}))

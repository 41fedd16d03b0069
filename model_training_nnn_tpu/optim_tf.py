"""AdamW exactly as PyTorch's, the baseline's parameter groups, and its learning-rate factors (TF side).

Keras's Adam folds epsilon differently (``eps * sqrt(1 - beta2^t)``), which matters with the baseline's
``epsilon: 0.1``; :class:`TorchAdamW` is PyTorch's update (per-variable step counts, decoupled weight
decay ``p *= 1 - lr * wd`` before the step). With ``skip_zero_grads`` a variable whose gradient is all
zero is left untouched, step count included: a day absent from the batch gets no gradient in PyTorch
(``grad is None``) and AdamW skips it; here the gather gives it an exact zero instead.

Groups (``model_training.optim.parameter_groups``' rules on Keras variable paths): ``bias`` (GRU and head
biases: lr_max, no weight decay), ``day_layer`` (``day_*``: lr_max_day, weight_decay_day), ``other``
(GRU kernels, head kernel, ``h0``: lr_max, weight_decay). The learning rate of each group is set from the
host every step with ``model_training.optim.cosine_lr_factor`` (the same function the PyTorch trainer uses).
For the TripleGRUDecoder, ``adversarial.lr_scale_noise`` / ``lr_scale_noisy`` multiply the learning rates of
the noise model's / noisy decoder's variables (as ``model_training_nnn.rnn_trainer.nnn_parameter_groups``): a
group whose scale is not 1 gets its own optimizer, named ``<group>:<sub-model>`` (with every scale 1 the
three groups, and their checkpoint names, are the baseline's).
"""

from __future__ import annotations

from collections.abc import Mapping

import keras
import tensorflow as tf

from model_training.lr_schedule import cosine_lr_factor

GROUPS = ("bias", "day_layer", "other")
#: TripleGRUDecoder sub-model (attribute name) -> the ``adversarial`` key scaling its learning rate.
LR_SCALE_KEYS = {"noise_model": "lr_scale_noise", "noisy_speech_model": "lr_scale_noisy"}


def group_of(path: str) -> str:
    """The parameter group of a Keras variable path (``'gru_decoder/out/bias'`` -> ``'bias'``)."""
    name = path.rsplit("/", 1)[-1]
    if "day_" in path:
        return "day_layer"
    if name == "bias":
        return "bias"
    return "other"


class TorchAdamW(keras.optimizers.Optimizer):
    """PyTorch's AdamW update as a Keras optimizer (TF backend).

    Gradients must arrive already all-reduced across replicas (the trainer reduces and clips them
    first), so the optimizer's own cross-replica sum is disabled.
    """

    def __init__(self, learning_rate: float, beta_1: float = 0.9, beta_2: float = 0.999, epsilon: float = 1e-8,
                 decoupled_weight_decay: float = 0.0, skip_zero_grads: bool = False, name: str = "torch_adamw",
                 **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon
        self.decoupled_weight_decay = decoupled_weight_decay
        self.skip_zero_grads = skip_zero_grads

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._m, self._v, self._t = [], [], []
        for var in var_list:
            self._m.append(self.add_variable_from_reference(var, "m"))
            self._v.append(self.add_variable_from_reference(var, "v"))
            self._t.append(self.add_variable((), initializer="zeros", dtype="float32", name="step"))

    def _all_reduce_sum_gradients(self, grads_and_vars):
        return grads_and_vars  # already reduced by the trainer (see the class docstring)

    def update_step(self, gradient, variable, learning_rate):
        i = self._get_variable_index(variable)
        m, v, t = self._m[i], self._v[i], self._t[i]
        g = tf.cast(gradient, variable.dtype)
        lr = tf.cast(learning_rate, variable.dtype)
        step = t + 1.0
        p = variable * (1.0 - lr * self.decoupled_weight_decay) if self.decoupled_weight_decay else variable
        m_new = self.beta_1 * m + (1.0 - self.beta_1) * g
        v_new = self.beta_2 * v + (1.0 - self.beta_2) * tf.square(g)
        bc1 = 1.0 - tf.pow(tf.cast(self.beta_1, variable.dtype), step)
        bc2 = 1.0 - tf.pow(tf.cast(self.beta_2, variable.dtype), step)
        p_new = p - (lr / bc1) * m_new / (tf.sqrt(v_new) / tf.sqrt(bc2) + self.epsilon)
        if self.skip_zero_grads:
            has = tf.reduce_any(tf.not_equal(g, 0.0))
            m_new, v_new = tf.where(has, m_new, m), tf.where(has, v_new, v)
            p_new, step = tf.where(has, p_new, variable), tf.where(has, step, t)
        self.assign(m, m_new)
        self.assign(v, v_new)
        self.assign(t, step)
        self.assign(variable, p_new)


def create_optimizers(variables: list, args: Mapping,
                      sub_models: Mapping[str, list] | None = None) -> dict[str, tuple[TorchAdamW, list[int]]]:
    """One :class:`TorchAdamW` per non-empty group, with the indices of its variables in ``variables``.

    Args:
        variables: the trainable variables (Keras), in the order the gradients will come.
        args: the training config (``lr_max``, ``lr_max_day``, ``beta0``, ``beta1``, ``epsilon``,
            ``weight_decay``, ``weight_decay_day``; ``adversarial.lr_scale_noise`` / ``lr_scale_noisy``).
        sub_models: the TripleGRUDecoder's ``{sub-model name: its trainable variables}`` (Keras variable paths
            do not always name the sub-model, so ownership is by identity); ``None`` for the baseline.

    Returns:
        ``{group: (optimizer, [indices])}``, built (slot variables exist); each optimizer's ``lr_scale`` is its
        sub-model's multiplier (1 for the baseline's groups).
    """
    owner = {id(v): sub for sub, owned in (sub_models or {}).items() for v in owned}
    adv = args.get("adversarial") or {}
    members: dict[str, list[int]] = {}
    scales: dict[str, float] = {}
    for i, var in enumerate(variables):
        group, sub = group_of(var.path), owner.get(id(var), "")
        scale = float(adv.get(LR_SCALE_KEYS[sub], 1.0)) if sub in LR_SCALE_KEYS else 1.0
        name = group if scale == 1.0 else f"{group}:{sub}"
        members.setdefault(name, []).append(i)
        scales[name] = scale
    out = {}
    for name in sorted(members, key=lambda n: (GROUPS.index(n.split(":")[0]), n)):
        idx, group = members[name], name.split(":")[0]
        day = group == "day_layer"
        wd = {"bias": 0.0, "day_layer": float(args["weight_decay_day"]), "other": float(args["weight_decay"])}[group]
        opt = TorchAdamW(learning_rate=float(args["lr_max_day"] if day else args["lr_max"]) * scales[name],
                         beta_1=float(args["beta0"]), beta_2=float(args["beta1"]), epsilon=float(args["epsilon"]),
                         decoupled_weight_decay=wd, skip_zero_grads=day, name=f"adamw_{name.replace(':', '_')}")
        opt.lr_scale = scales[name]
        opt.build([variables[i] for i in idx])
        out[name] = (opt, idx)
    return out


def lr_factor(args: Mapping, step: int, day: bool) -> float:
    """The baseline scheduler's factor at ``step`` (``cosine``: warmup + cosine; ``linear``: LinearLR).

    Args:
        args: the training config.
        step: optimizer steps taken before this one (0 at the first batch).
        day: the day-layer group's schedule (its own warmup/decay keys) instead of the main one.

    Returns:
        The multiplier of the group's ``lr_max`` / ``lr_max_day``.

    Raises:
        ValueError: an unknown ``lr_scheduler_type``.
    """
    kind = args["lr_scheduler_type"]
    if kind == "linear":
        end, total = args["lr_min"] / args["lr_max"], int(args["lr_decay_steps"])
        return 1.0 + (end - 1.0) * min(step, total) / max(1, total)
    if kind != "cosine":
        raise ValueError(f"lr_scheduler_type: expected 'cosine' or 'linear', got {kind!r}")
    if day:
        return cosine_lr_factor(step, args["lr_min_day"] / args["lr_max_day"], args["lr_warmup_steps_day"],
                                args["lr_decay_steps_day"])
    return cosine_lr_factor(step, args["lr_min"] / args["lr_max"], args["lr_warmup_steps"], args["lr_decay_steps"])


def set_learning_rates(optimizers: Mapping, args: Mapping, step: int) -> None:
    """Assign each group's learning rate for optimizer step ``step`` (host side, no retracing)."""
    for group, (opt, _) in optimizers.items():
        day = group.split(":")[0] == "day_layer"
        base = float(args["lr_max_day"] if day else args["lr_max"]) * getattr(opt, "lr_scale", 1.0)
        opt.learning_rate.assign(base * lr_factor(args, step, day))

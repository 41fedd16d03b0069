"""Weight conversion between the PyTorch models (state dicts) and the Keras ports, both directions.

Layouts (spec §6.3 porting map), handled explicitly:

* GRU: PyTorch ``weight_ih_l{k}`` (3H, I) / ``weight_hh_l{k}`` (3H, H) hold the gates in the order
  **r, z, n**; Keras ``kernel`` (I, 3H) / ``recurrent_kernel`` (H, 3H) hold **z, r, h** (columns). Keras's
  ``reset_after`` ``bias`` is (2, 3H): row 0 = the input bias (PyTorch ``bias_ih``), row 1 = the recurrent
  bias (``bias_hh``), both in z, r, h order.
* Linear head: ``out.weight`` (C, H) is the transpose of the Dense ``kernel`` (H, C).
* Day layers (``x @ W + b``), ``h0`` (1, 1, H): the same arrays.

State-dict keys are the PyTorch models' own (``_orig_mod.``/``module.`` prefixes are accepted on input):
the baseline's ``day_weights.{i}``, ``day_biases.{i}``, ``gru.*``, ``out.*``, ``h0``, and for the triple
model the same names under ``noise_model.``, ``clean_speech_model.`` and ``noisy_speech_model.``.
Values are NumPy arrays (torch tensors are accepted on input; ``to_torch`` converts the output).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

_PREFIXES = ("module.", "_orig_mod.")


def _np(value) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().float().numpy()
    return np.asarray(value, dtype=np.float32)


def strip_prefixes(state_dict: Mapping) -> dict[str, np.ndarray]:
    """Drop DDP/torch.compile key prefixes and convert every value to a float32 NumPy array."""
    out = {}
    for key, value in state_dict.items():
        while key.startswith(_PREFIXES):
            key = key.split(".", 1)[1]
        out[key] = _np(value)
    return out


def _torch_gates_to_keras(w: np.ndarray) -> np.ndarray:
    """``(3H, X)`` rows r, z, n -> ``(X, 3H)`` columns z, r, h."""
    r, z, n = np.split(w, 3, axis=0)
    return np.concatenate([z, r, n], axis=0).T.copy()


def _keras_gates_to_torch(k: np.ndarray) -> np.ndarray:
    """``(X, 3H)`` columns z, r, h -> ``(3H, X)`` rows r, z, n."""
    z, r, h = np.split(k.T, 3, axis=0)
    return np.concatenate([r, z, h], axis=0).copy()


def _bias_to_keras(b: np.ndarray) -> np.ndarray:
    r, z, n = np.split(b, 3)
    return np.concatenate([z, r, n])


def _bias_to_torch(b: np.ndarray) -> np.ndarray:
    z, r, h = np.split(b, 3)
    return np.concatenate([r, z, h])


def _day_to_tf(day_layer, sd: Mapping[str, np.ndarray], prefix: str) -> None:
    for i, (w, b) in enumerate(zip(day_layer.day_weights, day_layer.day_biases)):
        w.assign(sd[f"{prefix}day_weights.{i}"])
        b.assign(sd[f"{prefix}day_biases.{i}"])


def _day_to_torch(day_layer, prefix: str) -> dict[str, np.ndarray]:
    out = {}
    for i, (w, b) in enumerate(zip(day_layer.day_weights, day_layer.day_biases)):
        out[f"{prefix}day_weights.{i}"] = np.asarray(w.numpy())
        out[f"{prefix}day_biases.{i}"] = np.asarray(b.numpy())
    return out


def _gru_to_tf(stack, sd: Mapping[str, np.ndarray], prefix: str) -> None:
    """Assign ``{prefix}weight_ih_l{k}`` ... to the layers of a :class:`StackedGRU` (h0 included)."""
    for k, layer in enumerate(stack.layers_):
        cell = layer.cell
        cell.kernel.assign(_torch_gates_to_keras(sd[f"{prefix}weight_ih_l{k}"]))
        cell.recurrent_kernel.assign(_torch_gates_to_keras(sd[f"{prefix}weight_hh_l{k}"]))
        cell.bias.assign(np.stack([_bias_to_keras(sd[f"{prefix}bias_ih_l{k}"]),
                                   _bias_to_keras(sd[f"{prefix}bias_hh_l{k}"])]))  # (2, 3H)


def _gru_to_torch(stack, prefix: str) -> dict[str, np.ndarray]:
    out = {}
    for k, layer in enumerate(stack.layers_):
        cell = layer.cell
        bias = np.asarray(cell.bias.numpy())  # (2, 3H)
        out[f"{prefix}weight_ih_l{k}"] = _keras_gates_to_torch(np.asarray(cell.kernel.numpy()))
        out[f"{prefix}weight_hh_l{k}"] = _keras_gates_to_torch(np.asarray(cell.recurrent_kernel.numpy()))
        out[f"{prefix}bias_ih_l{k}"] = _bias_to_torch(bias[0])
        out[f"{prefix}bias_hh_l{k}"] = _bias_to_torch(bias[1])
    return out


def _dense_to_tf(dense, sd: Mapping[str, np.ndarray], prefix: str) -> None:
    dense.kernel.assign(sd[f"{prefix}weight"].T)  # (C, H) -> (H, C)
    dense.bias.assign(sd[f"{prefix}bias"])


def _dense_to_torch(dense, prefix: str) -> dict[str, np.ndarray]:
    return {f"{prefix}weight": np.asarray(dense.kernel.numpy()).T.copy(), f"{prefix}bias": np.asarray(dense.bias.numpy())}


def _check_keys(expected: list[str], sd: Mapping[str, np.ndarray]) -> None:
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in set(expected)]
    if missing or unexpected:
        raise KeyError(f"state dict does not fit the model: missing {missing[:5]} ({len(missing)}), "
                       f"unexpected {unexpected[:5]} ({len(unexpected)})")


def _component_to_tf(part, sd: Mapping[str, np.ndarray], prefix: str) -> None:
    """One module with the baseline's names: optional ``day``, ``gru`` (+ ``h0``), optional ``out``."""
    if getattr(part, "day", None) is not None:
        _day_to_tf(part.day, sd, prefix)
    _gru_to_tf(part.gru, sd, prefix + "gru.")
    part.gru.h0.assign(sd[f"{prefix}h0"])
    if getattr(part, "out", None) is not None:
        _dense_to_tf(part.out, sd, prefix + "out.")


def _component_to_torch(part, prefix: str) -> dict[str, np.ndarray]:
    out = {}
    if getattr(part, "day", None) is not None:
        out.update(_day_to_torch(part.day, prefix))
    out.update(_gru_to_torch(part.gru, prefix + "gru."))
    out[f"{prefix}h0"] = np.asarray(part.gru.h0.numpy())
    if getattr(part, "out", None) is not None:
        out.update(_dense_to_torch(part.out, prefix + "out."))
    return out


def _components(model) -> list[tuple[object, str]]:
    """(Keras part, PyTorch key prefix) pairs of a built GRUDecoder or TripleGRUDecoder."""
    if hasattr(model, "noise_model"):
        return [(model.noise_model, "noise_model."), (model.clean_speech_model, "clean_speech_model."),
                (model.noisy_speech_model, "noisy_speech_model.")]
    return [(model, "")]


def torch_to_tf(model, state_dict: Mapping) -> None:
    """Load a PyTorch state dict into a built Keras model (GRUDecoder or TripleGRUDecoder), in place.

    Args:
        model: a Keras port whose variables exist (call ``build_for()`` first).
        state_dict: the PyTorch model's ``state_dict()`` (tensors or arrays; prefixes allowed).

    Raises:
        KeyError: the state dict's keys are not exactly the model's.
        ValueError: an array's shape does not fit its variable.
    """
    sd = strip_prefixes(state_dict)
    _check_keys(list(tf_to_torch(model)), sd)
    for part, prefix in _components(model):
        _component_to_tf(part, sd, prefix)


def tf_to_torch(model) -> dict[str, np.ndarray]:
    """The PyTorch state dict (NumPy arrays, PyTorch key names and layouts) of a built Keras port.

    Args:
        model: a built GRUDecoder or TripleGRUDecoder (Keras).

    Returns:
        ``{name: array}`` loadable with ``torch_model.load_state_dict(to_torch(...))``.
    """
    out: dict[str, np.ndarray] = {}
    for part, prefix in _components(model):
        out.update(_component_to_torch(part, prefix))
    return out


def to_torch(state_dict: Mapping[str, np.ndarray]) -> dict:
    """NumPy state dict -> ``{name: torch.Tensor}`` (imports torch only here)."""
    import torch

    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state_dict.items()}

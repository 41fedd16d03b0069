"""One table for building models: ``model.architecture`` -> a builder per framework (PyTorch, TensorFlow).

Every decoder takes the same eight keyword arguments, read once from a config by :func:`shared_model_kwargs`
(``neural_dim``, ``n_units``, ``n_days``, ``n_classes``, ``rnn_dropout``, ``input_dropout``, ``patch_size``,
``patch_stride``); a builder adds only its own (``gru``: ``n_layers``; ``triple_gru``: the sub-model sizes).
Builders register themselves where the model is defined::

    @register("gru", "torch")
    def build_gru_decoder(args, **shared):
        return GRUDecoder(n_layers=int(args.model.n_layers), **shared)

:data:`PROVIDERS` says which module registers each architecture, so that a checkpoint's ``args.yaml``
(``model.architecture: triple_gru``) rebuilds its model without the caller importing the variant first;
it is the one place the baseline names a variant package. A new architecture adds a row there and a
``@register`` builder beside its model. Framework-free: importing this module imports neither torch nor TF.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping

from nejm_b2txt_utils.cli_errors import ConfigError

FRAMEWORKS = ("torch", "tf")

#: architecture -> {framework: the module whose import registers its builder}.
PROVIDERS: dict[str, dict[str, str]] = {
    "gru": {"torch": "model_training.rnn_model", "tf": "model_training_nnn_tpu.rnn_model_tf"},
    "triple_gru": {"torch": "model_training_nnn.rnn_model", "tf": "model_training_nnn_tpu.rnn_model_tf"},
}

Builder = Callable[..., object]
_BUILDERS: dict[tuple[str, str], Builder] = {}


def register(architecture: str, framework: str) -> Callable[[Builder], Builder]:
    """Decorator: ``builder(args, **shared_kwargs)`` builds ``architecture`` in ``framework``.

    Args:
        architecture: the ``model.architecture`` value.
        framework: ``'torch'`` or ``'tf'``.

    Returns:
        The decorator (it returns the builder unchanged).

    Raises:
        ValueError: an unknown framework.
    """
    if framework not in FRAMEWORKS:
        raise ValueError(f"framework: expected one of {FRAMEWORKS}, got {framework!r}")

    def decorate(builder: Builder) -> Builder:
        _BUILDERS[(architecture, framework)] = builder
        return builder
    return decorate


def architectures() -> list[str]:
    """Every known ``model.architecture`` (in :data:`PROVIDERS` or registered), sorted."""
    return sorted(set(PROVIDERS) | {a for a, _ in _BUILDERS})


def check_architecture(args: Mapping) -> str:
    """``args.model.architecture`` (``gru`` when absent), checked against the table.

    Raises:
        ConfigError: an unknown architecture.
    """
    arch = str(args["model"].get("architecture", "gru"))
    if arch not in architectures():
        raise ConfigError(f"model.architecture: expected one of {architectures()}, got {arch!r}")
    return arch


def shared_model_kwargs(args: Mapping) -> dict:
    """The keyword arguments every decoder takes, read once from a config / ``args.yaml``.

    Args:
        args: ``model.n_input_features``, ``n_units``, ``rnn_dropout``, ``input_network.input_layer_dropout``,
            ``patch_size``, ``patch_stride``; ``dataset.sessions`` (one day layer each) and ``dataset.n_classes``.

    Returns:
        ``{neural_dim, n_units, n_days, n_classes, rnn_dropout, input_dropout, patch_size, patch_stride}``.
    """
    m = args["model"]
    return dict(neural_dim=int(m["n_input_features"]), n_units=int(m["n_units"]),
                n_days=len(args["dataset"]["sessions"]), n_classes=int(args["dataset"]["n_classes"]),
                rnn_dropout=float(m["rnn_dropout"]), input_dropout=float(m["input_network"]["input_layer_dropout"]),
                patch_size=int(m["patch_size"]), patch_stride=int(m["patch_stride"]))


def builder_for(architecture: str, framework: str) -> Builder:
    """The registered builder, importing its :data:`PROVIDERS` module first if needed.

    Raises:
        ConfigError: no builder for this architecture in this framework.
    """
    key = (architecture, framework)
    if key not in _BUILDERS and framework in PROVIDERS.get(architecture, {}):
        importlib.import_module(PROVIDERS[architecture][framework])
    if key not in _BUILDERS:
        raise ConfigError(f"model.architecture: {architecture!r} has no {framework} model")
    return _BUILDERS[key]


def build_model(args: Mapping, framework: str = "torch"):
    """The freshly initialised model ``args.model.architecture`` names, in ``framework``.

    Args:
        args: a training config / ``args.yaml``.
        framework: ``'torch'`` (an ``nn.Module`` on the CPU, train mode) or ``'tf'`` (a Keras model, variables
            created lazily).

    Returns:
        The model.

    Raises:
        ConfigError: an unknown architecture, or one without a model in ``framework``.
    """
    arch = check_architecture(args)
    return builder_for(arch, framework)(args, **shared_model_kwargs(args))

"""Building the Keras model a config describes: ``model.architecture`` (``gru`` = the baseline GRUDecoder,
``triple_gru`` = the nnn TripleGRUDecoder), the key ``model_training/checkpoint.py`` reads too."""

from __future__ import annotations

from omegaconf import DictConfig

KINDS = {"gru": "gru", "triple_gru": "triple"}


def model_kind(args: DictConfig) -> str:
    """``'gru'`` or ``'triple'`` from ``model.architecture`` (absent = ``gru``), checked by
    ``model_training.checkpoint.check_architecture`` (the one list of architectures).

    Raises:
        ConfigError: an unknown architecture.
    """
    from model_training.checkpoint import check_architecture

    return KINDS[check_architecture(args)]


def build_model_tf(args: DictConfig):
    """The Keras port of the configured model (variables created lazily: call ``build_for``).

    Args:
        args: a training config (``model.*``, ``dataset.sessions``, ``dataset.n_classes``; triple_gru:
            ``model.n_noise_layers``, ``n_clean_layers``, ``n_noisy_layers``, ``noise_units``, ``noisy_units``,
            ``adversarial.grl_skip_when_zero``).

    Returns:
        A ``GRUDecoder`` or ``TripleGRUDecoder`` (Keras).
    """
    from model_training_nnn_tpu.rnn_model_tf import GRUDecoder, TripleGRUDecoder

    m = args.model
    common = dict(neural_dim=int(m.n_input_features), n_units=int(m.n_units), n_days=len(args.dataset.sessions),
                  n_classes=int(args.dataset.n_classes), rnn_dropout=float(m.rnn_dropout),
                  input_dropout=float(m.input_network.input_layer_dropout), patch_size=int(m.patch_size),
                  patch_stride=int(m.patch_stride))
    if model_kind(args) == "gru":
        return GRUDecoder(n_layers=int(m.n_layers), **common)
    adv = args.get("adversarial") or {}
    return TripleGRUDecoder(n_noise_layers=int(m.get("n_noise_layers", 2)), n_clean_layers=int(m.get("n_clean_layers", 3)),
                            n_noisy_layers=int(m.get("n_noisy_layers", 2)), noise_units=m.get("noise_units"),
                            noisy_units=m.get("noisy_units"),
                            grl_skip_when_zero=bool(adv.get("grl_skip_when_zero", True)), **common)

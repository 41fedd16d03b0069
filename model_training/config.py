"""Training configs: YAML + ``key=value`` overrides (omegaconf), path resolution, normalisation.

Relative paths written in a YAML file resolve against that file's folder (so ``rnn_args.yaml``'s
``../data/hdf5_data_final`` works from any working directory); paths given on the command line
resolve against the current directory. ``dataset.sessions: auto`` takes every session folder found
under ``dataset.dataset_dir``; ``dataset.dataset_probability_val: auto`` (or absent) flags the sessions
that have a ``data_val.hdf5``. A config may overlay another: ``base: ../model_training/rnn_args.yaml``
(relative to the file) loads that one first and merges this file's keys on top (chains allowed).
"""

from __future__ import annotations

import difflib
import logging
import os
from pathlib import Path

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from nejm_b2txt_utils.cli_errors import ConfigError
from nejm_b2txt_utils.description_csv import session_date
from nejm_b2txt_utils.metrics import edit_distance
from nejm_b2txt_utils.t15_hdf5 import data_file_path, list_sessions

#: Keys holding filesystem paths (resolved as described in the module docstring).
PATH_KEYS = ("output_dir", "checkpoint_dir", "init_checkpoint_path", "dataset.dataset_dir")
#: Keys where the original's yaml wrote the string ``None`` meaning null.
NULLABLE_KEYS = ("init_checkpoint_path", "dataset.feature_subset", "dataset.must_include_days",
                 "dataset.bad_trials_dict")
DEFAULT_CONFIG = Path(__file__).resolve().parent / "rnn_args.yaml"
log = logging.getLogger(__name__)


__all__ = ["ConfigError", "DEFAULT_CONFIG", "check_training_data", "load_config", "normalize_config",
           "resolved_container"]
#: Integer keys and their least allowed value (checked by ``normalize_config`` when present).
INT_MINIMA = {"num_training_batches": 1, "batches_per_train_log": 1, "batches_per_val_step": 1,
              "dataset.batch_size": 1, "dataset.days_per_batch": 1, "model.patch_size": 0,
              "model.patch_stride": 1, "dataset.data_transforms.random_cut": 0, "model.n_units": 1,
              "model.n_layers": 1, "model.n_input_features": 1, "dataset.data_transforms.smooth_kernel_size": 1,
              "dataset.data_transforms.time_mask_count": 0, "dataset.data_transforms.time_mask_max_width": 1}
#: Float keys and their allowed interval ``[low, high)`` (``high`` None: unbounded).
FLOAT_RANGES = {"model.rnn_dropout": (0.0, 1.0), "model.input_network.input_layer_dropout": (0.0, 1.0),
                "lr_max": (0.0, None), "lr_min": (0.0, None), "lr_max_day": (0.0, None), "lr_min_day": (0.0, None),
                "epsilon": (0.0, None), "weight_decay": (0.0, None), "grad_norm_clip_value": (0.0, None),
                "dataset.data_transforms.smooth_kernel_std": (0.0, None),
                "dataset.data_transforms.speckle_mask_prob": (0.0, 1.0)}


def _check_ints(cfg: DictConfig) -> None:
    for key, least in INT_MINIMA.items():
        value = OmegaConf.select(cfg, key, default=None)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ConfigError(f"{key}: expected an integer >= {least}, got {value!r}")
    for key, (low, high) in FLOAT_RANGES.items():
        value = OmegaConf.select(cfg, key, default=None)
        if value is None:
            continue
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value and \
            (high is None or value < high)
        if not ok:
            raise ConfigError(f"{key}: expected a number in [{low}, {'inf' if high is None else high}), got {value!r}")
    kind = cfg.get("lr_scheduler_type", "cosine")
    if kind not in ("cosine", "linear"):
        raise ConfigError(f"lr_scheduler_type: expected 'cosine' or 'linear', got {kind!r}")


def _resolve(value, base: Path):
    if value is None or not isinstance(value, str) or value in ("", "None", "null") or "${" in value:
        return value
    p = Path(os.path.expanduser(value))
    return str(p if p.is_absolute() else (base / p).resolve())


def _raw(cfg: DictConfig, key: str):
    """The value of a dotted key as written (interpolations like ``${output_dir}/x`` unresolved)."""
    node = OmegaConf.to_container(cfg, resolve=False)
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _override_keys(overrides: list[str]) -> set[str]:
    keys = set()
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value")
        key, value = item.split("=", 1)
        if not key.lstrip("+~"):
            raise ConfigError(f"override {item!r}: no key before '='")
        if not value.strip():
            raise ConfigError(f"override {item!r}: no value after '=' (write {key}=null to unset it)")
        keys.add(key.lstrip("+~"))
    return keys


def _check_sections_kept(cfg: DictConfig, overrides: list[str]) -> None:
    """A ``key=value`` must not replace a whole section (``dataset=5``) with a scalar."""
    for item in overrides:
        key = item.split("=", 1)[0].lstrip("+~")
        if isinstance(OmegaConf.select(cfg, key, default=None), DictConfig):
            raise ConfigError(f"override {item!r}: {key} is a section of the config; set one of its keys "
                              f"instead (e.g. {key}.{next(iter(OmegaConf.select(cfg, key)), 'name')}=...)")


def _flat_keys(cfg: DictConfig, prefix: str = "") -> list[str]:
    """Every dotted key of ``cfg`` (``dataset.batch_size``, ...), mappings included."""
    keys = []
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        keys.append(key)
        if isinstance(v, DictConfig):
            keys.extend(_flat_keys(v, key + "."))
    return keys


def _warn_unknown_overrides(cfg: DictConfig, overrides: list[str], path: Path) -> list[str]:
    """Log one warning per ``key=value`` whose key the config does not have (a typo is otherwise silent);
    ``+key=value`` adds a new key on purpose and is not reported. Keys the code reads with a default
    (``device``, ``resume``, ``xla.*``, ...) are legitimately absent from the YAML, so this warns, it does not fail.

    Returns:
        The unknown keys, in order.
    """
    known = _flat_keys(cfg)
    unknown = []
    for item in overrides:
        key = item.split("=", 1)[0]
        if key.startswith(("+", "~")) or OmegaConf.select(cfg, key, default=None) is not None or key in known:
            continue
        near = difflib.get_close_matches(key, known, n=1)
        log.warning("override %r: %s has no key %r%s; setting it anyway (prefix it with '+' to add a new key "
                    "without this warning)", item, path.name, key, f" (did you mean {near[0]!r}?)" if near else "")
        unknown.append(key)
    return unknown


def _load_yaml(path: Path, chain: tuple[Path, ...]) -> DictConfig:
    """One YAML file with its paths resolved against its folder; a top-level ``base: <file>`` (relative to
    this file) names a config this one overlays: the base is loaded first, then this file merged on top."""
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found" + (f" (the base of {chain[-1]})" if chain else ""))
    if path.resolve() in chain:
        raise ConfigError(f"{path}: 'base' chain loops back to this file")
    try:
        cfg = OmegaConf.load(path)
    except (OmegaConfBaseException, yaml.YAMLError, ValueError) as exc:
        raise ConfigError(f"{path}: malformed YAML ({str(exc).strip().splitlines()[0]})") from exc
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    folder = path.resolve().parent
    for key in PATH_KEYS:
        value = _raw(cfg, key)
        if value is not None:
            OmegaConf.update(cfg, key, _resolve(value, folder))
    base_name = cfg.pop("base", None)
    if base_name is None:
        return cfg
    if not isinstance(base_name, str):
        raise ConfigError(f"{path}: base: expected the path of the config this one overlays, got {base_name!r}")
    base_path = Path(os.path.expanduser(base_name))
    base_cfg = _load_yaml(base_path if base_path.is_absolute() else folder / base_path, (*chain, path.resolve()))
    _warn_overlay_typos(cfg, base_cfg, path)
    return OmegaConf.merge(base_cfg, cfg)


def _warn_overlay_typos(overlay: DictConfig, base: DictConfig, path: Path) -> list[str]:
    """The command line's did-you-mean warning for an overlay's keys (a typo was stored silently in args.yaml).

    An overlay may add keys on purpose (``model.architecture``, ``model.n_noise_layers``), so only a key that the
    base lacks and that is within 2 edits of one it has (``num_training_batchs`` ~ ``num_training_batches``) is
    reported.

    Returns:
        The reported keys.
    """
    known = _flat_keys(base)
    reported = []
    for key in _flat_keys(overlay):
        if key in known or any(key.startswith(r + ".") for r in reported):
            continue
        near = [k for k in difflib.get_close_matches(key, known, n=3, cutoff=0.8) if edit_distance(list(k), list(key)) <= 2]
        if near:
            log.warning("%s: %s has no key %r (did you mean %r?); setting it anyway", path.name,
                        "its base", key, near[0])
            reported.append(key)
    return reported


def load_config(config_path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> DictConfig:
    """Load a YAML config (and the ``base`` configs it overlays), apply ``key=value`` overrides, resolve
    paths and normalise values."""
    path = Path(config_path) if config_path else DEFAULT_CONFIG
    cfg = _load_yaml(path, ())
    overrides = list(overrides or [])
    cli_keys = _override_keys(overrides)
    _check_sections_kept(cfg, overrides)
    _warn_unknown_overrides(cfg, overrides, path)
    try:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([o.removeprefix("+") for o in overrides]))
    except OmegaConfBaseException as exc:
        raise ConfigError(f"bad override in {overrides}: {exc}") from exc
    for key in PATH_KEYS:
        if key in cli_keys:
            OmegaConf.update(cfg, key, _resolve(_raw(cfg, key), Path.cwd()))
    return normalize_config(cfg)


def normalize_config(cfg: DictConfig) -> DictConfig:
    """Idempotent clean-up the trainer applies to any config (also one built in Python):
    ``'None'`` strings -> null, ``sessions: auto``, ``dataset_probability_val: auto``, interpolations."""
    for key in NULLABLE_KEYS:
        # Fix: the original's `init_checkpoint_path: None` is the string "None", not null.
        if OmegaConf.select(cfg, key, default=None) in ("None", "none", "null", ""):
            OmegaConf.update(cfg, key, None)
    ds = cfg.dataset
    if isinstance(ds.get("sessions"), str):
        if ds.sessions != "auto":
            raise ConfigError(f"dataset.sessions: expected a list of session names or 'auto', got {ds.sessions!r}")
        ds.sessions = list_sessions(ds.dataset_dir)
        if not ds.sessions:
            raise ConfigError(f"dataset.sessions: auto found no session folder under {ds.dataset_dir}")
        undated = [s for s in ds.sessions if session_date(s) is None]
        if undated:  # the day index is the list position: say how such a folder was placed (was silent)
            log.warning("dataset.sessions auto: %d folder name(s) not of the form <participant>.YYYY.MM.DD (e.g. %r, "
                        "day index %d): not a date, sessions are ordered by name", len(undated), undated[0],
                        list(ds.sessions).index(undated[0]))
    sessions = list(ds.sessions)
    if len(set(sessions)) != len(sessions):
        dup = sorted({s for s in sessions if sessions.count(s) > 1})
        raise ConfigError(f"dataset.sessions: session(s) listed twice: {dup}")
    flags = ds.get("dataset_probability_val", "auto")
    if flags is None or isinstance(flags, str):
        ds.dataset_probability_val = [int(data_file_path(ds.dataset_dir, s, "val").is_file()) for s in sessions]
    elif not isinstance(flags, ListConfig) or len(flags) != len(sessions):
        raise ConfigError(f"dataset.dataset_probability_val: expected {len(sessions)} flags (one per session) "
                          f"or 'auto', got {len(flags) if isinstance(flags, ListConfig) else flags!r}")
    _check_ints(cfg)
    return cfg


def check_training_data(cfg: DictConfig) -> None:
    """Checks of a training config against the data on disk, cheap enough to run before anything is written
    (a failed start must leave no ``output_dir`` behind: the corrected command would be refused as existing).

    Args:
        cfg: a normalised training config.

    Raises:
        ConfigError: no session has a ``data_train.hdf5``; ``dataset.days_per_batch`` exceeds the sessions that
            have one; the files' feature width is not ``model.n_input_features`` (or too narrow for
            ``dataset.feature_subset``); ``init_from_checkpoint`` without a readable ``init_checkpoint_path``.
    """
    ds = cfg.dataset
    train_files = [p for p in (data_file_path(ds.dataset_dir, s, "train") for s in ds.sessions) if p.is_file()]
    n_train = len(train_files)
    if cfg.get("mode", "train") == "train" and not n_train:
        raise ConfigError(f"dataset.dataset_dir {ds.dataset_dir}: no data_train.hdf5 for any of the {len(ds.sessions)} "
                          f"sessions (expected e.g. {data_file_path(ds.dataset_dir, ds.sessions[0], 'train')}; "
                          "python download_data.py, or python -m nejm_b2txt_utils.synthetic); nothing was created")
    days = ds.get("days_per_batch")
    if n_train and isinstance(days, int) and days > n_train:
        raise ConfigError(f"dataset.days_per_batch ({days}) exceeds the {n_train} days with data "
                          f"(sessions with a data_train.hdf5 under {ds.dataset_dir})")
    if n_train:
        _check_feature_width(cfg, train_files[0])
    ckpt_dir = Path(str(cfg.get("checkpoint_dir") or Path(str(cfg.output_dir)) / "checkpoint"))
    resuming = cfg.get("resume", False) and (ckpt_dir / "last_checkpoint").is_file()
    if cfg.get("mode", "train") == "train" and cfg.get("init_from_checkpoint", False) and not resuming:
        init = cfg.get("init_checkpoint_path")
        if not init:
            raise ConfigError("init_from_checkpoint is true but init_checkpoint_path is empty; expected a checkpoint "
                              "file (nothing was created)")
        if not Path(os.path.expanduser(str(init))).is_file():
            raise ConfigError(f"init_checkpoint_path {init}: file not found (nothing was created)")


def _check_feature_width(cfg: DictConfig, path: Path) -> None:
    """The first trial of ``path`` against ``model.n_input_features`` / ``dataset.feature_subset`` (one line)."""
    from nejm_b2txt_utils.t15_hdf5 import T15File

    with T15File(path, validate=False) as f:
        width = f.feature_width()
    if width is None:
        return
    subset = cfg.dataset.get("feature_subset")
    if subset:
        if max(subset) >= width:
            raise ConfigError(f"{path}: input_features are {width} wide, but dataset.feature_subset reaches channel "
                              f"{max(subset)}")
        return
    n = int(cfg.model.n_input_features)
    if width != n:
        raise ConfigError(f"{path}: input_features are {width} wide but model.n_input_features is {n}: set "
                          f"model.n_input_features={width} (or dataset.feature_subset)")


def resolved_container(cfg: DictConfig) -> DictConfig:
    """A copy with every interpolation resolved (what ``args.yaml`` stores)."""
    return OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))

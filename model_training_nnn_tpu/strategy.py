"""Finding the accelerator: ``create_tpu_strategy()`` and ``configure_mixed_precision()`` (spec §6.1-6.2).

Order tried (the spec's [DESIGN] correction of the fork's Kaggle address):

1. ``TF_CONFIG`` describing a cluster of more than one worker -> ``MultiWorkerMirroredStrategy``.
2. A TPU: an explicit ``tpu_address``; else, on a TPU VM (``/dev/accel*`` or ``/dev/vfio``, Kaggle's v5e-8 and
   Cloud TPU VMs) the resolver argument ``'local'``; then ``COLAB_TPU_ADDR`` (Colab, ``grpc://<addr>``),
   ``TPU_NAME``, and ``TPU_WORKER_ID`` (the old Kaggle TPU-Node address ``grpc://10.0.0.2:8470``). A grpc
   address is probed with a 2 s TCP connect and a TPU name needs the GCE metadata server, so a bogus
   variable fails in seconds instead of hanging in ``initialize_tpu_system``.
3. Several GPUs -> ``MirroredStrategy``; else the default strategy (one CPU or GPU replica).

Exactly one INFO line says which strategy and how many replicas ("Strategy: TPUStrategy, 8 replicas ...").
When a TPU was expected (a TPU variable or device is present) but could not be initialised, a WARNING
says so (the fork's silent "Training on 1 TPU cores"); ``require_tpu=True`` makes that an error.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import socket
from urllib.parse import urlparse

import tensorflow as tf

log = logging.getLogger(__name__)

TPU_ENV_VARS = ("TPU_NAME", "COLAB_TPU_ADDR", "TPU_WORKER_ID", "TPU_ACCELERATOR_TYPE", "TPU_WORKER_HOSTNAMES",
                "XRT_TPU_CONFIG", "TPU_PROCESS_ADDRESSES", "KAGGLE_URL_BASE", "KAGGLE_KERNEL_RUN_TYPE")
LEGACY_KAGGLE_TPU = "grpc://10.0.0.2:8470"
METADATA_SERVER = ("169.254.169.254", 80)


class TPUNotFoundError(RuntimeError):
    """``require_tpu`` was set and no TPU could be initialised."""


def _reachable(host: str, port: int, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def tpu_vm_present() -> bool:
    """Whether this host has TPU chips attached (a TPU VM: ``/dev/accel*`` or ``/dev/vfio``)."""
    return bool(glob.glob("/dev/accel*")) or os.path.isdir("/dev/vfio")


def tpu_candidates(tpu_address: str | None = None) -> list[tuple[str, str]]:
    """The TPU resolver arguments to try, in order, as ``(argument, where it came from)``.

    Args:
        tpu_address: an explicit address/name (config ``tpu_address``); when given, only it is tried.

    Returns:
        A possibly empty list; empty means nothing suggests a TPU here.
    """
    if tpu_address:
        return [(tpu_address, "tpu_address")]
    out = []
    if tpu_vm_present():
        out.append(("local", "TPU VM devices"))
    if os.environ.get("COLAB_TPU_ADDR"):
        out.append((f"grpc://{os.environ['COLAB_TPU_ADDR']}", "COLAB_TPU_ADDR (Colab)"))
    if os.environ.get("TPU_NAME"):
        out.append((os.environ["TPU_NAME"], "TPU_NAME"))
    if os.environ.get("TPU_WORKER_ID") is not None and not out:
        out.append((LEGACY_KAGGLE_TPU, f"TPU_WORKER_ID={os.environ['TPU_WORKER_ID']} (Kaggle TPU-Node address)"))
    return out


def _connect_tpu(address: str) -> tf.distribute.Strategy:
    """Resolve, connect, initialise; raises on any failure (after a fast reachability probe)."""
    if address.startswith("grpc://"):
        url = urlparse(address)
        if not _reachable(url.hostname or "", url.port or 8470):
            raise ConnectionError(f"{address} is not reachable")
    elif address not in ("local", ""):
        if not _reachable(*METADATA_SERVER, timeout=1.0):
            raise ConnectionError(f"TPU name {address!r} needs the GCE metadata server, which is not reachable")
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=address)
    if address not in ("local", ""):
        tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def _cluster_workers() -> int:
    try:
        cluster = json.loads(os.environ.get("TF_CONFIG", "") or "{}").get("cluster", {})
    except json.JSONDecodeError:
        log.warning("TF_CONFIG is not valid JSON; ignoring it")
        return 0
    return len(cluster.get("worker", [])) + len(cluster.get("chief", []))


def create_tpu_strategy(tpu_address: str | None = None, require_tpu: bool = False) -> tf.distribute.Strategy:
    """The best available ``tf.distribute`` strategy (see the module docstring for the order).

    Args:
        tpu_address: resolver argument to use instead of the detection (``'local'``, ``grpc://host:port``, a name).
        require_tpu: raise instead of falling back when no TPU could be initialised.

    Returns:
        A strategy; ``strategy.num_replicas_in_sync`` is the replica count.

    Raises:
        TPUNotFoundError: ``require_tpu`` and no TPU.
    """
    log.debug("Detecting TPU environment: %s",
              {k: os.environ[k] for k in TPU_ENV_VARS if k in os.environ} or "no TPU variables set")
    if _cluster_workers() > 1 and not require_tpu:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        log.info("Strategy: MultiWorkerMirroredStrategy, %d replicas (%d workers from TF_CONFIG)",
                 strategy.num_replicas_in_sync, _cluster_workers())
        return strategy
    tried = []
    for address, source in tpu_candidates(tpu_address):
        try:
            strategy = _connect_tpu(address)
        except Exception as exc:  # noqa: BLE001 (any resolver/runtime failure means: try the next one)
            tried.append(f"{address} from {source}: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}")
            continue
        log.info("Strategy: TPUStrategy, %d replicas (TPU %s from %s)", strategy.num_replicas_in_sync, address,
                 source)
        return strategy
    if tried:
        msg = "no TPU could be initialised (tried " + "; ".join(tried) + ")"
        if require_tpu:
            raise TPUNotFoundError(msg)
        log.warning("%s: falling back to CPU/GPU, expect much slower training", msg)
    elif require_tpu:
        raise TPUNotFoundError("require_tpu is set but nothing suggests a TPU here (no TPU device or variable)")
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        strategy = tf.distribute.MirroredStrategy()
        log.info("Strategy: MirroredStrategy, %d replicas (%d GPUs)", strategy.num_replicas_in_sync, len(gpus))
    else:
        strategy = tf.distribute.get_strategy()
        log.info("Strategy: default, 1 replica (%s)", "GPU" if gpus else "CPU")
    return strategy


def is_tpu(strategy: tf.distribute.Strategy) -> bool:
    """Whether ``strategy`` runs on TPU cores."""
    return isinstance(strategy, tf.distribute.TPUStrategy)


def configure_mixed_precision(precision: str) -> str:
    """Set the Keras global dtype policy.

    Args:
        precision: ``'bf16'`` (``mixed_bfloat16``: fp32 variables, bf16 compute, no loss scaling) or ``'fp32'``.

    Returns:
        The policy name now in force.

    Raises:
        ValueError: another value.
    """
    import keras

    names = {"bf16": "mixed_bfloat16", "fp32": "float32"}
    if precision not in names:
        raise ValueError(f"tf_precision: expected 'bf16' or 'fp32', got {precision!r}")
    keras.mixed_precision.set_global_policy(names[precision])
    return names[precision]

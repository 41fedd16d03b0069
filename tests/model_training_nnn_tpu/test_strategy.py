"""TPU detection falls back cleanly (seconds, one clear line) when TPU variables point nowhere."""

from __future__ import annotations

import logging
import time

import pytest
import tensorflow as tf

from model_training_nnn_tpu import strategy as st

TPU_VARS = ("TPU_NAME", "COLAB_TPU_ADDR", "TPU_WORKER_ID", "TF_CONFIG")


@pytest.fixture
def no_tpu_env(monkeypatch):
    for k in TPU_VARS:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setattr(st, "tpu_vm_present", lambda: False)
    return monkeypatch


def test_candidates_order(no_tpu_env):
    assert st.tpu_candidates() == []
    no_tpu_env.setenv("TPU_WORKER_ID", "0")
    assert st.tpu_candidates() == [(st.LEGACY_KAGGLE_TPU, "TPU_WORKER_ID=0 (Kaggle TPU-Node address)")]
    no_tpu_env.setenv("COLAB_TPU_ADDR", "10.1.2.3:8470")
    no_tpu_env.setenv("TPU_NAME", "my-tpu")
    assert [a for a, _ in st.tpu_candidates()] == ["grpc://10.1.2.3:8470", "my-tpu"]
    no_tpu_env.setattr(st, "tpu_vm_present", lambda: True)
    assert st.tpu_candidates()[0] == ("local", "TPU VM devices")
    assert st.tpu_candidates("grpc://h:1") == [("grpc://h:1", "tpu_address")]


def test_bogus_tpu_variables_fall_back_to_default(no_tpu_env, caplog):
    no_tpu_env.setenv("COLAB_TPU_ADDR", "127.0.0.1:9")  # nothing listens there
    no_tpu_env.setenv("TPU_NAME", "grpc://127.0.0.1:7")
    no_tpu_env.setenv("TPU_WORKER_ID", "0")
    caplog.set_level(logging.INFO, logger="model_training_nnn_tpu.strategy")
    t0 = time.time()
    strategy = st.create_tpu_strategy()
    assert time.time() - t0 < 15
    assert strategy.num_replicas_in_sync == 1 and not st.is_tpu(strategy)
    assert strategy is tf.distribute.get_strategy()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "no TPU could be initialised" in warnings[0] and "127.0.0.1:9" in warnings[0]
    infos = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Strategy:")]
    assert infos == ["Strategy: default, 1 replica (CPU)"]


def test_no_tpu_is_quiet_and_require_tpu_raises(no_tpu_env, caplog):
    caplog.set_level(logging.INFO, logger="model_training_nnn_tpu.strategy")
    assert st.create_tpu_strategy().num_replicas_in_sync == 1
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    with pytest.raises(st.TPUNotFoundError, match="nothing suggests a TPU"):
        st.create_tpu_strategy(require_tpu=True)
    with pytest.raises(st.TPUNotFoundError, match="127.0.0.1:9"):
        st.create_tpu_strategy("grpc://127.0.0.1:9", require_tpu=True)


def test_single_worker_tf_config_is_not_a_cluster(no_tpu_env):
    no_tpu_env.setenv("TF_CONFIG", '{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "worker", "index": 0}}')
    assert st.create_tpu_strategy().num_replicas_in_sync == 1
    no_tpu_env.setenv("TF_CONFIG", "{not json")
    assert st.create_tpu_strategy().num_replicas_in_sync == 1


def test_mixed_precision_policy():
    import keras

    assert st.configure_mixed_precision("bf16") == "mixed_bfloat16"
    assert keras.mixed_precision.global_policy().compute_dtype == "bfloat16"
    assert st.configure_mixed_precision("fp32") == "float32"
    with pytest.raises(ValueError, match="tf_precision"):
        st.configure_mixed_precision("fp16")

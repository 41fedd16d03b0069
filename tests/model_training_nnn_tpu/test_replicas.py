"""Two replicas (MirroredStrategy over two logical CPU devices) train exactly like one: the per-replica
slices of each batch, the all-reduced gradient and the global clipping give the same step.

The logical devices must exist before TensorFlow initialises, so the comparison runs in a fresh process
(``python -m tests.model_training_nnn_tpu.test_replicas DATA_ROOT OUT``), which prints one JSON line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _compare(data_root: Path, out: Path) -> dict:
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    from model_training_nnn_tpu.optim_tf import set_learning_rates
    from model_training_nnn_tpu.trainer_tf import TFTrainer
    from tests.model_training_nnn_tpu.conftest import tiny_tf_config

    res = {}
    for name, strategy in (("one", tf.distribute.get_strategy()),
                           ("two", tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))):
        cfg = tiny_tf_config(data_root, out / name, num_training_batches=3, **{
            "dataset.data_transforms.white_noise_std": 0, "dataset.data_transforms.constant_offset_std": 0,
            "model.input_network.input_layer_dropout": 0})  # no per-replica randomness
        trainer = TFTrainer(cfg, strategy=strategy)
        set_learning_rates(trainer.optimizers, trainer.args, 5)
        loss, norm = trainer._step_fn(next(iter(trainer._train_dataset())), tf.constant(5, tf.int64))
        res[name] = (float(loss), float(norm), [v.numpy() for v in trainer.variables], trainer.replicas,
                     trainer.shape.batch)
        trainer.close()
    one, two = res["one"], res["two"]
    return {"replicas": [one[3], two[3]], "rows_per_replica": [one[4], two[4]], "loss": [one[0], two[0]],
            "norm": [one[1], two[1]],
            "max_weight_diff": float(max(np.abs(a - b).max() for a, b in zip(one[2], two[2])))}


@pytest.mark.slow
def test_two_replicas_equal_one(tiny_data, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, "-m", "tests.model_training_nnn_tpu.test_replicas", str(tiny_data),
                           str(tmp_path)], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["replicas"] == [1, 2] and r["rows_per_replica"] == [8, 4]
    assert r["loss"][0] > 5 and abs(r["loss"][0] - r["loss"][1]) < 1e-4 * r["loss"][0]
    assert abs(r["norm"][0] - r["norm"][1]) < 1e-4 * r["norm"][0]
    assert r["max_weight_diff"] < 1e-6  # measured 1.5e-8


if __name__ == "__main__":
    print(json.dumps(_compare(Path(sys.argv[1]), Path(sys.argv[2]))))

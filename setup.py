"""Installs the shared library ``nejm_b2txt_utils`` (and the recipe packages) in editable mode.

``pip install -e .`` from the repository root; ``setup.sh`` / ``setup_lm.sh`` do this for you.
"""

from setuptools import find_packages, setup

setup(
    name="nejm_b2txt_utils",
    version="0.1.0",
    description="Brain-to-text: intracortical speech decoding (Card et al., NEJM 2024), pip-installable",
    packages=find_packages(include=["nejm_b2txt_utils", "nejm_b2txt_utils.*", "model_training",
                                    "model_training.*", "model_training_nnn", "model_training_nnn.*",
                                    "model_training_nnn_tpu", "model_training_nnn_tpu.*",
                                    "language_model", "language_model.*",
                                    "analyses", "analyses.*"]),
    python_requires=">=3.10",
)

"""nejm_b2txt_utils: the one shared library of the brain-to-text toolkit.

Modules: ``phonemes`` (41-class inventory, order conversion), ``text`` (normalisation),
``lexicon``/``g2p`` (sentence -> phoneme labels, offline), ``metrics`` (PER/WER, greedy CTC,
bootstrap CI), ``t15_hdf5`` (data format), ``description_csv``, ``redis_protocol`` (LM streams),
``redis_server`` (bundled redis-server), ``synthetic`` (realistic synthetic T15 data).
"""

__version__ = "0.1.0"

from nejm_b2txt_utils.checkout import warn_if_other_checkout as _warn_if_other_checkout

_warn_if_other_checkout()

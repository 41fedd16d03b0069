"""Language-model server (the original's entry point and name; spec §2-§4).

    python language_model/language-model-standalone.py --lm_path LM_DIR --redis_ip localhost [--do_opt ...]

All flags: ``--help``. The code lives in :mod:`language_model.serving` (server, protocols, message
handler, service) and :mod:`language_model.decoding` (WFST search, n-best, rescoring); the parameters in
:mod:`nejm_b2txt_utils.lm_params`.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # runnable as a plain script from the repository root, installed or not
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import logging

    from language_model.serving.server import main

    code = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # the server has stopped cleanly: skip the interpreter's teardown, ~10 s with torch loaded

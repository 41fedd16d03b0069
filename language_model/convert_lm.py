"""Convert a released LM into an n-gram store (once), for exact ``--exact_ngram`` / ``--rescore`` scoring.

    python language_model/convert_lm.py --arpa lm_dir/lm_no_prune.arpa.gz --out lm_dir/ngram_store
    python language_model/convert_lm.py --g_fst lm_dir/G_no_prune.fst --out lm_dir/ngram_store

With ``--arpa`` the file is streamed line by line (per-order scratch arrays on disk beside ``--out``); with
``--g_fst`` the FST is read through a memmap and ``words.txt`` is taken from its folder unless ``--words``
says otherwise. The server picks the store up from the LM folder (``<lm_path>/ngram_store``) at start-up.
The store is written into a temporary folder beside ``--out`` and moved there only when complete: a failed or
interrupted (Ctrl-C) conversion leaves no ``--out`` folder behind, and a store already at ``--out`` stays as it
was until the new one replaces it. ``--out`` must be missing, empty or a store (a folder of other files is
refused, never deleted).
Prints one JSON line: counts, bytes on disk, bytes per n-gram, seconds, peak RSS.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import logging
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from language_model.graph.fst_io import FstReadError  # noqa: E402
from language_model.ngram.store import StoreError, check_store  # noqa: E402
from language_model.ngram.store_convert import ConvertError, arpa_to_store, g_fst_to_store  # noqa: E402
from language_model.ngram.store_writer import check_store_target  # noqa: E402
from nejm_b2txt_utils.cli_errors import ConfigError, check_output_folder, exit_2_on_bad_input  # noqa: E402
from nejm_b2txt_utils.memory import peak_rss_mb  # noqa: E402

log = logging.getLogger("convert_lm")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The flags.

    Args:
        argv: the command line (default ``sys.argv[1:]``).

    Returns:
        The parsed flags.
    """
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--arpa", type=Path, help="an ARPA file (.gz read compressed)")
    src.add_argument("--g_fst", type=Path, help="a grammar FST written by kaldilm arpa2fst (G_no_prune.fst)")
    p.add_argument("--words", type=Path, help="the FST's words.txt (default: beside --g_fst)")
    p.add_argument("--out", type=Path, required=True, help="the store folder, normally <lm folder>/ngram_store")
    p.add_argument("--scratch", type=Path, help="folder for the ARPA's scratch arrays (default: beside --out)")
    p.add_argument("--check", action="store_true", help="re-read every array of the written store (sorted "
                   "siblings, offsets); the writer already checks, so this only guards the disk")
    return p.parse_args(argv)


def warn_if_other_words(g_fst: Path, words: Path) -> bool:
    """Warn when ``--words`` is not the ``words.txt`` beside the FST while that one exists and differs: a
    words.txt of another LM with as many symbols converts without an error into a store of wrong words (was
    silent).

    Args:
        g_fst: the FST file.
        words: the symbol table to be used.

    Returns:
        Whether a warning was logged.
    """
    beside = g_fst.parent / "words.txt"
    if not beside.is_file() or beside.resolve() == words.resolve() or filecmp.cmp(beside, words, shallow=False):
        return False
    log.warning("--words %s differs from %s beside the FST: if it is another LM's words.txt the store's words "
                "are wrong (a grammar's labels only mean something with its own words.txt)", words, beside)
    return True


@exit_2_on_bad_input(ConvertError, StoreError, FstReadError, FileNotFoundError, ValueError)
def main(argv: list[str] | None = None) -> int:
    """Convert, then print a JSON summary.

    Args:
        argv: the flags.

    Returns:
        0 on success; 2 with one line on stderr for bad input (any unreadable value in the inputs: ValueError);
        130 on Ctrl-C.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    log.info("options: %s", {k: str(v) for k, v in vars(args).items()})
    t0 = time.perf_counter()
    source = args.arpa if args.arpa is not None else args.g_fst
    if not source.is_file():
        raise ConfigError(f"{source}: not found (or not a file)")
    if args.out.exists() and not args.out.is_dir():
        raise ConfigError(f"--out {args.out}: is a file; expected a folder to write the store into")
    check_output_folder("--out", args.out)  # below a file: one line (was a FileExistsError traceback)
    if args.scratch is not None:
        check_output_folder("--scratch", args.scratch)
        args.scratch.mkdir(parents=True, exist_ok=True)
    check_store_target(args.out)  # a folder of other files is refused (the new store replaces --out)
    if args.arpa is not None:
        out = arpa_to_store(args.arpa, args.out, args.scratch)
    else:
        words = args.words or args.g_fst.parent / "words.txt"
        if not words.is_file():
            raise ConfigError(f"{words}: not found; --g_fst needs the FST's words.txt (--words)")
        warn_if_other_words(args.g_fst, words)
        out = g_fst_to_store(args.g_fst, words, args.out)
    header = check_store(out, deep=args.check)
    n = sum(header["counts"])
    size = sum(header["files"].values())
    summary = {"store": str(out), "order": header["order"], "counts": header["counts"], "bytes": size,
               "bytes_per_ngram": round(size / max(n, 1), 2), "seconds": round(time.perf_counter() - t0, 2),
               "peak_rss_mb": peak_rss_mb()}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())

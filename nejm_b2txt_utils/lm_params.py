"""The LM server's parameters: one table, and everything derived from it.

Each row of :data:`PARAMS` gives a parameter's name, type, default, valid range, help and whether a client
may change it at run time (``remote_lm_update_params``; spec LM §2.2, §3.1). From the table come

* the command-line flags of ``language-model-standalone.py`` (:func:`add_arguments`),
* :class:`LMParams`, the validated values the decoder, the service and the server read,
* the ``remote_lm_args`` entry (:meth:`LMParams.redis_args`: ``lm_path`` plus the run-time rows),
* the checks of the start-up flags and of every ``remote_lm_update_params`` message
  (:meth:`LMParams.updated`): unknown names, values that do not parse, out-of-range or non-finite values
  raise :class:`LMParamError` naming the field, the value and the valid range; nothing changes.

Ranges are closed intervals unless ``low_open``; every int lies within the int32 range (the original's C++
decoder read them as ``int``), every float must be finite.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, make_dataclass, replace
from pathlib import Path
from typing import Any

__all__ = ["Param", "PARAMS", "BY_NAME", "UPDATABLE_PARAMS", "DOCUMENTED_INVOCATION", "LMParams", "LMParamError",
           "add_arguments", "check_update_names", "documented_flags"]

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


class LMParamError(ValueError):
    """A parameter value (flag or update message) outside its row of the table; the message names the
    field, the value and the valid range."""


@dataclass(frozen=True)
class Param:
    """One row of the table.

    Attributes:
        name: flag name without ``--`` and field name in ``remote_lm_args``/``remote_lm_update_params``.
        type: ``int``, ``float`` or ``str``.
        default: the value when neither flag nor update gives one.
        help: the flag's help text (units where there are any).
        low, high: valid range (ints default to the int32 limits; ``None`` = unbounded float).
        low_open: ``low`` itself is not allowed (``> low``).
        runtime: a client may change it with ``remote_lm_update_params`` (one of the original's 14).
        switch: on the command line a ``store_true`` flag; the value is 0 or 1.
        choices: the allowed strings of a ``str`` row.
    """

    name: str
    type: type
    default: Any
    help: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    runtime: bool = False
    switch: bool = False
    choices: tuple[str, ...] | None = None

    def range_text(self) -> str:
        """The valid range as the error messages print it.

        Returns:
            e.g. ``a finite number in (0, inf)``, ``a whole number in [2, 2147483647]`` or ``one of auto, on, off``.
        """
        if self.choices:
            return "one of " + ", ".join(self.choices)
        low, high = self._bounds()
        left = "(" if self.low_open else "["
        right = "]" if math.isfinite(high) else ")"
        kind = "a whole number" if self.type is int else "a finite number"
        return f"{kind} in {left}{_fmt(low)}, {_fmt(high)}{right}"

    def _bounds(self) -> tuple[float, float]:
        if self.type is int:
            return (INT32_MIN if self.low is None else self.low), (INT32_MAX if self.high is None else self.high)
        return (-math.inf if self.low is None else self.low), (math.inf if self.high is None else self.high)

    def check(self, value: Any) -> Any:
        """Convert ``value`` (a number, a numeric string or bytes) to the row's type and check its range.

        Args:
            value: the raw value (from argparse, a Python caller or a Redis field).

        Returns:
            The value as ``int``/``float``/``str``.

        Raises:
            LMParamError: it does not parse, is not a whole number for an int row, is not finite, or is out
                of range; the message names the field, the value and the range.
        """
        text = value.decode(errors="replace") if isinstance(value, bytes) else value
        if self.type is str:
            if self.choices and text not in self.choices:
                raise LMParamError(f"{self.name}={text!r}: expected {self.range_text()}")
            return text
        try:
            number = float(text) if not isinstance(text, bool) else float(int(text))
        except (TypeError, ValueError):
            raise LMParamError(f"{self.name}={text!r}: expected {self.range_text()}") from None
        low, high = self._bounds()
        ok = math.isfinite(number) and (number > low if self.low_open else number >= low) and number <= high
        if self.type is int:
            ok = ok and number.is_integer()
        if not ok:
            raise LMParamError(f"{self.name}={text!r}: expected {self.range_text()}")
        return int(number) if self.type is int else number


def _fmt(x: float) -> str:
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return str(int(x)) if float(x).is_integer() else str(x)


# Defaults are the original service's effective values (spec §3.2); run-time rows in the original's order.
PARAMS: tuple[Param, ...] = (
    Param("max_active", int, 7000, "max active tokens of the streaming search", low=2, runtime=True),
    Param("min_active", int, 200, "min active tokens of the streaming search (<= max_active)", low=0,
          runtime=True),
    # beams are float32 in the C++ decoder: beyond ~3.4e38 they became inf and segfaulted it (found by hand)
    Param("beam", float, 17.0, "search beam (cost units, nats x acoustic_scale)", low=0, high=1000, low_open=True,
          runtime=True),
    Param("lattice_beam", float, 8.0,
          "lattice / n-best pruning beam (cost units); at most 20: the n-best extraction grows exponentially with "
          "it (20-word toy graph, one clean sentence: 20 -> 0.2 s, 30 -> 1.2 s, 35 -> 13 s, 40 -> over 30 s)",
          low=0, high=20, low_open=True, runtime=True),
    Param("acoustic_scale", float, 0.3, "acoustic scale applied to the log-probabilities", low=0, low_open=True,
          runtime=True),
    Param("ctc_blank_skip_threshold", float, 1.0,
          "skip frames whose blank probability exceeds this (1.0 = never)", low=0, high=1, low_open=True,
          runtime=True),
    Param("length_penalty", float, 0.0, "causal-LM penalty per token (nats)", runtime=True),
    Param("nbest", int, 100, "number of distinct candidate sentences", low=1, runtime=True),
    Param("blank_penalty", float, 9.0, "ln(blank_penalty) is subtracted from the blank log-probability", low=0,
          low_open=True, runtime=True),
    Param("alpha", float, 0.5, "causal-LM weight in [0, 1] (1 - alpha weighs the n-gram)", low=0, high=1,
          runtime=True),
    Param("do_opt", int, 0, "rescore the n-best with a causal LM (--opt_model)", low=0, high=1, runtime=True,
          switch=True),
    Param("rescore", int, 0, "rescore the n-best with the unpruned G_no_prune.fst", low=0, high=1, runtime=True,
          switch=True),
    Param("top_candidates_to_augment", int, 20,
          "augmentation window (single-word swaps between the top candidates)", low=0, runtime=True),
    Param("score_penalty_percent", float, 0.01, "score penalty of augmented candidates (fraction)", low=0,
          runtime=True),
    # ---- start-up only (additions)
    Param("lattice_pass_margin", float, 5.0,
          "the finalize lattice pass searches with min(beam, lattice_beam + this): kaldi-decoder's lattice "
          "decoder has no max_active, which bounded the original's effective beam (see decoding/wfst.py)",
          low=0, high=1000, low_open=True),
    Param("beam_acoustic_scale", float, 0.0,
          "the acoustic scale the search beams (beam and the lattice pass's beam) are given at: they are "
          "multiplied by acoustic_scale / this, so they keep their acoustic width when the scale is tuned "
          "(0: beams in cost units at any scale, the original)", low=0),
    Param("lattice_pass_max_beam", float, 17.0,
          "hard ceiling (cost units) of the finalize lattice pass's beam, after lattice_pass_margin and "
          "beam_acoustic_scale: that decoder has no max_active, and its work grows about tenfold per 4 cost units "
          "on ambiguous input; with max_frames_per_utterance it bounds the search, not the tokens per frame of "
          "uninformative logits (see decoding/wfst.py)", low=0, high=1000, low_open=True),
    Param("lattice_max_arcs", int, 3000,
          "bounded finalize work (added): a finalize whose lattice at beam lattice_beam has more arcs than this "
          "(ambiguous logits) skips the wider lattice pass and extracts the n-best from its best arcs only (the "
          "lattice beam narrows); at most this many arcs reach the n-best extraction (see decoding/wfst.py)",
          low=100),
    Param("gpu_number", int, 0, "CUDA device for the causal LM; -1 or no CUDA: CPU", low=-1),
    Param("llm_batch_size", int, 0, "causal-LM batch size (0: the whole n-best at once)", low=0),
    Param("llm_scoring", str, "tree",
          "causal-LM scoring: tree = the n-best's shared token prefixes computed once (one pass, same scores); "
          "batch = the original's padded batch", choices=("tree", "batch")),
    Param("llm_threads", int, 0, "torch CPU threads for the causal LM (0: torch's default)", low=0, high=1024),
    Param("llm_prune", int, 0,
          "1: with llm_scoring tree, candidates that provably cannot win are not scored to the end (same best "
          "sentence; a dropped candidate reports the upper bound of its LLM score that dropped it as llm, and "
          "the total from it, below the best; costs a second forward pass, which on the 1-gram's 100-best "
          "outweighs what it drops); 0: every candidate scored (the original)", low=0, high=1),
    Param("llm_top_k", int, 50,
          "the causal LM rescores (and the final message lists) only the first pass's best K candidates of the "
          "augmented n-best, by acoustic_scale*ac + ngram: the 1-gram's ~137 candidates feed ~380 prefix-tree "
          "nodes, the best 50 ~150; 0: every candidate (the original)", low=0),
    Param("llm_dtype", str, "auto",
          "causal-LM weights: auto = float16 on CUDA, bfloat16 on a CPU with AMX or AVX512-BF16, else float32 "
          "(the log-softmax is float32 in all cases)", choices=("auto", "float32", "bfloat16", "float16")),
    Param("exact_ngram", int, 1,
          "1: finalize replaces each sentence's n-gram score by the ARPA's exact one (G.fst with failure "
          "semantics); 0: the search's best path through the backoff epsilons (the original; it can beat the "
          "ARPA where backoff weights exceed 1)", low=0, high=1),
    Param("redis_port", int, 6379, "Redis port", low=1, high=65535),
    Param("redis_db", int, 0, "Redis database number", low=0),
    Param("num_workers", int, 1, "worker processes (they share the loaded graph copy-on-write)", low=1,
          high=1024),
    Param("max_sessions", int, 1, "multi-client utterances one worker holds at a time", low=1),
    Param("claim_timeout_s", float, 30.0,
          "a multi-client utterance whose worker is silent this long (s) is taken over by another worker",
          low=0, low_open=True),
    Param("session_timeout_s", float, 120.0, "drop a multi-client utterance idle this long (s)", low=0,
          low_open=True),
    Param("max_frames_per_utterance", int, 3750,
          "longest utterance accepted, in 80 ms frames (3750 = 5 min, 10x the longest T15 trial); a chunk "
          "beyond it is answered with an error: bounds the finalize time and the memory of one request", low=1),
    Param("max_pending_per_client", int, 64,
          "multi-client utterances one client may have waiting; more are answered with an error at once", low=1),
    Param("request_input_timeout_s", float, 5.0,
          "a multi-client request whose input has not started this long (s) is answered with an error and "
          "dropped; requests wait unclaimed until their input arrives, so they never hold a worker", low=0,
          low_open=True),
    Param("legacy", str, "auto",
          "serve the original single-client streams: auto = exactly one process per Redis does (a lock key)",
          choices=("auto", "on", "off")),
    Param("multi_client", str, "on", "serve the multi-client (consumer group) streams", choices=("on", "off")),
)
BY_NAME: dict[str, Param] = {p.name: p for p in PARAMS}
#: Parameters a client may change through ``remote_lm_update_params`` (and reported in ``remote_lm_args``).
UPDATABLE_PARAMS: tuple[str, ...] = tuple(p.name for p in PARAMS if p.runtime)
#: The original README's documented LM server invocation (``--nbest 100 --acoustic_scale 0.325
#: --blank_penalty 90 --alpha 0.55``): the demo's server flags, the weights a tuned file is compared with and
#: the benchmarks' settings. Every other parameter keeps its table default.
DOCUMENTED_INVOCATION: dict[str, int | float] = {"nbest": 100, "acoustic_scale": 0.325, "blank_penalty": 90.0,
                                                 "alpha": 0.55}


def documented_flags(**overrides: int | float) -> list[str]:
    """:data:`DOCUMENTED_INVOCATION` as server flags, e.g. ``['--nbest', '100', '--acoustic_scale', '0.325', ...]``.

    Args:
        overrides: values replacing (or added to) the documented ones, by parameter name.

    Returns:
        ``--name value`` pairs in table order.

    Raises:
        LMParamError: an override that is not a row of the table.
    """
    values = {**DOCUMENTED_INVOCATION, **overrides}
    unknown = sorted(set(values) - set(BY_NAME))
    if unknown:
        raise LMParamError(f"unknown LM parameter(s) {unknown}")
    flags: list[str] = []
    for p in PARAMS:
        if p.name in values:
            value = values[p.name]
            flags += [f"--{p.name}", f"{value:g}" if isinstance(value, float) else str(value)]
    return flags


class _LMParamsMethods:
    """Methods of :class:`LMParams` (its fields come from :data:`PARAMS`)."""

    def __post_init__(self) -> None:
        for p in PARAMS:
            object.__setattr__(self, p.name, p.check(getattr(self, p.name)))
        if self.min_active >= self.max_active:  # Kaldi's FasterDecoder aborts the process when they are equal
            raise LMParamError(f"min_active={self.min_active}: expected < max_active ({self.max_active})")

    @classmethod
    def from_namespace(cls, args: argparse.Namespace) -> LMParams:
        """The values of an argparse namespace built by :func:`add_arguments` (switches become 0/1).

        Raises:
            LMParamError: a value is out of range.
        """
        return cls(**{p.name: int(getattr(args, p.name)) if p.switch else getattr(args, p.name) for p in PARAMS})

    def runtime_values(self) -> dict[str, int | float]:
        """The run-time rows (the original's 14), by name."""
        return {name: getattr(self, name) for name in UPDATABLE_PARAMS}

    def redis_args(self, lm_path: str) -> dict[str, str | int | float]:
        """The ``remote_lm_args`` entry: ``lm_path`` plus the 14 run-time values."""
        return {"lm_path": lm_path, **self.runtime_values()}

    def updated(self, entry: Mapping[bytes | str, Any], allowed_extra: tuple[str, ...] = ()) -> LMParams:
        """Apply a ``remote_lm_update_params`` entry (or a multi-client request's overrides).

        Args:
            entry: field -> value, as bytes from Redis or as Python values.
            allowed_extra: other field names to skip silently (e.g. ``utt_id``).

        Returns:
            A new :class:`LMParams`; ``self`` is unchanged.

        Raises:
            LMParamError: an unknown or start-up-only field, or a value that does not parse or is out of range.
                Nothing is applied (the original crashed or kept a half-applied update).
        """
        changes: dict[str, Any] = {}
        unknown = []
        for raw_key, raw_val in entry.items():
            key = raw_key.decode(errors="replace") if isinstance(raw_key, bytes) else str(raw_key)
            if key in allowed_extra:
                continue
            if key not in UPDATABLE_PARAMS:
                unknown.append(key)
                continue
            try:
                changes[key] = BY_NAME[key].check(raw_val)
            except LMParamError as exc:
                raise LMParamError(f"update_params: {exc}") from None
        check_update_names(unknown)
        try:
            return replace(self, **changes)
        except LMParamError as exc:
            raise LMParamError(f"update_params: {exc}") from None

    def as_dict(self) -> dict[str, Any]:
        """Every value, by name."""
        return asdict(self)


#: The validated parameter values (frozen dataclass; one field per :data:`PARAMS` row, same defaults).
LMParams = make_dataclass(
    "LMParams",
    [(p.name, p.type, field(default=p.default)) for p in PARAMS],
    bases=(_LMParamsMethods,),
    frozen=True,
)
LMParams.__module__ = __name__


def check_update_names(names) -> None:
    """Raise :class:`LMParamError` if any of ``names`` is not a run-time parameter.

    Args:
        names: field names of an update message.

    Raises:
        LMParamError: naming the unknown fields and listing the valid ones.
    """
    unknown = sorted(n for n in names if n not in UPDATABLE_PARAMS)
    if unknown:
        raise LMParamError(f"update_params: unknown field(s) {unknown}; expected any of {list(UPDATABLE_PARAMS)}")


def load_params_file(path: str | os.PathLike) -> dict[str, Any]:
    """Parameter values from a JSON file (``language_model/tune_weights.py`` output, whose ``params`` object is
    used, or a plain ``{name: value}`` object), checked against the table.

    Args:
        path: the file.

    Returns:
        ``{name: value}`` (converted to the rows' types).

    Raises:
        LMParamError: unreadable file, not an object, unknown names or values out of range (one line).
    """
    import json

    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LMParamError(f"params file {path}: {exc}") from None
    values = obj.get("params", obj) if isinstance(obj, dict) else None
    if not isinstance(values, dict):
        raise LMParamError(f"params file {path}: expected a JSON object of LM parameters")
    unknown = sorted(set(values) - set(BY_NAME))
    if unknown:
        raise LMParamError(f"params file {path}: unknown parameter(s) {unknown}")
    for k, v in values.items():  # JSON has types: true for nbest or "0.5" for a number is a mistake, not a 1 / 0.5
        if BY_NAME[k].type is not str and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise LMParamError(f"params file {path}: {k}={json.dumps(v)}: expected a JSON number "
                               f"({BY_NAME[k].range_text()})")
        if BY_NAME[k].type is str and not isinstance(v, str):
            raise LMParamError(f"params file {path}: {k}={json.dumps(v)}: expected a JSON string "
                               f"({BY_NAME[k].range_text()})")
    try:
        return {k: BY_NAME[k].check(v) for k, v in values.items()}
    except LMParamError as exc:
        raise LMParamError(f"params file {path}: {exc}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one ``--<name>`` flag per :data:`PARAMS` row (type, default and help from the table).

    Args:
        parser: the parser to extend; range checks happen later in :class:`LMParams` so that the error
            names the range.
    """
    for p in PARAMS:
        help_text = p.help if p.switch else f"{p.help} (default {p.default}; {p.range_text()})"
        if p.switch:
            parser.add_argument(f"--{p.name}", action="store_true", help=help_text)
        elif p.choices:
            parser.add_argument(f"--{p.name}", choices=p.choices, default=p.default, help=help_text)
        else:
            parser.add_argument(f"--{p.name}", type=str if p.type is str else _raw_number, default=p.default,
                                help=help_text)


def _raw_number(text: str) -> str:
    return text  # parsed and range-checked by LMParams, so that the error names the field and its range

"""One message handler for both protocols (the original single-client streams and the multi-client group).

A protocol reads an entry from Redis, decides which kind of message it is (:data:`RESET`, :data:`UPDATE`,
:data:`LOGITS`, :data:`FINALIZE`) and calls :func:`handle_message` with the utterance's :class:`Session`;
it gets back the reply fields and only adds its own framing (which stream, ``kind``/``chunk``).

Bad input is answered, never fatal: every field of every message is checked (:func:`check_fields`: the
fields a kind may carry; the update values against the parameter table), and a rejected message changes
nothing. Malformed logits (unknown or missing field, empty, byte length, NaN/Inf, a ``dtype``/``shape`` field that
does not fit, values no float32 logits have) get an ``error`` field (with
an empty ``lm_response_partial``, so the original's client keeps working), a bad update or reset gets ``error``
on its ack, a rejected or failed finalize answers an empty result with ``error``. Anything else that goes
wrong while handling a message (a bug) is logged with its traceback and answered the same way: one message
never stops the server.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from language_model.decoding.wfst import CtcWfstDecoder, search_settings
from language_model.serving.service import LMService
from nejm_b2txt_utils.lm_params import LMParams
from nejm_b2txt_utils.phonemes import N_CLASSES
from nejm_b2txt_utils.redis_protocol import LMProtocolError, decode_logits

log = logging.getLogger(__name__)

RESET, UPDATE, LOGITS, FINALIZE = "reset", "update", "logits", "finalize"
#: The fields a reset, finalize or logits message may carry (an update's are the parameter table's run-time
#: rows). The value of ``done`` is ignored, as by the original (its client sends 0).
MESSAGE_FIELDS = {RESET: ("done",), FINALIZE: ("done",), LOGITS: ("logits", "dtype", "shape")}  # dtype, shape: optional


@dataclass
class Session:
    """One utterance's state: its decoder, its parameters and the last partial sent."""

    decoder: CtcWfstDecoder
    params: LMParams
    last_partial: str = ""


def open_session(service: LMService, params: LMParams) -> Session:
    """A session with a fresh decoder.

    Args:
        service: the process's loaded resources.
        params: the session's parameters.

    Returns:
        The new :class:`Session`.
    """
    return Session(service.new_decoder(params), params)


def updated_params(service: LMService, params: LMParams, fields: Mapping[bytes, bytes],
                   allowed_extra: tuple[str, ...] = ()) -> LMParams:
    """``params`` with an update entry applied, and what it switches on loaded.

    Args:
        service: loads the causal LM / grammars a switched-on stage needs.
        params: the current parameters.
        fields: the update entry (or a multi-client request's overrides).
        allowed_extra: request fields that are not parameters (skipped).

    Returns:
        The new parameters.

    Raises:
        LMParamError: an unknown field or a bad value (nothing applied).
        FileNotFoundError, LLMUnavailableError: a switched-on stage cannot load (fixed: the original crashed
            at the next finalize).
    """
    new = params.updated(fields, allowed_extra)
    service.ensure_components(new)
    return new


def check_fields(kind: str, fields: Mapping[bytes, bytes], source: str = "input") -> None:
    """Check the field names of a reset, finalize or logits message (and that ``logits`` is not empty).

    Args:
        kind: :data:`RESET`, :data:`FINALIZE` or :data:`LOGITS`.
        fields: the entry's fields as read from Redis.
        source: the stream name, named in the error of a logits message.

    Raises:
        LMProtocolError: an unknown field, a missing ``logits`` or an empty one; the message names them and
            the fields expected.
    """
    allowed = MESSAGE_FIELDS[kind]
    names = [k.decode(errors="replace") if isinstance(k, bytes) else str(k) for k in fields]
    unknown = sorted(n for n in names if n not in allowed)
    where = source if kind == LOGITS else kind
    if unknown or (kind == LOGITS and "logits" not in names):
        raise LMProtocolError(f"{where}: unknown field(s) {unknown}; expected only {allowed[0]!r}"
                              + (" (and the optional 'dtype', 'shape')" if kind == LOGITS else ""))
    if kind == LOGITS and not fields.get(b"logits", fields.get("logits")):
        raise LMProtocolError(f"{where}: 'logits' is 0 bytes; expected T >= 1 frames of {4 * N_CLASSES} bytes "
                              f"(float32 x {N_CLASSES} classes)")


def _error_reply(kind: str, message: str, context: str = "") -> dict[str, str | int]:
    """The reply of a rejected message: the kind's usual fields, empty, plus ``error``."""
    if kind == LOGITS:
        return {"lm_response_partial": "", "error": message}
    if kind == FINALIZE:
        return {"lm_response_final": "", "scoring": "", "context_str": context, "error": message}
    return {"done": 1, "error": message}


def handle_message(service: LMService, session: Session, kind: str, fields: Mapping[bytes, bytes],
                   source: str = "input", context: str = "") -> dict[str, str | int]:
    """Apply one message to ``session`` and return the reply fields.

    Args:
        service: the process's loaded resources.
        session: the utterance (its decoder and parameters change in place).
        kind: :data:`RESET`, :data:`UPDATE`, :data:`LOGITS` or :data:`FINALIZE`.
        fields: the entry's fields as read from Redis.
        source: the stream name, for error messages.
        context: the context string (``FINALIZE`` only).

    Returns:
        ``{"done": 1}`` (reset, update), ``{"lm_response_partial": ...}`` (logits) or the three
        ``remote_lm_output_final`` fields (finalize); plus ``error`` when the message was rejected.

    Raises:
        ValueError: ``kind`` is none of the four (a bug in the caller, not bad input).
    """
    if kind not in (RESET, UPDATE, LOGITS, FINALIZE):
        raise ValueError(f"handle_message: unknown message kind {kind!r}")
    try:
        if kind != UPDATE:
            check_fields(kind, fields, source)
    except LMProtocolError as exc:
        log.warning("rejected %s message: %s", kind, exc)
        return _error_reply(kind, str(exc), context)
    try:
        return _apply(service, session, kind, fields, context)
    except Exception as exc:  # a bug: keep its traceback in the log, answer it, keep serving
        log.exception("%s message failed", kind)
        return _error_reply(kind, f"{kind}: internal error: {type(exc).__name__}: {exc}", context)


def _apply(service: LMService, session: Session, kind: str, fields: Mapping[bytes, bytes],
           context: str) -> dict[str, str | int]:
    """:func:`handle_message` once the fields are checked."""
    if kind == RESET:
        session.decoder.reset()
        session.last_partial = ""
        log.info("reset")
        return {"done": 1}
    if kind == UPDATE:
        try:
            new = updated_params(service, session.params, fields)
        except Exception as exc:  # a bad update must not stop the server
            log.warning("rejected parameter update: %s", exc)
            return {"done": 1, "error": str(exc)}
        if search_settings(new) != search_settings(session.params):
            try:
                session.decoder.set_options(new)  # fixed: the beam flags now really apply
            except Exception as exc:  # the search refused the settings: keep the old ones
                session.decoder.set_options(session.params)
                log.warning("rejected parameter update: %s", exc)
                return {"done": 1, "error": f"update_params: {type(exc).__name__}: {' '.join(str(exc).split())}"}
        session.params = new
        log.info("updated parameters: %s", new.runtime_values())
        return {"done": 1}
    if kind == LOGITS:
        try:
            partial = session.decoder.accept_logits(decode_logits(fields[b"logits"], fields.get(b"dtype"), fields.get(b"shape")))
        except (LMProtocolError, ValueError) as exc:
            log.warning("rejected logits: %s", exc)
            return {"lm_response_partial": "", "error": str(exc)}
        if partial != session.last_partial:
            log.info("partial: %s", partial)
            session.last_partial = partial
        return {"lm_response_partial": partial}
    if kind == FINALIZE:
        if context:
            log.info("context for LLM rescoring: %r", context)
        session.last_partial = ""
        try:
            return service.finalize(session.decoder, session.params, context).fields()
        except Exception as exc:  # answer instead of dying (the original crashed, e.g. nbest 1)
            log.exception("finalize failed")
            return {"lm_response_final": "", "scoring": "", "context_str": context, "error": f"finalize: {exc}"}
    raise AssertionError(kind)  # checked by handle_message

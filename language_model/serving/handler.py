"""One message handler for both protocols (the original single-client streams and the multi-client group).

A protocol reads an entry from Redis, decides which kind of message it is (:data:`RESET`, :data:`UPDATE`,
:data:`LOGITS`, :data:`FINALIZE`) and calls :func:`handle_message` with the utterance's :class:`Session`;
it gets back the reply fields and only adds its own framing (which stream, ``kind``/``chunk``).

Bad input is answered, never fatal: malformed logits (byte length, NaN/Inf, unknown field) get an ``error``
field (with an empty ``lm_response_partial``, so the original's client keeps working), a bad update gets
``error`` on its ack and changes nothing, a failed finalize answers an empty result with ``error``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from language_model.decoding.wfst import CtcWfstDecoder, search_settings
from language_model.serving.service import LMService
from nejm_b2txt_utils.lm_params import LMParams
from nejm_b2txt_utils.redis_protocol import LMProtocolError, decode_logits

log = logging.getLogger(__name__)

RESET, UPDATE, LOGITS, FINALIZE = "reset", "update", "logits", "finalize"


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
            session.decoder.set_options(new)  # fixed: the beam flags now really apply
        session.params = new
        log.info("updated parameters: %s", new.runtime_values())
        return {"done": 1}
    if kind == LOGITS:
        try:
            extra = sorted(k.decode(errors="replace") for k in fields if k != b"logits")
            if extra or b"logits" not in fields:
                raise LMProtocolError(f"{source}: unknown field(s) {extra}; expected only 'logits'")
            partial = session.decoder.accept_logits(decode_logits(fields[b"logits"]))
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
    raise ValueError(f"handle_message: unknown message kind {kind!r}")

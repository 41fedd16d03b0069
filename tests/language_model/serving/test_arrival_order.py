"""The single-client streams' entries are handled in the order the client sent them (issue 13 case 2):
:func:`arrival_order` against a simulation of pipelined clients, with every split into milliseconds."""

from __future__ import annotations

import itertools

import pytest

from language_model.serving.handler import FINALIZE, LOGITS, RESET, UPDATE
from language_model.serving.legacy import arrival_order


def _ids(sent: list[tuple[str, int]]) -> list[tuple[str, bytes]]:
    """Stream IDs Redis gives entries sent in this order, each with its millisecond."""
    seq: dict[tuple[str, int], int] = {}
    out = []
    for kind, ms in sent:
        n = seq.get((kind, ms), 0)
        seq[(kind, ms)] = n + 1
        out.append((kind, f"{ms}-{n}".encode()))
    return out


def _serve(entries: list[tuple[str, bytes]]) -> list[str]:
    """The server loop: take the first pending entry of each stream, handle the one arrival_order puts first."""
    queues = {k: [e for e in entries if e[0] == k] for k in (RESET, UPDATE, LOGITS, FINALIZE)}
    last, handled = FINALIZE, []
    while any(queues.values()):
        pending = {k: q[0][1] for k, q in queues.items() if q}
        kind = arrival_order(pending, last)[0]
        handled.append(queues[kind].pop(0))
        last = last if kind == UPDATE else kind
    return [k for k, _ in handled]


def _finals(kinds: list[str]) -> list[int]:
    """What each finalize decodes: the number of logits chunks since the last reset (or finalize)."""
    frames, finals = 0, []
    for k in kinds:
        if k == RESET:
            frames = 0
        elif k == LOGITS:
            frames += 1
        elif k == FINALIZE:
            finals.append(frames)
            frames = 0
    return finals


def _pipelines():
    one = [RESET, LOGITS, FINALIZE]
    yield one  # the case
    yield [RESET, UPDATE, LOGITS, LOGITS, LOGITS, FINALIZE]  # chunks of one utterance
    yield one * 4  # several utterances back to back
    yield [RESET, UPDATE, LOGITS, FINALIZE] + one * 2 + [UPDATE] + one


@pytest.mark.parametrize("kinds", list(_pipelines()))
def test_pipelines_are_served_in_the_order_sent_for_every_millisecond_split(kinds):
    """Every way of cutting the pipeline into (up to 3) consecutive milliseconds decodes what was sent."""
    expected = _finals(kinds)
    n = len(kinds)
    for cuts in itertools.combinations(range(1, n), min(2, n - 1)):
        for used in ((), cuts[:1], cuts):
            ms = [sum(i >= c for c in used) for i in range(n)]
            served = _serve(_ids(list(zip(kinds, ms))))
            assert _finals(served) == expected, (used, served)


def test_waiting_clients_are_served_in_order():
    kinds = [RESET, LOGITS, FINALIZE, UPDATE, RESET, LOGITS, LOGITS, FINALIZE]
    assert _serve(_ids([(k, i) for i, k in enumerate(kinds)])) == kinds  # one entry per millisecond


def test_ties_follow_the_protocol():
    tie = {RESET: b"7-0", UPDATE: b"7-0", LOGITS: b"7-0", FINALIZE: b"7-0"}
    assert arrival_order(tie, FINALIZE) == [RESET, UPDATE, LOGITS, FINALIZE]
    assert arrival_order(tie, RESET) == [UPDATE, LOGITS, FINALIZE, RESET]
    assert arrival_order(tie, LOGITS) == [UPDATE, FINALIZE, RESET, LOGITS]  # this finalize, then the next reset
    # chunks of one utterance in one millisecond come before its finalize, whatever their sequence numbers
    assert arrival_order({LOGITS: b"7-3", FINALIZE: b"7-0"}, LOGITS) == [LOGITS, FINALIZE]
    assert arrival_order({LOGITS: b"8-0", FINALIZE: b"7-5"}, LOGITS) == [FINALIZE, LOGITS]
    # ... and before a reset that comes in a later millisecond
    assert arrival_order({LOGITS: b"7-1", FINALIZE: b"7-0", RESET: b"8-0"}, LOGITS) == [LOGITS, FINALIZE, RESET]

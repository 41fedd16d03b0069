"""Real-time decoding: bins -> streaming model -> logits frame by frame to the LM server -> partial/final text.

    for each event of a bin source (model_training.bin_sources):
        Bin         -> StreamingModel.push -> Frame (every 4 bins) -> LM partial (remote_lm_input, LM order)
                       -> EndpointRule.update -> end of speech?  -> finalize (remote_lm_finalize) -> Sentence
        SentenceEnd -> finalize if speech has not ended yet (the trial-end fallback)

Between sentences (and only there) the decoder runs the ``on_sentence_end`` callbacks, reads
``decoderControl:stream`` (key ``newModelPath``) and applies a model given to :meth:`RealtimeDecoder.load_model`,
so an online recalibration can swap weights without touching a sentence in progress. Each finished
:class:`Sentence` keeps the raw bins the decoder accepted (``features [T, C]``), its day and the model that
decoded it, which is what ``model_training/recalibrate_online.py`` trains on (``finished_sentences.py``). Every finished
sentence is handed to ``on_sentence`` at once (the entry point appends it to a JSONL file), so a Redis or LM
restart mid-sentence loses at most that sentence's wait: the LM session is rebuilt (reset + the frames so
far in one message) and decoding goes on.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from model_training.streaming import StreamingModel
from nejm_b2txt_utils.causal_features import BadBinError, check_bin
from nejm_b2txt_utils.endpoint import EndpointRule
from nejm_b2txt_utils.metrics import ctc_greedy_decode
from nejm_b2txt_utils.phonemes import model_ids_to_phonemes, model_to_lm_order
from nejm_b2txt_utils.redis_protocol import DECODER_CONTROL_STREAM, NEW_MODEL_PATH_FIELD

log = logging.getLogger(__name__)

CONTROL_STREAM = DECODER_CONTROL_STREAM
NEW_MODEL_KEY = NEW_MODEL_PATH_FIELD.encode()  # redis-py returns field names as bytes


@dataclass
class Bin:
    """One 20 ms bin: ``values`` (raw; checked by the decoder), day-layer index, sentence id, arrival time,
    where it came from (for error lines) and the sentence's reference text when a replay knows it (scoring only)."""

    values: object
    day: int  # a non-int (a malformed entry) is reported and the bin skipped
    sentence: str | None  # None: the entry named no sentence; it belongs to the open one
    arrival: float
    where: str = "bin"
    label: str | None = None


@dataclass
class SentenceEnd:
    """The trial is over (fallback end of speech); ``label`` is the reference sentence when known (it replaces
    one a bin gave). ``sentence`` None: the open sentence ends."""

    sentence: str | None
    label: str | None = None
    arrival: float = 0.0


@dataclass
class SourceError:
    """The source could not give a trial or entry (unreadable, wrong width): reported as one ``error:`` line and
    skipped; decoding goes on with the next one."""

    where: str
    message: str


@dataclass
class Sentence:
    """A finished sentence and its timings (ms; ``perf_counter`` based)."""

    sentence: str
    text: str
    reason: str  # "end_of_speech" or "trial_end"
    n_frames: int
    final_ms: float  # from the end-of-speech decision (or the trial's last bin) to the final text
    label: str | None = None
    partials: list[str] = field(default_factory=list)
    frame_model_ms: list[float] = field(default_factory=list)
    frame_lm_ms: list[float] = field(default_factory=list)
    frame_age_ms: list[float] = field(default_factory=list)  # newest bin's age when its partial was shown
    logits: np.ndarray | None = None  # [n_frames, 41] model order
    candidates: dict | None = None
    features: np.ndarray | None = None  # [T, C] float32: the raw bins the decoder accepted
    day: int = 0  # the day-layer index it was decoded on
    model_path: str | None = None  # the checkpoint folder that decoded it (None: the start model, unnamed)

    def record(self) -> dict:
        """The JSON-able summary (no logits, no bins)."""
        return {"sentence": self.sentence, "text": self.text, "label": self.label, "reason": self.reason,
                "day": self.day, "model_path": self.model_path,
                "n_frames": self.n_frames, "final_ms": round(self.final_ms, 3),
                "frame_model_ms": [round(v, 3) for v in self.frame_model_ms],
                "frame_lm_ms": [round(v, 3) for v in self.frame_lm_ms],
                "frame_age_ms": [round(v, 3) for v in self.frame_age_ms], "partials": self.partials}


class LiveView:
    """The partial text rewritten in place on one stderr line, the final text on its own line; silent when
    the stream is not a terminal (or ``enabled`` is False)."""

    def __init__(self, stream=None, enabled: bool | None = None):
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled

    def partial(self, text: str) -> None:
        """Show ``text`` (its last 200 characters) in place of the previous partial."""
        if self.enabled:
            self.stream.write("\r\x1b[K" + text[-200:])
            self.stream.flush()

    def final(self, sentence: str, text: str) -> None:
        """Replace the partial line by ``[sentence id] final text`` and a newline."""
        if self.enabled:
            self.stream.write(f"\r\x1b[K[{sentence}] {text}\n")
            self.stream.flush()

    def message(self, line: str) -> None:
        """A line of its own (an error), not overwritten by the next partial nor mixed into a progress bar."""
        if self.enabled:
            self.stream.write("\r\x1b[K")
        tqdm.write(line, file=self.stream)


class GreedyText:
    """The LM-less stand-in: greedy CTC phonemes of the frames so far (no server)."""

    def start(self) -> None:
        """Begin a sentence."""
        self.frames: list[np.ndarray] = []

    def frame(self, logits_model: np.ndarray) -> str:
        """One ``[41]`` model-order frame -> the greedy phonemes of the sentence so far."""
        self.frames.append(logits_model)
        return " ".join(model_ids_to_phonemes(ctc_greedy_decode(np.stack(self.frames))))

    def finish(self) -> tuple[str, dict | None]:
        """The final greedy phonemes and no candidates."""
        return (" ".join(model_ids_to_phonemes(ctc_greedy_decode(np.stack(self.frames)))) if self.frames else ""), None


class StreamingLM:
    """One sentence at a time on the LM server's original streams (``RemoteLMClient``), frame by frame.

    A lost Redis connection or an LM timeout mid-sentence is retried up to ``retries`` times: the client
    resynchronises, resets the utterance and sends the frames so far as one message (the server's partial
    decoding of a chunk equals that of its frames sent one by one).
    """

    def __init__(self, client, retries: int = 3):
        self.client = client
        self.retries = retries

    def _retry(self, step: Callable[[], object]):
        import redis

        from nejm_b2txt_utils.redis_protocol import LMTimeoutError

        for attempt in range(self.retries + 1):
            try:
                return step()
            except (LMTimeoutError, redis.ConnectionError, redis.TimeoutError) as exc:
                if attempt == self.retries:
                    raise LMTimeoutError(f"LM server or Redis gone mid-sentence after {self.retries} retries: "
                                         f"{exc}") from exc
                log.warning("LM request failed mid-sentence (%s); rebuilding the utterance (retry %d/%d)",
                            str(exc).split(":")[0], attempt + 1, self.retries)
                time.sleep(min(2.0, 0.2 * 2**attempt))
                try:
                    self.client.sync_time()
                    self.client.reset()
                    if self.frames:
                        self.client.send_logits(np.stack(self.frames))
                except (LMTimeoutError, redis.ConnectionError, redis.TimeoutError):
                    continue  # counted as this attempt; the next one rebuilds again
        raise AssertionError("unreachable")

    def start(self) -> None:
        """Reset the utterance on the server (``remote_lm_reset``)."""
        self.frames: list[np.ndarray] = []
        self._retry(self.client.reset)

    def frame(self, logits_model: np.ndarray) -> str:
        """Send one ``[41]`` model-order frame in LM order (``remote_lm_input``); returns the server's partial.

        Raises:
            LMTimeoutError: no answer after ``retries`` rebuilds of the utterance.
            LMProtocolError: the server rejected the frame.
        """
        lm = model_to_lm_order(logits_model[None, :])  # (1, 41) LM order
        partial = self._retry(lambda: self.client.send_logits(lm))
        self.frames.append(lm[0])
        return partial

    def finish(self) -> tuple[str, dict]:
        """``remote_lm_finalize``: the best sentence and the parsed candidates (``parse_scoring``)."""
        candidates = self._retry(self.client.finalize)
        return candidates["candidate_sentences"][0], candidates


class RealtimeDecoder:
    """Runs a bin source through the streaming model, the LM and the end-of-speech rule.

    Args:
        stream: the :class:`StreamingModel`.
        text: :class:`StreamingLM` (LM server) or :class:`GreedyText` (none).
        endpoint: the end-of-speech rule (None: the trial end only).
        view: the live terminal view.
        control: a redis-py client polled between sentences for ``decoderControl:stream`` / ``newModelPath``.
        model_loader: ``path -> model`` or ``path -> (model, args.yaml)`` used by :meth:`load_model`; with
            the args, the day count and the session list follow the new model (a recalibrated one has a day more).
        n_days: day-layer count (a bin's ``day`` must be below it; after a swap: the new model's).
        session: decode every sentence as this session (the bins' ``day`` is ignored): its index in ``sessions``,
            or while the model does not know it, the nearest earlier session's (``calibration.nearest_day``);
            a swapped-in model that knows it (online recalibration added its day) uses its own index.
        sessions: the model's ``dataset.sessions`` (needed with ``session``).
        model_path: the start model's folder, recorded in each :class:`Sentence` (then the swapped-in paths).
        load_in_background: load an announced checkpoint in a thread and swap it in at the first sentence start
            after it is ready (a load of a large checkpoint at a sentence start would delay that sentence's frames);
            False: load it at the next sentence start.
    """

    def __init__(self, stream: StreamingModel, text, endpoint: EndpointRule | None = None,
                 view: LiveView | None = None, control=None, model_loader: Callable | None = None,
                 n_days: int | None = None, session: str | None = None, sessions: Sequence[str] | None = None,
                 model_path: str | None = None, load_in_background: bool = False):
        self.stream, self.text, self.endpoint = stream, text, endpoint
        self.view = view or LiveView(enabled=False)
        self.control, self.model_loader, self.n_days = control, model_loader, n_days
        self.session, self.sessions, self.model_path = session, list(sessions or []), model_path
        if session is not None and not self.sessions:
            raise ValueError("RealtimeDecoder: session given without the model's sessions")
        self.session_day = self._session_day()
        self.load_in_background = load_in_background
        self._loading: tuple | None = None  # (path, thread, [result]) of a model loading in the background
        self.on_sentence_end: list[Callable[[Sentence], None]] = []
        self.pending_model = None
        self.bad_bins = 0
        if control is not None:
            from nejm_b2txt_utils.redis_protocol import redis_time_ms

            self.control_last = redis_time_ms(control)

    def _session_day(self) -> int | None:
        """The day index of ``session`` under the current model (None: no session given; use the bins' days)."""
        if self.session is None:
            return None
        if self.session in self.sessions:
            return self.sessions.index(self.session)
        from model_training.calibration import nearest_day

        day = nearest_day(self.sessions, self.session)
        log.info("session %s is not one of the model's %d; decoding it on day %d (%s) until a model knows it",
                 self.session, len(self.sessions), day, self.sessions[day])
        return day

    def load_model(self, model_or_path) -> None:
        """Use this model (or the checkpoint folder at this path) from the next sentence start on."""
        self.pending_model = model_or_path

    def _poll_control(self) -> None:
        """Read ``decoderControl:stream``: each ``newModelPath`` becomes the pending model (the newest wins)."""
        if self.control is None:
            return
        import redis

        try:
            resp = self.control.xread({CONTROL_STREAM: self.control_last}, count=100, block=None)
        except (redis.ConnectionError, redis.TimeoutError):
            resp = None
        for entry_id, fields in (resp[0][1] if resp else []):
            self.control_last = entry_id
            if NEW_MODEL_KEY in fields:
                self.load_model(fields[NEW_MODEL_KEY].decode())

    def _load(self, path: str):
        """``(model, args or None)`` from the loader, or the exception it raised."""
        try:
            loaded = self.model_loader(path)
        except Exception as exc:  # a bad checkpoint must not stop the decoder: keep the current model
            return exc
        return loaded if isinstance(loaded, tuple) else (loaded, None)

    def _between_sentences(self) -> None:
        """Apply the pending model: loaded now, or (``load_in_background``) swapped in once its thread is done."""
        self._poll_control()
        if self._loading is not None and not self._loading[1].is_alive():
            (path, _, box), self._loading = self._loading, None
            self._apply(path, box[0])
        if self.pending_model is None or self._loading is not None:
            return
        model, self.pending_model = self.pending_model, None
        if not isinstance(model, str):
            self._apply(None, (model, None))
        elif self.model_loader is None:
            self.view.message(f"error: {CONTROL_STREAM}: newModelPath {model!r} given but no model loader")
        elif self.load_in_background:
            box: list = [None]
            thread = threading.Thread(target=lambda: box.__setitem__(0, self._load(model)), daemon=True,
                                      name="model-loader")
            thread.start()
            self._loading = (model, thread, box)
        else:
            self._apply(model, self._load(model))

    def _apply(self, path: str | None, loaded) -> None:
        """Use ``loaded`` = ``(model, args or None)`` from now on (or report the loader's exception)."""
        if isinstance(loaded, Exception):
            self.view.message(f"error: newModelPath {path!r}: {loaded}; keeping the current model")
            return
        model, model_args = loaded
        self.stream.set_model(model)
        self.model_path = path
        if model_args is not None:
            self.sessions = list(model_args.dataset.sessions)
            self.n_days = len(self.sessions)
            self.session_day = self._session_day()
        elif self.n_days is not None and getattr(model, "n_days", None):
            self.n_days = int(model.n_days)
        log.info("model swapped between sentences%s", f": {path}" if path else "")

    def run(self, events: Iterable[Bin | SentenceEnd]) -> Iterator[Sentence]:
        """Decode every sentence of ``events``; yields each :class:`Sentence` as soon as it is final.

        A bin is checked before it may open, close or label a sentence: wrong width, NaN/Inf or implausible
        features, a day that is not an int, a day other than its sentence's first bin's (mid-sentence) or not a
        day-layer index: one ``error:`` line and the bin is skipped. A bin with no sentence id belongs to the open
        sentence (none open: skipped with one line); a :class:`SentenceEnd` without an id ends the open one, and
        its label, when it has one, replaces the one the bins gave.
        """
        current: Sentence | None = None
        bin_day = 0  # the day the open sentence's bins carry
        done: set[str] = set()  # sentences finalised by the end-of-speech rule, their remaining bins ignored
        frames: list[np.ndarray] = []
        bins: list[np.ndarray] = []  # the accepted raw bins of the current sentence, each [C]
        for ev in events:
            if isinstance(ev, SourceError):
                self._reject(f"error: {ev.where}: {ev.message}")
                continue
            if isinstance(ev, SentenceEnd):
                if current is not None and ev.sentence in (None, current.sentence):  # no id: the open sentence
                    current.label = ev.label or current.label  # the end marker's label wins when it has one
                    yield self._finish(current, frames, bins, "trial_end", ev.arrival)
                    current = None
                done.discard(ev.sentence)
                continue
            sid = ev.sentence
            if sid is None:  # no sentence field: a bin of the open sentence
                if current is None:
                    self._reject(f"error: {ev.where}: no sentence id and no sentence open; bin skipped")
                    continue
                sid = current.sentence
            if sid in done:
                continue
            try:  # checked before it may open, close or label a sentence
                values = check_bin(ev.values, self.stream.n_channels, ev.where)
            except BadBinError as exc:
                self._reject(f"error: {exc}; bin skipped")
                continue
            if isinstance(ev.day, bool) or not isinstance(ev.day, (int, np.integer)):
                self._reject(f"error: {ev.where}: day {ev.day!r}: expected an int day-layer index; bin skipped")
                continue
            if current is not None and current.sentence == sid and ev.day != bin_day:
                self._reject(f"error: {ev.where}: day {ev.day} differs from sentence {sid!r}'s day "
                             f"{bin_day}; bin skipped")
                continue
            if current is not None and current.sentence != sid:  # a new id without an end marker
                yield self._finish(current, frames, bins, "trial_end", ev.arrival)
                current = None
            if current is None:
                self._between_sentences()  # first: a swapped-in model may know one more day
                if self.session is None and self.n_days is not None and not 0 <= ev.day < self.n_days:
                    self._reject(f"error: {ev.where}: day {ev.day} is not a day-layer index 0..{self.n_days - 1}"
                                 "; bin skipped")
                    continue
                bin_day = int(ev.day)  # the day every bin of this sentence must carry
                day = bin_day if self.session_day is None else self.session_day
                self.stream.reset(day)
                self.text.start()
                if self.endpoint is not None:
                    self.endpoint.reset()
                current = Sentence(sid, "", "", 0, 0.0, label=ev.label, day=day, model_path=self.model_path)
                frames, bins = [], []
            current.label = current.label or ev.label  # the prompt may come with any bin of the sentence
            frame = self.stream.push(values, ev.where)
            bins.append(values)
            if frame is None:
                continue
            t0 = time.perf_counter()
            partial = self.text.frame(frame.logits)
            shown = time.perf_counter()
            self.view.partial(partial)
            frames.append(frame.logits)
            current.partials.append(partial)
            current.frame_model_ms.append(frame.model_ms)
            current.frame_lm_ms.append((shown - t0) * 1000.0)
            current.frame_age_ms.append((shown - ev.arrival) * 1000.0)
            if self.endpoint is not None and self.endpoint.update(frame.logits):
                done.add(current.sentence)
                yield self._finish(current, frames, bins, "end_of_speech", time.perf_counter())
                current = None
        if current is not None:
            yield self._finish(current, frames, bins, "trial_end", time.perf_counter())

    def _reject(self, line: str) -> None:
        """Count a skipped bin and show its one ``error:`` line."""
        self.bad_bins += 1
        self.view.message(line)

    def _finish(self, s: Sentence, frames: list[np.ndarray], bins: list[np.ndarray], reason: str,
                t_end: float) -> Sentence:
        s.text, s.candidates = self.text.finish()
        s.final_ms = (time.perf_counter() - t_end) * 1000.0
        s.reason, s.n_frames = reason, len(frames)
        s.logits = np.stack(frames) if frames else np.zeros((0, 41), dtype=np.float32)
        s.features = np.stack(bins) if bins else np.zeros((0, self.stream.n_channels), dtype=np.float32)  # (T, C)
        self.view.final(s.sentence, s.text)
        self.stream.end_sentence()
        for callback in self.on_sentence_end:
            callback(s)
        if self.load_in_background:  # start loading an announced model during the gap between sentences
            self._between_sentences()
        return s

"""End-of-speech detection on streamed CTC logits (Kaldi-style trailing-silence rule).

Speech ends once at least ``min_speech_frames`` frames have had a non-silence phoneme as their best class
and, after the last of them, the probability of BLANK + SIL has stayed at or above ``silence_prob`` for
``trailing_ms`` of frames in a row. A frame whose best class is a phoneme breaks the tail; a frame whose
silence probability is below the threshold without a phoneme winning (noise) also breaks it. Logits are in
model order (BLANK=0, SIL=40). The trial end is the caller's fallback.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from nejm_b2txt_utils.phonemes import BLANK_ID, N_CLASSES, SIL_ID_MODEL

FRAME_MS = 80.0


@dataclass
class EndpointRule:
    """One sentence's end-of-speech state; :meth:`update` once per 80 ms frame, :meth:`reset` per sentence.

    Args:
        trailing_ms: silence needed after speech (ms; rounded up to whole frames).
        silence_prob: the BLANK + SIL probability a frame needs to count as silence (0..1).
        min_speech_frames: frames with a phoneme as best class needed before silence can end speech.
        frame_ms: the frame period (ms).
    """

    trailing_ms: float = 800.0
    silence_prob: float = 0.9
    min_speech_frames: int = 1
    frame_ms: float = FRAME_MS
    speech_frames: int = field(default=0, init=False)
    silent_run: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if not self.trailing_ms > 0:
            raise ValueError(f"trailing_ms: expected > 0, got {self.trailing_ms}")
        if not 0.0 < self.silence_prob <= 1.0:
            raise ValueError(f"silence_prob: expected 0 < p <= 1, got {self.silence_prob}")
        if self.min_speech_frames < 1:
            raise ValueError(f"min_speech_frames: expected >= 1, got {self.min_speech_frames}")

    @property
    def trailing_frames(self) -> int:
        """Silent frames needed (``ceil(trailing_ms / frame_ms)``)."""
        return math.ceil(self.trailing_ms / self.frame_ms - 1e-9)

    def reset(self) -> None:
        """Start a new sentence."""
        self.speech_frames = 0
        self.silent_run = 0

    def update(self, logits: np.ndarray) -> bool:
        """Take one frame; True once speech has ended (and on every later frame until :meth:`reset`).

        Args:
            logits: ``[41]`` model-order logits of one 80 ms frame.

        Returns:
            Whether the end of speech has been reached.

        Raises:
            ValueError: not 41 values.
        """
        z = np.asarray(logits, dtype=np.float64).reshape(-1)
        if z.shape[0] != N_CLASSES:
            raise ValueError(f"logits: expected {N_CLASSES} model-order values, got {z.shape[0]}")
        p = np.exp(z - z.max())
        p /= p.sum()
        best = int(np.argmax(z))
        silent = p[BLANK_ID] + p[SIL_ID_MODEL] >= self.silence_prob
        if best not in (BLANK_ID, SIL_ID_MODEL):
            self.speech_frames += 1
            self.silent_run = 0
        elif silent and self.speech_frames >= self.min_speech_frames:
            self.silent_run += 1
        else:
            self.silent_run = 0
        return self.ended

    @property
    def ended(self) -> bool:
        """Whether the trailing-silence rule has fired."""
        return self.speech_frames >= self.min_speech_frames and self.silent_run >= self.trailing_frames

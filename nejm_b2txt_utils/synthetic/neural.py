"""The neural encoding model: phoneme sequence -> 512 features per 20 ms bin, with day drift.

Electrodes: 256 on 4 arrays of 64 (ventral 6v, area 4, 55b, dorsal 6v; 55b weakly tuned, as in the
paper). Columns: 256 threshold-crossing counts, then 256 spike-band powers, same electrode order.

Per trial:
1. Timing (:func:`plan_timing`): a pre-speech delay (baseline), phonemes of ~60-200 ms drawn per
   phoneme around a per-class mean and a per-trial speaking rate, pauses (SIL) after words, a tail.
2. Articulatory trajectory ``F [T, D]`` (:mod:`.phonetics`) plus a per-phoneme random identity code,
   and two condition-independent signals: a preparatory ramp before speech onset and a speech flag.
3. Electrode ``e`` projects ``F`` on its tuning vector and filters the result with its own temporal
   kernel (a Gaussian bump or, for a quarter of electrodes, a biphasic transient; 15 bins spanning
   200 ms lead to 80 ms lag), so each bin mixes neighbouring phonemes (coarticulation).
4. Log firing rate = baseline + depth x response + session offset + shared slow latent noise;
   threshold crossings are Poisson counts; spike-band power is ``exp`` of a smoother, less noisy
   copy of the log rate, correlated with the counts' own fluctuations.

Day drift (:class:`SessionEncoder`), all as Gaussian processes over post-implant days with
exponential covariance (an Ornstein-Uhlenbeck random walk, sampled exactly at any day with random
Fourier features), so nearby sessions are similar and distant ones differ:
* each electrode's tuning = a stable part + a drifting part (the recorded units change);
* all tuning vectors rotate together inside the articulatory code space (``rotation``): the same
  population pattern comes to mean a different articulation, which a shared decoder cannot undo
  but a per-day linear input layer can (without it, per-electrode drift alone leaves a pooled linear
  decoder as good as per-day ones, and day layers do not help);
* per-session per-channel gain and offset; electrodes die progressively (a dead electrode stays
  dead); a few noisy channels per session.

Normalisation (:func:`normalise_block`): every channel is z-scored per block, as the original's
released features are believed to be (their scale suits a white-noise augmentation of std 1.0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import expm
from scipy.signal import lfilter

from nejm_b2txt_utils.synthetic import phonetics

N_ELECTRODES = 256
N_ARRAYS = 4
ARRAY_NAMES = ("ventral 6v", "area 4", "55b", "dorsal 6v")
BIN_MS = 20.0
_KERNEL_LEN = 15
_KERNEL_LEAD = 10  # bins of the kernel that look ahead (neural activity precedes articulation)
_N_LATENT = 3
_FOURIER = 48
_FIRST_DAY = 25


@dataclass(frozen=True)
class NeuralParams:
    """Knobs of the encoding model (the defaults are tuned with benchmarks/synthetic_learnability.py)."""

    depth: float = 0.6  # log-rate modulation depth of a typical tuned electrode
    array_scales: tuple[float, float, float, float] = (1.0, 0.7, 0.15, 0.8)
    identity_dim: int = 8  # per-phoneme random code beyond the articulatory features
    identity_scale: float = 0.6
    base_rate: float = 0.7  # mean threshold crossings per 20 ms bin at rest
    sbp_noise: float = 0.45  # std of spike-band power's own log noise
    latent_noise: float = 0.15  # std of the shared slow fluctuations of the log rate
    drift_fraction: float = 0.6  # share of tuning variance that drifts over days
    drift_tau_days: float = 200.0  # correlation time of the drift
    rotation: float = 0.4  # scale of the day-drifting rotation of the articulatory code (shared by electrodes)
    gain_sd: float = 0.25  # per-session per-channel log-gain of the modulation depth
    offset_sd: float = 0.3  # per-session per-channel log-rate offset
    dead_start: float = 0.02  # fraction of dead electrodes on the first session ...
    dead_end: float = 0.10  # ... and on day 636
    noisy_per_session: float = 3.0  # mean number of noisy electrodes per session
    phoneme_ms_scale: float = 1.6  # multiplies the per-class mean phoneme durations
    pause_ms: float = 400.0  # mean pause after a word (with the above: ~70 words/min)
    delay_s: tuple[float, float] = (0.5, 1.5)  # pre-speech delay range
    tail_s: tuple[float, float] = (0.3, 0.7)


@dataclass
class Timing:
    """Where each label sits in a trial (bins, fractional)."""

    ids: np.ndarray  # model-order ids of the segments (phonemes and SIL)
    starts: np.ndarray
    ends: np.ndarray
    onset: float  # speech onset (bin)
    offset: float  # end of the last word's last phoneme (bin)
    n_bins: int
    n_words: int

    @property
    def words_per_minute(self) -> float:
        return self.n_words / max(self.offset - self.onset, 1e-6) / (BIN_MS / 1000.0) * 60.0


def plan_timing(labels: list[int], rng: np.random.Generator, params: NeuralParams = NeuralParams()) -> Timing:
    """Durations for model-order ``labels`` (phonemes with a SIL=40 after each word)."""
    sil = phonetics.SIL_MODEL_ID
    rate = float(np.exp(rng.normal(0.0, 0.12)))
    onset = rng.uniform(*params.delay_s) * 1000.0 / BIN_MS
    t = onset
    starts, ends = [], []
    for i, pid in enumerate(labels):
        if pid == sil:
            last = i == len(labels) - 1
            dur = (rng.uniform(*params.tail_s) * 1000.0 if last
                   else params.pause_ms * rate * rng.gamma(4.0, 0.25))
        else:
            mean = phonetics.MEAN_DURATION_MS[pid] * params.phoneme_ms_scale * rate
            dur = float(np.clip(mean * rng.gamma(8.0, 0.125), 50.0, 320.0))
        starts.append(t)
        t += max(dur, 40.0) / BIN_MS
        ends.append(t)
    ids = np.asarray(labels, dtype=np.int64)
    speech_end = ends[-2] if len(labels) > 1 else onset
    n_bins = int(np.ceil(t))
    return Timing(ids, np.asarray(starts), np.asarray(ends), onset, speech_end, n_bins,
                  int(np.sum(ids == sil)))


def _phoneme_codes(seed: int, params: NeuralParams) -> tuple[np.ndarray, np.ndarray]:
    """Onset/offset tables ``[41, D]``: articulatory features + speech/prep + identity code."""
    rng = np.random.default_rng([seed, 0x1D])
    ident = rng.normal(0.0, params.identity_scale, (phonetics.ONSET.shape[0], params.identity_dim))
    ident[phonetics.SIL_MODEL_ID] *= 0.3
    extra = np.zeros((phonetics.ONSET.shape[0], 1))  # column for the preparatory ramp
    onset = np.hstack([phonetics.ONSET, ident, extra])
    offset = np.hstack([phonetics.OFFSET, ident, extra])
    return onset, offset


class SessionEncoder:
    """The electrodes as they are on one day: tuning, kernels, gains, dead and noisy channels.

    Everything is a function of ``(seed, post_implant_day)``, so a session looks the same whichever
    preset or prefix generates it.
    """

    def __init__(self, seed: int, post_implant_day: int, params: NeuralParams = NeuralParams()):
        self.params = params
        self.day = int(post_implant_day)
        p = params
        self.onset_codes, self.offset_codes = _phoneme_codes(seed, p)
        dim = self.onset_codes.shape[1]
        # --- constant over days
        rng = np.random.default_rng([seed, 0xE1])
        arrays = np.repeat(np.arange(N_ARRAYS), N_ELECTRODES // N_ARRAYS)
        depth = p.depth * np.asarray(p.array_scales)[arrays] * rng.lognormal(0.0, 0.4, N_ELECTRODES)
        stable = rng.normal(0.0, 1.0, (N_ELECTRODES, dim)) / np.sqrt(dim / 4.0)
        speech_col = phonetics.FEATURES.index("speech")
        cond_indep = rng.normal(0.6, 0.5, N_ELECTRODES)
        prep = rng.normal(0.3, 0.4, N_ELECTRODES)
        self.log_base = np.log(p.base_rate) + rng.normal(0.0, 0.6, N_ELECTRODES)
        self.kernels = self._kernels(rng)
        death = rng.uniform(0.0, 1.0, N_ELECTRODES)
        self.latent_loadings = rng.normal(0.0, p.latent_noise, (N_ELECTRODES, _N_LATENT))
        # --- drift: random Fourier features of an exponential-covariance process over days
        omega = np.abs(rng.standard_cauchy(_FOURIER)) / p.drift_tau_days
        phase = rng.uniform(0.0, 2.0 * np.pi, _FOURIER)
        amps = rng.normal(0.0, 1.0, (_FOURIER, N_ELECTRODES, dim)) / np.sqrt(dim / 4.0)
        basis = np.sqrt(2.0 / _FOURIER) * np.cos(omega * self.day + phase)
        drifting = np.tensordot(basis, amps, axes=1)
        tuning = np.sqrt(1.0 - p.drift_fraction) * stable + np.sqrt(p.drift_fraction) * drifting
        if p.rotation > 0:  # all tuning vectors rotate together inside the articulatory code space
            rot_cols = [c for c in range(dim - 1) if c != speech_col]
            gen = rng.normal(0.0, 1.0, (_FOURIER, len(rot_cols), len(rot_cols)))
            g = np.tensordot(basis, gen, axes=1)
            tuning[:, rot_cols] = tuning[:, rot_cols] @ expm(p.rotation * (g - g.T) / np.sqrt(2.0))
        tuning[:, speech_col] = cond_indep
        tuning[:, -1] = prep
        # --- this day only
        day_rng = np.random.default_rng([seed, 0xDA7, self.day])
        gain = np.exp(day_rng.normal(0.0, p.gain_sd, N_ELECTRODES))
        self.tuning = tuning * (depth * gain)[:, None]
        self.log_base = self.log_base + day_rng.normal(0.0, p.offset_sd, N_ELECTRODES)
        frac = np.clip((self.day - _FIRST_DAY) / (636 - _FIRST_DAY), 0.0, 1.0)
        self.dead = death < p.dead_start + (p.dead_end - p.dead_start) * frac
        self.noisy = np.zeros(N_ELECTRODES, dtype=bool)
        self.noisy[day_rng.choice(N_ELECTRODES, min(N_ELECTRODES, day_rng.poisson(p.noisy_per_session)),
                                  replace=False)] = True
        self.noisy &= ~self.dead

    @staticmethod
    def _kernels(rng: np.random.Generator) -> np.ndarray:
        """``[256, 15]`` temporal kernels over lags -10..+4 bins (negative: activity leads)."""
        lags = np.arange(_KERNEL_LEN) - _KERNEL_LEAD
        centre = rng.uniform(-6.0, 1.5, N_ELECTRODES)[:, None]
        width = rng.uniform(1.0, 3.0, N_ELECTRODES)[:, None]
        z = (lags[None, :] - centre) / width
        bump = np.exp(-0.5 * z**2)
        kern = np.where(rng.random(N_ELECTRODES)[:, None] < 0.25, -z * bump * 1.6, bump)
        return kern / np.abs(kern).sum(axis=1, keepdims=True)

    def raw_features(self, timing: Timing, rng: np.random.Generator) -> np.ndarray:
        """Un-normalised ``[T, 512]`` float32 features (counts, then spike-band power) for one trial."""
        p = self.params
        n = timing.n_bins
        feats = phonetics.feature_trajectory(timing.ids, timing.starts, timing.ends, n,
                                             onset=self.onset_codes, offset=self.offset_codes)
        t = np.arange(n) + 0.5
        ramp_start = max(timing.onset - 15.0, 0.0)
        prep = np.clip((t - ramp_start) / max(timing.onset - ramp_start, 1.0), 0.0, 1.0)
        prep = np.where(t > timing.onset, np.exp(-(t - timing.onset) / 15.0), prep)
        feats[:, -1] = prep
        drive = feats @ self.tuning.T  # [T, 256]
        # temporal kernel per electrode: response(t) = sum_l K[e, l] * drive(t - lag_l)
        padded = np.pad(drive, ((_KERNEL_LEN - 1 - _KERNEL_LEAD, _KERNEL_LEAD), (0, 0)))
        response = np.zeros_like(drive)
        for col in range(_KERNEL_LEN):
            start = _KERNEL_LEN - 1 - col
            response += self.kernels[:, col] * padded[start:start + n]
        latent = self._slow_noise(rng, n, _N_LATENT, 10.0) @ self.latent_loadings.T
        log_rate = np.clip(self.log_base + response + latent, -8.0, 3.0)
        rate = np.exp(log_rate)
        counts = rng.poisson(rate).astype(np.float64)
        own = self._slow_noise(rng, n, N_ELECTRODES, 2.0) * p.sbp_noise
        fluct = (counts - rate) / np.sqrt(rate + 0.5)
        sbp = np.exp(2.0 + 0.8 * log_rate + own + 0.1 * fluct)
        counts[:, self.dead] = 0.0
        sbp[:, self.dead] = np.exp(2.0 + 0.05 * rng.standard_normal((n, int(self.dead.sum()))))
        if self.noisy.any():
            k = int(self.noisy.sum())
            counts[:, self.noisy] += rng.poisson(4.0, (n, k))
            sbp[:, self.noisy] *= np.exp(rng.normal(0.0, 1.0, (n, k)))
        return np.hstack([counts, sbp]).astype(np.float32)

    @staticmethod
    def _slow_noise(rng: np.random.Generator, n: int, k: int, tau_bins: float) -> np.ndarray:
        """Unit-variance AR(1) noise ``[n, k]`` with time constant ``tau_bins``."""
        a = np.exp(-1.0 / tau_bins)
        w = rng.standard_normal((n, k)) * np.sqrt(1.0 - a * a)
        state = rng.standard_normal((1, k))
        return lfilter([1.0], [1.0, -a], w, axis=0, zi=a * state)[0]


def normalise_block(trials: list[np.ndarray]) -> list[np.ndarray]:
    """z-score every channel over all bins of one block, in place (channels constant in the block -> 0)."""
    n = sum(x.shape[0] for x in trials)
    mean = sum(x.sum(axis=0, dtype=np.float64) for x in trials) / n
    var = sum(((x - mean) ** 2).sum(axis=0) for x in trials) / n
    std = np.sqrt(var)
    scale = np.where(std > 1e-6, 1.0 / np.maximum(std, 1e-6), 0.0).astype(np.float32)
    shift = mean.astype(np.float32)
    for x in trials:
        x -= shift
        x *= scale
    return trials

"""Synthetic T15 data: layout, schema, CSV, determinism, text, timing, day drift, bounded memory."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter, defaultdict

import numpy as np
import pytest

from nejm_b2txt_utils import synthetic
from nejm_b2txt_utils.description_csv import read_description_csv
from nejm_b2txt_utils.lexicon import cmu_dictionary, sentence_to_model_ids
from nejm_b2txt_utils.synthetic import phonetics, sessions, wordlists
from nejm_b2txt_utils.synthetic.__main__ import main as cli_main
from nejm_b2txt_utils.synthetic.neural import NeuralParams, SessionEncoder, normalise_block, plan_timing
from nejm_b2txt_utils.t15_hdf5 import T15File, data_file_path, list_sessions, n_output_frames
from nejm_b2txt_utils.text import remove_punctuation

SIL = 40


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    summary = synthetic.generate("tiny", out, seed=3, progress=False)
    return out, summary


def _read_all(data_dir):
    """{(session, split): [Trial, ...]} read with validation on."""
    trials = {}
    for session in list_sessions(data_dir):
        for split in ("train", "val", "test"):
            path = data_file_path(data_dir, session, split)
            if path.exists():
                with T15File(path) as f:
                    trials[(session, split)] = list(f)
    return trials


def test_tiny_layout_and_summary(tiny):
    out, summary = tiny
    data_dir = out / "hdf5_data_final"
    assert summary["sessions"] == ["t15.2023.08.11", "t15.2023.12.03", "t15.2025.04.13"]
    assert list_sessions(data_dir) == summary["sessions"]
    # session idx 0 has no Val/Test blocks -> train file only; the others have all three
    assert sorted(p.name for p in (data_dir / "t15.2023.08.11").iterdir()) == ["data_train.hdf5"]
    for s in summary["sessions"][1:]:
        assert sorted(p.name for p in (data_dir / s).iterdir()) == [
            "data_test.hdf5", "data_train.hdf5", "data_val.hdf5"]
    trials = _read_all(data_dir)
    for split in ("train", "val", "test"):
        assert summary["trials"][split] == sum(len(v) for (_, sp), v in trials.items() if sp == split)
    assert 40 <= sum(summary["trials"].values()) <= 80
    assert summary["total_bins"] == sum(t.n_time_steps for v in trials.values() for t in v)
    assert summary["bytes"] > summary["total_bins"] * 512 * 4
    print(f"tiny generated in {summary['wall_s']} s")


def test_tiny_schema_and_labels(tiny):
    out, _ = tiny
    for (session, split), trials in _read_all(out / "hdf5_data_final").items():
        keys = Counter()
        for t in trials:
            assert t.session == session
            assert t.input_features.dtype == np.float32 and t.input_features.shape[1] == 512
            keys[(t.block_num, t.trial_num)] += 1
            if split == "test":
                assert t.seq_class_ids is None and t.sentence_label is None and t.transcription is None
                continue
            ids = list(t.seq_class_ids)
            assert ids == sentence_to_model_ids(t.sentence_label)
            assert ids[-1] == SIL and ids[0] != SIL
            assert t.transcription == t.sentence_label
            repeats = sum(a == b for a, b in zip(ids, ids[1:]))
            assert n_output_frames(t.n_time_steps) >= len(ids) + repeats
        assert max(keys.values()) == 1  # (block, trial) unique within a file


def test_csv_matches_files(tiny):
    out, summary = tiny
    rows = read_description_csv(out / "t15_copyTaskData_description.csv")
    days = dict(zip(sessions.SESSIONS, sessions.POST_IMPLANT_DAYS))
    per_block = defaultdict(lambda: defaultdict(int))
    for (session, split), trials in _read_all(out / "hdf5_data_final").items():
        for t in trials:
            per_block[(session.replace("t15.", "").replace(".", "-"), t.block_num)][split] += 1
    assert len(rows) == len(per_block)
    for r in rows:
        counts = per_block[(r.date, r.block_num)]
        assert sum(counts.values()) == r.n_sentences
        assert r.post_implant_day == days["t15." + r.date.replace("-", ".")]
        assert r.corpus in synthetic.CORPORA
        if r.split == "Train":
            assert set(counts) == {"train"}
        else:
            assert set(counts) == {"val", "test"} and abs(counts["val"] - counts["test"]) <= 1


def test_features_are_block_normalised(tiny):
    out, _ = tiny
    trials = _read_all(out / "hdf5_data_final")[("t15.2023.08.11", "train")]
    block = np.concatenate([t.input_features for t in trials if t.block_num == 1])
    np.testing.assert_allclose(block.mean(axis=0), 0.0, atol=1e-4)
    std = block.std(axis=0)
    assert np.all((np.abs(std - 1.0) < 1e-3) | (std == 0.0))


def test_deterministic_and_prefix(tiny, tmp_path):
    out, _ = tiny
    again = synthetic.generate("tiny", tmp_path / "again", seed=3, progress=False)
    prefix = synthetic.generate("tiny", tmp_path / "prefix", seed=3, sessions=1, progress=False)
    other = synthetic.generate("tiny", tmp_path / "other", seed=4, sessions=1, progress=False)
    first = _read_all(out / "hdf5_data_final")
    second = _read_all(tmp_path / "again" / "hdf5_data_final")
    assert first.keys() == second.keys()
    for key in first:
        for a, b in zip(first[key], second[key], strict=True):
            assert a.input_features.tobytes() == b.input_features.tobytes()
            assert a.sentence_label == b.sentence_label
    assert (out / "lm_corpus.txt").read_bytes() == (tmp_path / "again" / "lm_corpus.txt").read_bytes()
    assert prefix["sessions"] == again["sessions"][:1]
    head = _read_all(tmp_path / "prefix" / "hdf5_data_final")[("t15.2023.08.11", "train")]
    assert [t.input_features.tobytes() for t in head] == [
        t.input_features.tobytes() for t in first[("t15.2023.08.11", "train")]]
    changed = _read_all(tmp_path / "other" / "hdf5_data_final")[("t15.2023.08.11", "train")]
    assert changed[0].input_features.tobytes() != head[0].input_features.tobytes()
    assert other["trials"]["train"] == prefix["trials"]["train"]


def test_lm_corpus_disjoint_from_val_and_test(tiny):
    out, _ = tiny
    held_out = set()
    for plan in sessions.preset_plan("tiny"):
        for block in plan.blocks:
            if block.split == "Val/Test":
                held_out |= {remove_punctuation(s) for s in synthetic.block_sentences(
                    plan, block, 3, sessions.PRESETS["tiny"].max_words)}
    val = {remove_punctuation(t.sentence_label) for (s, sp), v in _read_all(out / "hdf5_data_final").items()
           if sp == "val" for t in v}
    assert val and val <= held_out
    lm = (out / "lm_corpus.txt").read_text().splitlines()
    assert len(lm) == sessions.PRESETS["tiny"].lm_sentences
    assert not held_out & set(lm)
    # the exclusion really bites: without it some held-out sentences would be drawn
    unfiltered = set(synthetic.lm_corpus_sentences(len(lm), seed=3))
    assert held_out & unfiltered
    assert all(line == remove_punctuation(line) for line in lm[:200])


def test_session_plan_matches_the_real_csv_sums():
    plans = sessions.full_plan()
    assert len(plans) == 45 and sum(len(p.blocks) for p in plans) == 265
    sums = defaultdict(Counter)
    for plan, row in zip(plans, sessions.SESSION_TABLE):
        train = [b for b in plan.blocks if b.split == "Train"]
        valtest = [b for b in plan.blocks if b.split == "Val/Test"]
        assert (sum(b.n_sentences for b in train), len(train)) == (row[2], row[3])
        assert (sum(b.n_sentences for b in valtest), len(valtest)) == (row[4], row[5])
        assert [b.block_num for b in plan.blocks] == list(range(1, len(plan.blocks) + 1))
        for b in plan.blocks:
            sums[b.split][b.corpus] += b.n_sentences
    assert dict(sums["Train"]) == sessions.CORPUS_TOTALS["Train"]
    assert dict(sums["Val/Test"]) == sessions.CORPUS_TOTALS["Val/Test"]
    assert [p.index for p in plans if not any(b.split == "Val/Test" for b in p.blocks)] == [0, 28, 32, 33]
    assert sum(sum(b.n_sentences for b in p.blocks) for p in plans) == 11162
    small = sessions.preset_plan("small")
    assert len(small) == 8 and all(100 <= sum(b.n_sentences for b in p.blocks) <= 140 for p in small)


def test_sentences_words_and_corpora():
    cmu = cmu_dictionary()
    words = set(wordlists.ADJECTIVES + wordlists.EVAL_ADJECTIVES + wordlists.PERSON_ADJECTIVES
                + list(wordlists.FIFTY_WORDS) + wordlists.NAMES + wordlists.NUMBERS)
    words |= {w for nouns in wordlists.NOUNS.values() for pair in nouns for w in pair}
    words |= {w for verb in wordlists.VERBS for w in verb[:5]}
    for phrase_list in (wordlists.TIME_PAST, wordlists.TIME_FUTURE, wordlists.TIME_HABIT, wordlists.SUBJECT_PL,
                        wordlists.SUBJECT_SG, wordlists.FILLERS, wordlists.ORGS, wordlists.DEGREE):
        words |= {w for phrase in phrase_list for w in phrase.split()}
    assert sorted(w for w in words if w not in cmu) == []
    rng = np.random.default_rng(0)
    for corpus in synthetic.CORPORA:
        sents = [synthetic.make_sentence(corpus, rng) for _ in range(200)]
        assert len(set(sents)) > 50, corpus
        assert all(s.isascii() and s[0].isupper() and s[-1] in ".?" for s in sents)
        if corpus == "50-Word":
            assert {w for s in sents for w in remove_punctuation(s).split()} <= set(wordlists.FIFTY_WORDS)
    short = [synthetic.make_sentence("Openwebtext", rng, max_words=4) for _ in range(50)]
    assert max(len(s.split()) for s in short) <= 4


def test_phoneme_feature_codes_are_distinct():
    codes = np.hstack([phonetics.ONSET[1:], phonetics.OFFSET[1:]])  # ids 1..40
    dist = ((codes[:, None] - codes[None]) ** 2).sum(-1) + np.eye(len(codes)) * 99
    assert dist.min() > 0.1


def test_speaking_rate_is_50_to_90_words_per_minute(tiny):
    rng = np.random.default_rng(1)
    rates = []
    for corpus in ("Switchboard", "Openwebtext", "Harvard", "Freq words", "50-Word"):
        for _ in range(60):
            timing = plan_timing(sentence_to_model_ids(synthetic.make_sentence(corpus, rng)), rng)
            rates.append(timing.words_per_minute)
            assert 0.5 * 50 <= timing.onset <= 1.5 * 50  # pre-speech delay 0.5-1.5 s
    assert 50 <= np.mean(rates) <= 90
    assert 50 <= tiny[1]["words_per_minute"] <= 90


def _decoding_set(encoder, n_trials, seed):
    """Per speech bin: features at lags -6, -3, 0 bins (activity leads articulation) and the phoneme id."""
    rng = np.random.default_rng(seed)
    raws, labels = [], []
    for _ in range(n_trials):
        timing = plan_timing(sentence_to_model_ids(synthetic.make_sentence("Switchboard", rng)), rng)
        raws.append(encoder.raw_features(timing, rng))
        centres = np.arange(timing.n_bins) + 0.5
        seg = np.searchsorted(timing.ends, centres, side="right")
        lab = np.where((centres >= timing.onset) & (seg < len(timing.ids)),
                       timing.ids[np.minimum(seg, len(timing.ids) - 1)], 0)
        labels.append(lab)
    xs, ys = [], []
    for x, lab in zip(normalise_block(raws), labels):
        idx = np.flatnonzero(lab[6:]) + 6
        xs.append(np.hstack([x[idx - 6], x[idx - 3], x[idx]]))
        ys.append(lab[idx])
    return np.concatenate(xs), np.concatenate(ys)


def test_day_drift_degrades_a_fixed_decoder():
    """A linear decoder fit on one day decodes that day's held-out trials much better than a later day."""
    day_a = SessionEncoder(0, 27)
    xa, ya = _decoding_set(day_a, 70, seed=1)
    xh, yh = _decoding_set(day_a, 25, seed=2)
    xn, yn = _decoding_set(SessionEncoder(0, 32), 25, seed=2)
    xf, yf = _decoding_set(SessionEncoder(0, 377), 25, seed=2)
    onehot = np.eye(41)[ya]
    w = np.linalg.solve(xa.T @ xa + 50.0 * np.eye(xa.shape[1]), xa.T @ onehot)

    def acc(x, y):
        return float(np.mean((x @ w).argmax(1) == y))

    held, near, far = acc(xh, yh), acc(xn, yn), acc(xf, yf)
    print(f"phoneme decoding accuracy: same day {held:.3f}, +5 days {near:.3f}, +350 days {far:.3f}")
    assert held > 0.35
    assert far < 0.6 * held
    assert near > far


def test_no_drift_parameters_mean_no_degradation():
    params = NeuralParams(drift_fraction=0.0, rotation=0.0, gain_sd=0.0, offset_sd=0.0, dead_start=0.0, dead_end=0.0,
                          noisy_per_session=0.0)
    xa, ya = _decoding_set(SessionEncoder(0, 27, params), 60, seed=1)
    xf, yf = _decoding_set(SessionEncoder(0, 377, params), 25, seed=2)
    xh, yh = _decoding_set(SessionEncoder(0, 27, params), 25, seed=2)
    w = np.linalg.solve(xa.T @ xa + 50.0 * np.eye(xa.shape[1]), xa.T @ np.eye(41)[ya])
    held = np.mean((xh @ w).argmax(1) == yh)
    far = np.mean((xf @ w).argmax(1) == yf)
    assert abs(held - far) < 0.05


def test_cli_help_and_errors(capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        cli_main(["--help"])
    assert exc.value.code == 0 and "--max_sessions" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli_main(["--preset", "huge", "--out", str(tmp_path)])
    assert cli_main(["--preset", "tiny", "--out", str(tmp_path), "--max_sessions", "0", "--no_progress"]) == 2
    assert "sessions" in capsys.readouterr().err


@pytest.mark.slow
def test_full_prefix_streams_with_bounded_memory(tmp_path):
    """The first 2 sessions of `full` (730 trials, ~600 MB on disk) in a subprocess: peak RSS stays bounded."""
    code = ("import sys\n"
            "from nejm_b2txt_utils.memory import peak_rss_mb\n"
            "from nejm_b2txt_utils.synthetic.__main__ import main\n"
            "rc = main(sys.argv[1:])\n"
            "print('PEAK_RSS_MB', peak_rss_mb())\n"
            "sys.exit(rc)\n")
    proc = subprocess.run(
        [sys.executable, "-c", code, "--preset", "full", "--out", str(tmp_path), "--max_sessions", "2",
         "--no_progress"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    peak_mb = float(lines[-1].split()[1])  # the child's own (VmHWM), not pytest's passed on by exec
    summary = json.loads(lines[-2])
    assert summary["sessions"] == ["t15.2023.08.11", "t15.2023.08.13"]
    print(f"full, first 2 sessions: {summary['bytes'] / 1e6:.0f} MB in {summary['wall_s']} s, "
          f"peak RSS {peak_mb:.0f} MB")
    t = summary["trials"]
    assert t["train"] == 290 + 370 and t["val"] + t["test"] == 70 and abs(t["val"] - t["test"]) <= 2
    assert summary["bytes"] > 400e6
    assert peak_mb < 600  # 277-280 MB measured (one block of features in memory at a time)


def test_help_describes_every_preset(capsys):
    """New-user case: --help listed ``hard`` as a choice but described only tiny, small and full."""
    from nejm_b2txt_utils.synthetic.__main__ import main
    from nejm_b2txt_utils.synthetic.neural import NeuralParams
    from nejm_b2txt_utils.synthetic.sessions import PRESETS

    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name in PRESETS:
        assert f"{name}: " in text, name
    assert "hard: the small sessions with a weaker neural code (modulation depth 0.4 instead of 0.6;" in text
    assert PRESETS["hard"].neural == (("depth", 0.4),) and NeuralParams().depth == 0.6  # what the help says

"""The evaluation report (model_training/eval_report.py) and the manifest beside every results file."""

from __future__ import annotations

import hashlib
import json
import pickle

import numpy as np
import pytest

from model_training import eval_report
from nejm_b2txt_utils.metrics import edit_counts, grouped_bootstrap_ci
from nejm_b2txt_utils.run_manifest import build_manifest, manifest_path, sha256_file, write_manifests


def _results(greedy_second: list[str]) -> dict:
    cands = {"candidate_sentences": ["the cat sat", "a cat sat", "the bat"],
             "candidate_acoustic_scores": [-1.0, -0.5, -3.0], "candidate_ngram_scores": [-1.0, -1.0, -1.0],
             "candidate_llm_scores": [0.0, 0.0, 0.0], "candidate_total_scores": [0.0, -1.0, -2.0]}
    return {"session": ["d1", "d1", "d2"], "corpus": ["A", "A", "B"],
            "true_phonemes": [["AA", "B"], ["K", "AE", "T"], ["S", "IH"]],
            "greedy_phonemes": [["AA", "B"], greedy_second, ["S"]],
            "sentence_label": ["the cat sat", "the cat sat", "hello"],
            "pred_sentence": ["the bat", "the cat sat", "hello"],
            "lm_candidates": [cands, cands, None]}


def test_edit_counts_split_substitutions_deletions_insertions():
    assert edit_counts("abcd", "axd") == {"sub": 1, "del": 1, "ins": 0, "total": 2}
    assert edit_counts("ab", "abzz") == {"sub": 0, "del": 0, "ins": 2, "total": 2}


def test_day_grouped_ci_resamples_days_whole():
    edits, lens = np.array([1, 1, 5, 5]), np.array([10, 10, 10, 10])
    assert grouped_bootstrap_ci(edits, lens, ["a", "a", "a", "a"]) == (0.3, 0.3)  # one day: no spread
    lo, hi = grouped_bootstrap_ci(edits, lens, ["a", "a", "b", "b"])
    assert lo == pytest.approx(0.1) and hi == pytest.approx(0.5)  # two days: all-a .. all-b


def test_report_numbers_per_day_corpus_stages_and_seeds(tmp_path, capsys):
    paths = []
    for i, second in enumerate((["K", "AE", "T"], ["K", "T", "T", "Z"])):
        paths.append(tmp_path / f"seed{i}.pkl")
        with open(paths[-1], "wb") as fh:
            pickle.dump(_results(second), fh)
    out = tmp_path / "report.json"
    assert eval_report.main([*map(str, paths), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    r0, r1 = (report["files"][str(p)] for p in paths)
    assert r0["PER"]["rate"] == pytest.approx(1 / 7) and r0["PER"]["del"] == 1 and r0["PER"]["sub"] == 0
    assert r1["PER"]["rate"] == pytest.approx(3 / 7)
    assert (r1["PER"]["sub"], r1["PER"]["del"], r1["PER"]["ins"]) == (1, 1, 1)
    assert r0["PER_by_day"]["d1"]["rate"] == 0.0 and r0["PER_by_corpus"]["B"]["rate"] == 0.5
    # WER over the two trials with LM answers: final "the bat" (2 edits) + exact; n-gram pick = "a cat sat"
    # (best acoustic + n-gram), 1 edit each; oracle = "the cat sat", 0.
    assert r0["WER_final"]["rate"] == pytest.approx(2 / 6)
    assert r0["WER_ngram"]["rate"] == pytest.approx(2 / 6) and r0["WER_ngram"]["sub"] == 2
    assert r0["WER_oracle"]["rate"] == 0.0
    per = report["over_files"]["PER"]
    assert per["mean"] == pytest.approx(2 / 7) and per["sem"] == pytest.approx(1 / 7)  # |a - b| / 2 for two values
    manifest = json.loads(manifest_path(out).read_text())
    assert manifest["inputs"]["results_0"]["sha256"] == sha256_file(paths[0])
    assert "PER" in capsys.readouterr().out


def test_a_file_that_is_not_a_results_pkl_is_one_line(tmp_path, capsys):
    bad = tmp_path / "x.pkl"
    with open(bad, "wb") as fh:
        pickle.dump({"session": []}, fh)
    assert eval_report.main([str(bad), "--out", str(tmp_path / "r.json")]) == 2
    assert "x.pkl: missing fields" in capsys.readouterr().err


def test_manifest_records_command_commit_versions_and_hashes(tmp_path):
    data = tmp_path / "data.bin"
    data.write_bytes(b"abc" * 1000)
    m = build_manifest({"data": data, "absent": tmp_path / "nope"}, command=["python", "x.py", "--flag"])
    assert m["command"] == ["python", "x.py", "--flag"]
    assert m["inputs"]["data"]["sha256"] == hashlib.sha256(b"abc" * 1000).hexdigest()
    assert m["inputs"]["absent"]["sha256"] is None and m["inputs"]["data"]["bytes"] == 3000
    assert m["git"]["commit"] is None or len(m["git"]["commit"]) == 40
    assert "numpy" in m["packages"] and m["hardware"]["cpu_count"] >= 1
    res = tmp_path / "results.csv"
    res.write_text("id,text\n")
    (path,) = write_manifests([res], {"data": data})
    assert path.name == "results.csv.manifest.json" and json.loads(path.read_text())["results"] == "results.csv"


def test_lm_folder_fingerprint_hashes_small_files_and_dates_large_ones(tmp_path):
    """The manifest's LM record: words.txt and the store header hashed, a file over the limit by size and mtime."""
    from nejm_b2txt_utils.run_manifest import lm_folder_fingerprint

    lm = tmp_path / "lm"
    (lm / "ngram_store").mkdir(parents=True)
    (lm / "words.txt").write_text("<eps> 0\nhello 1\n")
    (lm / "TLG.fst").write_bytes(b"x" * 5000)
    (lm / "ngram_store" / "header.json").write_text("{}")
    fp = lm_folder_fingerprint(lm, max_hash_bytes=4096)
    assert set(fp["files"]) == {"words.txt", "TLG.fst", "ngram_store/header.json"}
    assert fp["files"]["words.txt"]["sha256"] == hashlib.sha256(b"<eps> 0\nhello 1\n").hexdigest()
    assert fp["files"]["ngram_store/header.json"] == {"bytes": 2, "sha256": hashlib.sha256(b"{}").hexdigest()}
    assert fp["files"]["TLG.fst"]["bytes"] == 5000 and "sha256" not in fp["files"]["TLG.fst"]
    assert fp["files"]["TLG.fst"]["mtime"].endswith("Z")
    assert lm_folder_fingerprint(tmp_path / "elsewhere") is None  # a server on another machine: not reachable


def test_one_file_writes_strict_json_and_malformed_results_are_one_line(tmp_path, capsys):
    """New-user cases: one file wrote "sem": NaN (not JSON); a short 'session' list and greedy_phonemes of None
    ended in IndexError / TypeError tracebacks."""
    import json

    good = tmp_path / "one.pkl"
    with open(good, "wb") as fh:
        pickle.dump(_results(["AA", "B"]), fh)
    out = tmp_path / "r.json"
    assert eval_report.main([str(good), "--out", str(out)]) == 0
    text = out.read_text()
    assert "NaN" not in text and json.loads(text)["over_files"]["PER"]["sem"] is None
    capsys.readouterr()

    res = _results(["AA", "B"])
    res["session"] = res["session"][:1]
    with open(tmp_path / "short.pkl", "wb") as fh:
        pickle.dump(res, fh)
    assert eval_report.main([str(tmp_path / "short.pkl"), "--out", str(tmp_path / "x.json")]) == 2
    assert "fields of different lengths" in capsys.readouterr().err
    res = _results(["AA", "B"])
    res["greedy_phonemes"] = [None] * len(res["greedy_phonemes"])
    with open(tmp_path / "none.pkl", "wb") as fh:
        pickle.dump(res, fh)
    assert eval_report.main([str(tmp_path / "none.pkl"), "--out", str(tmp_path / "y.json")]) == 2
    assert "a trial's entry is not what evaluate_model.py writes" in capsys.readouterr().err

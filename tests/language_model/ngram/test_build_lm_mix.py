"""build_lm.py --mix_wordfreq: one mixed ARPA, weight from held-out sentences (or given), flags checked."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("kaldilm")

from language_model import build_lm  # noqa: E402
from language_model.ngram.arpa import read_arpa  # noqa: E402

SENTS = ["i want to go home", "we need to go now", "they have to go to the store", "i have two dogs",
         "she has two cats", "it is too late", "the dogs are too big", "my cat likes the store",
         "we want to eat now", "i need some water"] * 4
VOCAB = sorted({w for s in SENTS for w in s.split()} | {"garden", "yellow", "music", "river"})


def build(tmp_path, name, *extra) -> tuple[int, dict, object]:
    corpus, vocab = tmp_path / "corpus.txt", tmp_path / "vocab.txt"
    corpus.write_text("\n".join(SENTS) + "\n")
    vocab.write_text("\n".join(VOCAB) + "\n")
    out = tmp_path / name
    rc = build_lm.main(["--corpus", str(corpus), "--order", "2", "--vocab_file", str(vocab), "--out", str(out),
                        *extra])
    if rc:
        return rc, {}, None
    return rc, json.loads((out / "build_info.json").read_text()), read_arpa(out / "lm.arpa")


def test_mixed_build_lifts_unseen_words_and_records_the_weight(tmp_path):
    rc, info, plain = build(tmp_path, "plain")
    assert rc == 0 and "mix_weight" not in info
    rc, info, mixed = build(tmp_path, "mixed", "--mix_wordfreq")
    assert rc == 0 and 0 < info["mix_weight"] < 1 and info["mix_dev_sentences"] == len(SENTS) // 10
    assert info["mix_dev_perplexity"][str(info["mix_weight"])] == min(info["mix_dev_perplexity"].values())
    unseen_plain = plain.prob(plain.word_ids()["garden"])
    unseen_mixed = mixed.prob(mixed.word_ids()["garden"])
    assert unseen_mixed > 1000 * unseen_plain
    rc, info, fixed = build(tmp_path, "fixed", "--mix_wordfreq", "--mix_weight", "0.9")
    assert rc == 0 and info["mix_weight"] == 0.9 and "mix_dev_sentences" not in info
    ids = fixed.word_ids()
    total = sum(fixed.prob(ids[w], [ids["to"]]) for w in fixed.words if w != "<s>")
    assert total == pytest.approx(1.0, abs=1e-3)  # a normalised mixture, read back from the ARPA


@pytest.mark.parametrize("extra, message", [(["--mix_weight", "1.5"], "--mix_weight must be in"),
                                            (["--mix_weight", "0.5"], "need --mix_wordfreq")])
def test_bad_mix_flags_are_one_line(tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as exc:
        build(tmp_path, "bad", *extra)
    assert exc.value.code == 2 and message in capsys.readouterr().err

"""The two-pass design through the real server: an LM folder in the original's layout (pruned TLG.fst/G.fst)
plus an n-gram store of the unpruned LM decodes to the same sentences and n-gram scores as one TLG built from
the unpruned LM (the exact pass is exact), ``--rescore`` needs no G_no_prune.fst; a damaged store stops the
server at start-up with one line naming the file."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("kaldifst")
pytest.importorskip("kaldi_decoder")
pytest.importorskip("kaldilm")

from language_model.graph.tlg import build_lm_dir  # noqa: E402
from language_model.graph.toy_lm import TOY_LEXICON, synthetic_logits  # noqa: E402
from language_model.ngram.store_convert import arpa_to_store  # noqa: E402
from nejm_b2txt_utils import redis_protocol as rp  # noqa: E402
from nejm_b2txt_utils.redis_server import RedisServer  # noqa: E402
from tests.language_model._lm_testing import OriginalClient, ServerProcess, wait_until  # noqa: E402
from tests.language_model._store_testing import TOY_SENTENCES, build_original_layout_lm  # noqa: E402
from tests.language_model.serving.test_lm_folder_errors import _never_serve, _start  # noqa: E402, F401

UTTERANCES = [(s, seed) for seed in (0, 5) for s in TOY_SENTENCES]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """(two-pass folder: pruned TLG + store of the unpruned ARPA, no G_no_prune.fst; one TLG of the unpruned LM)."""
    root = tmp_path_factory.mktemp("lms")
    two_pass = build_original_layout_lm(root / "two_pass", order=3, prune=3e-3)
    arpa_to_store(two_pass / "lm_no_prune.arpa", two_pass / "ngram_store")
    (two_pass / "G_no_prune.fst").unlink()
    single = build_lm_dir(TOY_LEXICON, two_pass / "lm_no_prune.arpa", root / "single")
    return two_pass, single


def _decode_all(lm_dir, tmp_path, name: str, *extra: str, updates: dict | None = None) -> list[list[tuple]]:
    with RedisServer() as redis_srv:
        srv = ServerProcess(lm_dir, redis_srv.port, *extra, log_path=tmp_path / f"{name}.log").start()
        try:
            r = redis_srv.client()
            wait_until(lambda: r.xlen(rp.ARGS_STREAM) > 0, 90, "server start")
            client = OriginalClient(r)
            if updates:
                assert client.update_params(**updates) == {b"done": b"1"}
            return [OriginalClient.parse(client.decode_trial(synthetic_logits(s, seed=seed, peak=6.0))[1])
                    for s, seed in UTTERANCES]
        finally:
            assert srv.stop() == 0, srv.log()[-2000:]


def test_two_pass_with_store_decodes_as_the_single_unpruned_tlg(folders, tmp_path):
    two_pass, single = folders
    want = _decode_all(single, tmp_path, "single")  # exact_ngram=1 (default): the unpruned ARPA's own scores
    got = _decode_all(two_pass, tmp_path, "two_pass")
    assert [rows[0][0] for rows in got] == [rows[0][0] for rows in want]
    for g, w in zip(got, want):  # same acoustic and n-gram score (the full LM's) of the winner, up to the
        # decoder's float32 path sums (the lattice's graph cost of a 6-nat sentence is rounded to ~1e-3)
        assert g[0][1] == pytest.approx(w[0][1], abs=1e-3) and g[0][2] == pytest.approx(w[0][2], abs=5e-3)
    pruned_only = _decode_all(two_pass, tmp_path, "pruned", "--exact_ngram", "0")
    changed = sum(p[0][2] != pytest.approx(g[0][2], abs=5e-3) for p, g in zip(pruned_only, got))
    assert changed >= len(UTTERANCES) // 2  # the store's scores are not the first pass's
    rescored = _decode_all(two_pass, tmp_path, "rescore", "--rescore")  # no G_no_prune.fst needed
    assert [[row[:3] for row in rows] for rows in rescored] == [[row[:3] for row in rows] for rows in got]


def _damage(lm, how: str):
    store = lm / "ngram_store"
    header = json.loads((store / "header.json").read_text())
    if how == "no_header":
        (store / "header.json").unlink()
        return store / "header.json", "missing; expected the header of a complete n-gram store"
    if how == "version":
        (store / "header.json").write_text(json.dumps({**header, "version": 2}))
        return store / "header.json", "version 2, expected 1"
    if how == "foreign":
        (store / "header.json").write_text(json.dumps({**header, "format": "kenlm"}))
        return store / "header.json", "format 'kenlm', expected 'b2txt-ngram-store'"
    if how == "truncated":
        data = (store / "3.logp.npy").read_bytes()
        (store / "3.logp.npy").write_bytes(data[:-4])
        return store / "3.logp.npy", "bytes, expected"
    if how == "counts":
        counts = [header["counts"][0], header["counts"][1] + 1, header["counts"][2]]
        (store / "header.json").write_text(json.dumps({**header, "counts": counts}))
        return store / "2.word.npy", f"expected uint32[{counts[1]}]"
    if how == "child_end":
        child = np.load(store / "2.child.npy")
        child[-1] -= 1
        np.save(store / "2.child.npy", child)
        return store / "2.child.npy", f"expected 0..{header['counts'][2]} (order 3's count)"
    if how == "nan_logp":  # new-user case: served silently, scores moved
        logp = np.load(store / "2.logp.npy")
        logp[:] = np.nan
        np.save(store / "2.logp.npy", logp)
        return store / "2.logp.npy", "entry 0 is nan; expected a finite log10 probability <= 0"
    if how == "other_vocab":  # new-user case: another LM's store, served silently
        vocab = (store / "vocab.txt").read_text().splitlines()
        renamed = [f"zz{w}" if not w.startswith("<") else w for w in vocab]
        (store / "vocab.txt").write_text("".join(w + "\n" for w in renamed))
        return store / "vocab.txt", "expected the store of this LM folder's LM"
    if how == "a_file":  # new-user case: ignored silently
        shutil.rmtree(store)
        store.write_text("not a store")
        return store, "not a folder; expected an n-gram store"
    raise ValueError(how)


@pytest.mark.parametrize("how", ["no_header", "version", "foreign", "truncated", "counts", "child_end", "nan_logp",
                                 "other_vocab", "a_file"])
def test_damaged_store_is_a_one_line_start_up_error(folders, tmp_path, capsys, how):
    lm = tmp_path / "lm"
    shutil.copytree(folders[0], lm)
    path, expected = _damage(lm, how)
    assert _start(lm) == 2
    out = capsys.readouterr().err.strip().splitlines()
    assert out[-1].startswith(f"error: {path}: ") and expected in out[-1], out

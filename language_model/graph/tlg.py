"""Decoding graph: lexicon + ARPA -> the original's LM folder (``TLG.fst``, ``words.txt``, ...).

This is the Python replacement of the recipe's ``ctc_compile_dict_token.sh`` + ``make_tlg.sh``
(spec §4.3, §5.4-5.5), built with kaldifst/kaldilm instead of the Kaldi/OpenFST binaries:

* ``tokens.txt``: ``<eps> 0``, ``<blk> 1``, ``SIL 2``, ``AA 3`` ... ``ZH 41``, then ``#0``, ``#1``, ...
  (token id = 1 + LM-order class index, which is what ``kaldi_decoder.DecodableCtc`` reads).
* ``words.txt``: ``<eps> 0``, the sorted words 1..W, then ``#0``, ``<s>``, ``</s>``.
* L: Kaldi ``make_lexicon_fst.pl`` with optional silence (probability ``sil_prob`` after every word
  and at the start, silence disambiguation symbol) plus ``#0:#0`` self-loops.
* T: the "corrected" CTC token topology (a repeated token needs a blank in between), with
  ``<eps>:#k`` self-loops so the disambiguation symbols of LG are consumed by the composition.
* G: ``kaldilm.arpa2fst`` with ``#0`` backoff, on the ARPA filtered as ``make_tlg.sh`` filters it.
* TLG = T o min(det_log(L o G)).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from language_model.graph.grammar_fst import arpa_to_g
from language_model.graph.lexicon import add_lex_disambig, write_lexicon
from nejm_b2txt_utils.atomic_io import publish_dir
from nejm_b2txt_utils.phonemes import LM_ORDER, PHONEMES, SIL
from nejm_b2txt_utils.symbol_table import write_symbols

log = logging.getLogger(__name__)

BLANK_TOKEN = "<blk>"
#: Real tokens in TLG input-label order: id = index + 1 (``<blk>`` 1, ``SIL`` 2, ``AA`` 3 ... ``ZH`` 41).
TOKENS: tuple[str, ...] = (BLANK_TOKEN, *LM_ORDER[1:])
N_TOKENS = len(TOKENS)  # 41
TOKEN_ID: dict[str, int] = {t: i + 1 for i, t in enumerate(TOKENS)}
SPECIAL_WORDS = ("<eps>", "#0", "<s>", "</s>", "<unk>")
_VALID_PHONES = frozenset(PHONEMES)


# --------------------------------------------------------------------------- symbol tables
def token_symbols(n_disambig: int) -> list[str]:
    """``tokens.txt`` symbols in id order: ``<eps>``, the 41 tokens, ``#0`` .. ``#n_disambig``.

    Args:
        n_disambig: the highest disambiguation symbol.

    Returns:
        The symbols (id = index).
    """
    return ["<eps>", *TOKENS, *(f"#{k}" for k in range(n_disambig + 1))]


def word_symbols(words: Iterable[str]) -> list[str]:
    """``words.txt`` symbols in id order: ``<eps>``, sorted words, ``#0``, ``<s>``, ``</s>``.

    Args:
        words: the vocabulary.

    Returns:
        The symbols (id = index).
    """
    return ["<eps>", *sorted(words), "#0", "<s>", "</s>"]


# --------------------------------------------------------------------------- FST text generators
def _fmt_cost(cost: float) -> str:
    return f"{cost:.6g}"


def lexicon_fst_text(
    disambig_lexicon: Sequence[tuple[str, list[str]]],
    token_id: Mapping[str, int],
    word_id: Mapping[str, int],
    sil_prob: float,
    sil_disambig: str | None,
) -> str:
    """L in OpenFST text form with integer labels (Kaldi ``make_lexicon_fst.pl`` semantics).

    With ``sil_prob > 0``: states 0 start, 1 loop (the only final state), 2 after-word silence,
    3 silence-disambiguation; every word may be followed by ``SIL`` with probability ``sil_prob``,
    and the utterance may start with one. With ``sil_prob == 0`` there is no silence at all.

    Args:
        disambig_lexicon: ``(word, phones + #k)`` pairs from :func:`add_lex_disambig`.
        token_id: token symbol -> id.
        word_id: word -> id.
        sil_prob: optional-silence probability in [0, 1).
        sil_disambig: the silence disambiguation symbol (``None``: none).

    Returns:
        The FST text (arcs ``src dst ilabel olabel [cost]``, costs in nats).
    """
    lines: list[str] = []
    if sil_prob <= 0.0:
        loop, next_state = 0, 1
    else:
        sil_cost, nosil_cost = -math.log(sil_prob), -math.log(1.0 - sil_prob)
        loop, next_state = 1, 4
        sil_state, sil_disambig_state = 2, 3
        sil_tok, sil_dis_tok = token_id[SIL], token_id[sil_disambig] if sil_disambig else 0
        lines.append(f"0 {loop} 0 0 {_fmt_cost(nosil_cost)}")
        if sil_disambig:
            lines.append(f"0 {sil_disambig_state} {sil_tok} 0 {_fmt_cost(sil_cost)}")
            lines.append(f"{sil_state} {sil_disambig_state} {sil_tok} 0")
            lines.append(f"{sil_disambig_state} {loop} {sil_dis_tok} 0")
        else:
            lines.append(f"0 {loop} {sil_tok} 0 {_fmt_cost(sil_cost)}")
            lines.append(f"{sil_state} {loop} {sil_tok} 0")
        nosil, sil = _fmt_cost(nosil_cost), _fmt_cost(sil_cost)
    for word, phones in disambig_lexicon:
        src, out = loop, word_id[word]
        for k, phone in enumerate(phones):
            tok = token_id[phone]
            if k < len(phones) - 1:
                lines.append(f"{src} {next_state} {tok} {out}")
                src, next_state, out = next_state, next_state + 1, 0
            elif sil_prob <= 0.0:
                lines.append(f"{src} {loop} {tok} {out}")
            else:
                lines.append(f"{src} {loop} {tok} {out} {nosil}")
                lines.append(f"{src} {sil_state} {tok} {out} {sil}")
    lines.append(f"{loop} 0")
    return "\n".join(lines) + "\n"


def ctc_token_fst_text(n_disambig: int) -> str:
    """The corrected CTC topology T (spec §4.3) over the 41 tokens, integer labels.

    State 0 = "after blank / start", state ``i`` = "after token i" for the 40 non-blank tokens.
    Every state is final and carries ``<eps>:#k`` self-loops for ``#0`` .. ``#n_disambig``.

    Args:
        n_disambig: the highest disambiguation symbol.

    Returns:
        The FST text.
    """
    blank = TOKEN_ID[BLANK_TOKEN]
    real = [TOKEN_ID[t] for t in TOKENS[1:]]
    state = {tok: k + 1 for k, tok in enumerate(real)}
    lines = [f"0 0 {blank} 0"]
    for tok in real:
        lines.append(f"0 {state[tok]} {tok} {tok}")
    for i in real:
        lines.append(f"{state[i]} {state[i]} {i} 0")
        lines.append(f"{state[i]} 0 {blank} 0")
        lines.extend(f"{state[i]} {state[j]} {j} {j}" for j in real if j != i)
    disambig_ids = range(N_TOKENS + 1, N_TOKENS + 2 + n_disambig)
    for s in range(len(real) + 1):
        lines.extend(f"{s} {s} 0 {d}" for d in disambig_ids)
    lines.extend(f"{s}" for s in range(len(real) + 1))
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- composition
def check_lexicon(lexicon: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """Check a lexicon before building L (build_lm.py calls it before the n-gram estimation, too).

    Args:
        lexicon: word -> stress-free ARPAbet phones.

    Returns:
        The words with a pronunciation (words without one are left out with a warning).

    Raises:
        ValueError: a reserved or malformed word, a phone outside the 39 phonemes + SIL, or no word left.
    """
    clean: dict[str, list[str]] = {}
    for word, phones in lexicon.items():
        if not word or any(c.isspace() for c in word) or word in SPECIAL_WORDS or word.startswith("#"):
            raise ValueError(f"lexicon: word {word!r} is not allowed (whitespace, reserved symbol or '#...')")
        bad = [p for p in phones if p not in _VALID_PHONES]
        if bad:
            raise ValueError(
                f"lexicon: word {word!r} has phones {bad}; expected stress-free ARPAbet ({PHONEMES[0]}..)"
            )
        if not phones:
            log.warning("lexicon: word %r has no pronunciation; left out of L", word)
            continue
        clean[word] = list(phones)
    if not clean:
        raise ValueError("lexicon: no word with a pronunciation")
    return clean


def compose_tlg(l_fst, g_fst, t_fst):
    """TLG = T o min(det_log(L o G)) as ``make_tlg.sh``.

    Args:
        l_fst: L (olabel-sorted here).
        g_fst: G.
        t_fst: T (olabel-sorted here).

    Returns:
        ``(TLG, LG)``, both ilabel-sorted.

    Raises:
        RuntimeError: the determinization stopped early.
    """
    import kaldifst

    t0 = time.perf_counter()
    kaldifst.arcsort(l_fst, sort_type="olabel")
    lg = kaldifst.StdVectorFst(kaldifst.compose(l_fst, g_fst))
    log.info("L o G: %d states (%.1f s)", lg.num_states, time.perf_counter() - t0)
    t0 = time.perf_counter()
    if kaldifst.determinize_star(lg, use_log=True):  # True means "stopped early" (kaldifst's convention)
        raise RuntimeError("determinize_star(L o G) stopped early; the graph would be partial")
    log.info("det(LG): %d states (%.1f s)", lg.num_states, time.perf_counter() - t0)
    t0 = time.perf_counter()
    kaldifst.minimize_encoded(lg)
    kaldifst.arcsort(lg, sort_type="ilabel")
    log.info("min(det(LG)): %d states (%.1f s)", lg.num_states, time.perf_counter() - t0)
    t0 = time.perf_counter()
    kaldifst.arcsort(t_fst, sort_type="olabel")
    tlg = kaldifst.StdVectorFst(kaldifst.compose(t_fst, lg))
    kaldifst.arcsort(tlg, sort_type="ilabel")
    log.info("T o LG: %d states (%.1f s)", tlg.num_states, time.perf_counter() - t0)
    return tlg, lg


def _max_ilabel(fst) -> int:
    import kaldifst

    top = 0
    for state in kaldifst.StateIterator(fst):
        for arc in kaldifst.ArcIterator(fst, state):
            top = max(top, arc.ilabel)
    return top


def build_lm_dir(
    lexicon: Mapping[str, Sequence[str]],
    arpa_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    sil_prob: float = 0.5,
    *,
    unpruned_arpa_path: str | os.PathLike | None = None,
    keep_intermediate: bool = False,
    before_publish: Callable[[Path], None] | None = None,
) -> Path:
    """Build the original's LM folder from a lexicon (word -> stress-free phones) and an ARPA.

    Writes ``TLG.fst``, ``words.txt``, ``tokens.txt``, ``lexicon.txt``, ``G.fst``, ``lm.arpa`` (a copy of
    ``arpa_path``), and with ``unpruned_arpa_path`` also ``G_no_prune.fst`` / ``lm_no_prune.arpa``;
    ``keep_intermediate`` adds ``T.fst``, ``L.fst``, ``LG.fst``. Built in a temporary sibling folder and
    renamed into place at the end (an existing folder is replaced).

    Args:
        lexicon: word -> stress-free ARPAbet phones.
        arpa_path: the (pruned) ARPA.
        out_dir: the LM folder.
        sil_prob: optional-silence probability in [0, 1).
        unpruned_arpa_path: the unpruned ARPA for ``--rescore`` (optional).
        keep_intermediate: also write T, L and LG.
        before_publish: called with the finished temporary folder just before it is renamed into place (to
            add files that must appear together with the graph).

    Returns:
        ``out_dir`` as an absolute ``Path``.

    Raises:
        FileNotFoundError: no ARPA file.
        ValueError: bad ``sil_prob``, a bad lexicon entry, or no word of the ARPA has a pronunciation.
        RuntimeError: the graph could not be built completely.
    """
    if not 0.0 <= sil_prob < 1.0:
        raise ValueError(f"sil_prob must be in [0, 1), got {sil_prob}")
    arpa_path = Path(arpa_path)
    if not arpa_path.is_file():
        raise FileNotFoundError(f"ARPA file not found: {arpa_path}")
    out_dir = Path(out_dir).absolute()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tables = symbol_tables(check_lexicon(lexicon), sil_prob)
    t_start = time.perf_counter()
    tmp_dir = _staging_dir(out_dir)
    try:
        l_fst, t_fst = write_lexicon_and_topology(tables, tmp_dir, sil_prob, keep_intermediate)
        g_fst = write_grammars(arpa_path, tmp_dir, unpruned_arpa_path)
        num_states = write_tlg(l_fst, g_fst, t_fst, tmp_dir, arpa_path, keep_intermediate)
        shutil.copyfile(arpa_path, tmp_dir / "lm.arpa")
        if before_publish is not None:  # e.g. build_lm.py's build_info.json: part of the folder when it appears
            before_publish(tmp_dir)
        publish_dir(tmp_dir, out_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    log.info("LM folder %s built in %.1f s (TLG %d states)", out_dir, time.perf_counter() - t_start, num_states)
    return out_dir


@dataclass
class SymbolTables:
    """The lexicon with disambiguation symbols and the token/word symbol tables of one build."""

    lexicon: dict[str, list[str]]
    disambig_lexicon: list[tuple[str, list[str]]]
    n_disambig: int
    tokens: list[str]
    words: list[str]
    sil_disambig: str | None

    @property
    def token_id(self) -> dict[str, int]:
        """Returns: token symbol -> id."""
        return {t: i for i, t in enumerate(self.tokens)}

    @property
    def word_id(self) -> dict[str, int]:
        """Returns: word -> id."""
        return {w: i for i, w in enumerate(self.words)}


def symbol_tables(lexicon: dict[str, list[str]], sil_prob: float) -> SymbolTables:
    """Step 1: disambiguation symbols (``#0``..; the top one is reserved for silence) and symbol tables.

    Args:
        lexicon: a checked lexicon (:func:`check_lexicon`).
        sil_prob: optional-silence probability (> 0 reserves the silence disambiguation symbol).

    Returns:
        The tables.
    """
    disambig_lex, max_disambig = add_lex_disambig(sorted(lexicon.items()))
    n_disambig = max_disambig + 1 if sil_prob > 0 else max_disambig  # top symbol reserved for silence
    log.info("lexicon: %d words, disambiguation symbols #0..#%d", len(lexicon), n_disambig)
    return SymbolTables(lexicon, disambig_lex, n_disambig, token_symbols(n_disambig), word_symbols(lexicon),
                        f"#{n_disambig}" if sil_prob > 0 else None)  # fmt: skip


def _staging_dir(out_dir: Path) -> Path:
    """A sibling folder to build in (same filesystem: published with one rename), with normal permissions."""
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp_dir.chmod(0o777 & ~umask)  # mkdtemp makes it private; the LM folder is a normal one
    return tmp_dir


def write_lexicon_and_topology(tables: SymbolTables, folder: Path, sil_prob: float, keep_intermediate: bool):
    """Step 2: ``tokens.txt``, ``words.txt``, ``lexicon.txt`` and the L and T transducers.

    Args:
        tables: :func:`symbol_tables`.
        folder: the staging folder.
        sil_prob: optional-silence probability.
        keep_intermediate: also write ``T.fst`` and ``L.fst``.

    Returns:
        ``(L, T)`` as ``kaldifst.StdVectorFst``.
    """
    import kaldifst

    write_symbols(tables.tokens, folder / "tokens.txt")
    write_symbols(tables.words, folder / "words.txt")
    write_lexicon(sorted(tables.lexicon.items()), folder / "lexicon.txt")
    t0 = time.perf_counter()
    token_id, word_id = tables.token_id, tables.word_id
    l_fst = kaldifst.compile(lexicon_fst_text(tables.disambig_lexicon, token_id, word_id, sil_prob,
                                              tables.sil_disambig))  # fmt: skip
    kaldifst.add_self_loops(l_fst, [token_id["#0"]], [word_id["#0"]])
    log.info("L: %d states (%.1f s)", l_fst.num_states, time.perf_counter() - t0)
    t_fst = kaldifst.compile(ctc_token_fst_text(tables.n_disambig))
    if keep_intermediate:
        t_fst.write(str(folder / "T.fst"))
        l_fst.write(str(folder / "L.fst"))
    return l_fst, t_fst


def write_grammars(arpa_path: Path, folder: Path, unpruned_arpa_path: str | os.PathLike | None = None):
    """Step 3: ``G.fst`` from the (first-pass) ARPA, and ``G_no_prune.fst`` + ``lm_no_prune.arpa`` from the
    unpruned one if given.

    Args:
        arpa_path: the ARPA of the graph.
        folder: the staging folder (holds ``words.txt``).
        unpruned_arpa_path: the unpruned ARPA for ``--rescore`` (optional).

    Returns:
        G as ``kaldifst.StdVectorFst``.
    """
    t0 = time.perf_counter()
    g_fst = arpa_to_g(arpa_path, folder / "words.txt", folder / "G.fst")
    log.info("G: %d states (%.1f s)", g_fst.num_states, time.perf_counter() - t0)
    if unpruned_arpa_path is not None:
        arpa_to_g(unpruned_arpa_path, folder / "words.txt", folder / "G_no_prune.fst")
        shutil.copyfile(unpruned_arpa_path, folder / "lm_no_prune.arpa")
    return g_fst


def write_tlg(l_fst, g_fst, t_fst, folder: Path, arpa_path: Path, keep_intermediate: bool) -> int:
    """Step 4: ``TLG.fst`` (and ``LG.fst``), checked to read tokens only.

    Args:
        l_fst, g_fst, t_fst: the transducers of steps 2 and 3.
        folder: the staging folder.
        arpa_path: the ARPA (for the error message).
        keep_intermediate: also write ``LG.fst``.

    Returns:
        TLG's number of states.

    Raises:
        ValueError: TLG is empty (no word of the ARPA has a pronunciation).
        RuntimeError: a disambiguation symbol leaked onto TLG's input side.
    """
    tlg, lg = compose_tlg(l_fst, g_fst, t_fst)
    if tlg.num_states == 0:
        raise ValueError(f"TLG is empty: no word of {arpa_path} has a pronunciation in the lexicon")
    top = _max_ilabel(tlg)
    if top > N_TOKENS:  # cannot happen with T's <eps>:#k loops; a decoder would read past column 40
        raise RuntimeError(f"TLG has input label {top} > {N_TOKENS}: disambiguation symbols leaked")
    if keep_intermediate:
        lg.write(str(folder / "LG.fst"))
    del lg
    tlg.write(str(folder / "TLG.fst"))
    return tlg.num_states

"""G: the grammar transducer from an ARPA file, filtered as the recipe's ``make_tlg.sh`` (spec §4.3, §5.4).

``filter_arpa`` drops what ``make_tlg.sh`` drops (``<unk>``, ``<s> <s>``, ...) and n-grams over words outside
the lexicon; ``arpa_to_g`` compiles the rest with ``kaldilm.arpa2fst`` (``#0`` on backoff arcs).
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from language_model.graph.fst_io import read_fst
from nejm_b2txt_utils.symbol_table import read_symbols

log = logging.getLogger(__name__)

# Lines make_tlg.sh removes from the ARPA before arpa2fst (spec §4.3), matched case-insensitively.
_ARPA_DROP = ("<s> <s>", "</s> <s>", "</s> </s>", "<unk>", "<spoken_noise>")


def filter_arpa(
    src: str | os.PathLike, dst: str | os.PathLike, vocab: set[str] | None = None
) -> dict[int, int]:
    """Copy an ARPA, dropping what ``make_tlg.sh`` drops (``<unk>``, ``<s> <s>``, ...) and n-grams
    with words outside ``vocab``; the header counts are rewritten to match (the original left them stale,
    which Kaldi tolerates and KenLM rejects).

    Args:
        src: the ARPA file.
        dst: the filtered copy.
        vocab: words to keep (``None``: all).

    Returns:
        The kept n-gram count per order.

    Raises:
        ValueError: a malformed n-gram line, or no unigram left.
    """
    counts: dict[int, int] = {}

    def kept_lines():
        order = 0
        with open(src, encoding="utf-8") as f:
            for line in f:
                stripped = line.strip()
                if stripped.startswith("\\") and stripped.endswith("-grams:"):
                    order = int(stripped[1:].split("-")[0])
                    yield order, None
                    continue
                if order == 0 or not stripped or stripped == "\\end\\":
                    if stripped == "\\end\\":
                        order = 0
                    continue
                low = stripped.lower()
                if any(bad in low for bad in _ARPA_DROP):
                    continue
                fields = stripped.split()
                words = fields[1 : 1 + order]
                if len(words) != order:
                    raise ValueError(f"{src}: malformed {order}-gram line {stripped!r}")
                if vocab is not None and any(w not in vocab for w in words):
                    continue
                yield order, stripped

    for order, line in kept_lines():
        counts.setdefault(order, 0)
        if line is not None:
            counts[order] += 1
    if not counts or counts.get(1, 0) == 0:
        raise ValueError(
            f"{src}: no unigrams left after filtering; is it an ARPA file over the lexicon's words?"
        )
    with open(dst, "w", encoding="utf-8") as out:
        out.write("\\data\\\n")
        out.writelines(f"ngram {k}={counts[k]}\n" for k in sorted(counts))
        current = 0
        for order, line in kept_lines():
            if line is None:
                current = order
                out.write(f"\n\\{current}-grams:\n")
            else:
                out.write(line + "\n")
        out.write("\n\\end\\\n")
    return counts


def arpa_to_g(arpa_path: str | os.PathLike, words_txt: str | os.PathLike, g_path: str | os.PathLike):
    """G.fst from an ARPA (filtered like ``make_tlg.sh``) with kaldilm: ``#0:<eps>`` backoff arcs,
    ``<s>``/``</s>`` as epsilon, ilabel-sorted.

    Args:
        arpa_path: the ARPA file.
        words_txt: the word symbol table.
        g_path: where G.fst is written.

    Returns:
        The loaded ``kaldifst.StdVectorFst``.

    Raises:
        ValueError: as :func:`filter_arpa`.
    """
    import kaldilm

    vocab = set(read_symbols(words_txt).values()) - {"<eps>", "#0"}
    with tempfile.TemporaryDirectory(dir=Path(g_path).parent) as tmp:
        filtered = Path(tmp) / "filtered.arpa"
        counts = filter_arpa(arpa_path, filtered, vocab)
        log.info("ARPA %s after filtering: %s", arpa_path, counts)
        kaldilm.arpa2fst(
            input_arpa=str(filtered),
            output_fst=str(g_path),
            disambig_symbol="#0",
            read_symbol_table=str(words_txt),
            max_arpa_warnings=10,
        )
    return read_fst(g_path)

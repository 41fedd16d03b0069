"""Sentences for the synthetic T15 data, labelled with the original's corpus names.

Source: no PyPI package ships a usable offline body of permissively licensed English sentences
(checked: ``markov_draftjs`` has ~8.7k Markov-chain sentences full of novel character names;
``randomsentence`` needs NLTK's Brown corpus downloaded at run time). So the text is our own: a small
hand-written English grammar (:mod:`.wordlists`, this module) for the sentence-like corpora, and the
``wordfreq`` package's English frequency ranking (code Apache-2.0, word-list data CC BY-SA 4.0; we use
only the ranking of single words) for the word-list corpora:

* ``Switchboard``  conversational utterances ("well i think the kids really like it");
* ``Openwebtext``  longer web/news-style statements;
* ``Harvard``      short concrete statements in the style of phonetically balanced test sentences;
* ``Freq words``   random sequences of the 500 most frequent English words;
* ``Random``       random words from the 2,000-25,000 frequency band;
* ``50-Word``      sentences over our own 50-word AAC-style vocabulary (:data:`FIFTY_WORDS`).

Sentences come back in a display form (capitalised, punctuated) like the original's
``sentence_label``; labels and the LM corpus use :func:`normalize_text` of it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import lru_cache

import numpy as np

from nejm_b2txt_utils.synthetic import wordlists as wl
from nejm_b2txt_utils.text import normalize_text

CORPORA = ("50-Word", "Switchboard", "Openwebtext", "Harvard", "Random", "Freq words")
#: Default mixture of the text an LM is built from (the sentence-like corpora).
LM_MIXTURE = {"Switchboard": 0.55, "Openwebtext": 0.3, "Harvard": 0.1, "50-Word": 0.05}
_FORMS = {"base": 0, "3sg": 1, "past": 2, "ing": 3, "pp": 4}
_AN_EXCEPTIONS = {"university", "one", "union", "user", "usual"}
_IMPERATIVES = ["put", "set", "hang", "push", "pull", "slide", "lift", "place", "drop", "leave"]
_FAMILY = ["wife", "husband", "son", "daughter", "brother", "sister", "mother", "father", "cousin", "uncle"]


class _Grammar:
    """Phrase builders over the word lists; ``rng`` is a numpy Generator."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng

    def pick(self, seq):
        return seq[int(self.rng.integers(len(seq)))]

    def chance(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    @staticmethod
    def article(word: str) -> str:
        return "an" if word[0] in "aeiou" and word not in _AN_EXCEPTIONS else "a"

    def noun(self, cls: str, plural: bool = False) -> str:
        sing, plur = self.pick(wl.NOUNS[cls])
        return plur if plural else sing

    def np(self, cls: str, plural: bool | None = None, adj_p: float = 0.3) -> str:
        """Noun phrase of class ``cls`` with a determiner and maybe an adjective."""
        plural = self.chance(0.3) if plural is None else plural
        sing, plur = self.pick(wl.NOUNS[cls])
        noun = plur if plural else sing
        mass = sing == plur
        adj = self.pick(wl.ADJECTIVES) if cls in "FTAL" and self.chance(adj_p) else ""
        head = f"{adj} {noun}".strip()
        if plural or mass:
            det = self.pick(["the", "some", "my", "our", "those", "these", "their", "the"])
        else:
            det = self.pick(["the", "the", "a", "my", "your", "our", "this", "that", "his", "her"])
            if det == "a":
                det = self.article(head)
        return f"{det} {head}"

    def vp(self, form: str, transitive_p: float = 0.8, classes: str = "FTPLAXMR") -> str:
        """Verb phrase in ``form`` (base, 3sg, past, ing, pp), with a sensible object if transitive."""
        for _ in range(20):
            verb = self.pick(wl.VERBS)
            objs = [c for c in verb[5] if c in classes]
            if objs and (self.chance(transitive_p) or "-" not in verb[5]):
                return f"{verb[_FORMS[form]]} {self.np(self.pick(objs))}"
            if "-" in verb[5]:
                tail = ""
                if self.chance(0.5):
                    tail = f" {self.pick(wl.PLACE_PREPS)} the {self.noun('L')}"
                return verb[_FORMS[form]] + tail
        return f"{verb[_FORMS[form]]} it"

    def clause(self) -> str:
        if self.chance(0.5):
            return f"{self.pick(wl.SUBJECT_PL)} {self.vp('base')} {self.pick(wl.TIME_HABIT)}"
        return f"{self.pick(wl.SUBJECT_SG)} {self.vp('past')} {self.pick(wl.TIME_PAST)}"


def _switchboard(g: _Grammar) -> str:
    t = int(g.rng.integers(16))
    if t == 0:
        return f"{g.pick(wl.FILLERS)} i think {g.clause()}"
    if t == 1:
        return f"i {g.pick(['like', 'love', 'hate', 'enjoy'])} {g.vp('ing', classes='FTAMX')}"
    if t == 2:
        return f"{g.pick(wl.SUBJECT_PL)} {g.pick(wl.FREQ_ADVERBS)} {g.vp('base')} {g.pick(wl.TIME_HABIT)}"
    if t == 3:
        return f"{g.pick(wl.SUBJECT_SG)} {g.vp('3sg')} {g.pick(wl.TIME_HABIT)}"
    if t == 4:
        return f"we {g.vp('past')} {g.pick(wl.TIME_PAST)}"
    if t == 5:
        return f"do you {g.vp('base')}?"
    if t == 6:
        return f"have you ever {g.vp('pp')}?"
    if t == 7:
        return g.pick([f"that's {g.pick(wl.DEGREE)} {g.pick(wl.EVAL_ADJECTIVES)}",
                       f"that was {g.article(w := g.pick(wl.EVAL_ADJECTIVES))} {w} {g.noun('X')}"])
    if t == 8:
        return f"i don't know if {g.pick(wl.SUBJECT_SG)} {g.vp('past')}"
    if t == 9:
        return f"my {g.pick(_FAMILY)} {g.vp('past')} {g.pick(wl.TIME_PAST)}"
    if t == 10:
        return f"i'm going to {g.vp('base')} {g.pick(wl.TIME_FUTURE)}"
    if t == 11:
        return f"i was {g.vp('ing')} {g.pick(wl.TIME_PAST)}"
    if t == 12:
        return f"there's a lot of {g.noun(g.pick('FTAP'), plural=True)} {g.pick(wl.PLACE_PREPS)} the {g.noun('L')}"
    if t == 13:
        return f"{g.pick(wl.SUBJECT_SG)} is {g.pick(wl.DEGREE)} {g.pick(wl.PERSON_ADJECTIVES)} {g.pick(wl.TIME_PAST)}"
    if t == 14:
        return f"i used to {g.vp('base')} when i was {g.pick(['young', 'a kid', 'in school', 'in college'])}"
    return f"{g.pick(wl.FILLERS)} we went to the {g.noun('L')} {g.pick(wl.TIME_PAST)}"


def _openwebtext(g: _Grammar) -> str:
    t = int(g.rng.integers(10))
    org = g.pick(wl.ORGS)
    if t == 0:
        return f"the {org} said it would {g.vp('base', 1.0, 'XTL')} {g.pick(wl.TIME_FUTURE)}"
    if t == 1:
        verb = g.pick([v for v in wl.VERBS if "P" in v[5]])
        return f"{g.pick(wl.NUMBERS)} {g.noun('P', True)} were {verb[4]} at the {g.noun('L')} {g.pick(wl.TIME_PAST)}"
    if t == 2:
        return f"according to the {g.noun('R')} the {org} {g.vp('past', 1.0, 'XTLP')} {g.pick(wl.TIME_PAST)}"
    if t == 3:
        return f"this is one of the most {g.pick(wl.EVAL_ADJECTIVES)} {g.noun('X', True)} in the {g.noun('L')}"
    if t == 4:
        return (f"many {g.noun('P', True)} believe that the {g.noun('X')} is {g.pick(wl.DEGREE)} "
                f"{g.pick(wl.EVAL_ADJECTIVES)}")
    if t == 5:
        return f"the {org} plans to build a new {g.noun('L')} near the {g.noun('L')} {g.pick(wl.TIME_FUTURE)}"
    if t == 6:
        return f"{g.pick(wl.NAMES)} told the {g.noun('P')} that the {g.noun('X')} was {g.pick(wl.EVAL_ADJECTIVES)}"
    if t == 7:
        return f"officials say the new {g.noun('X')} will help {g.noun('P', True)} {g.vp('base', 0.9, 'XTFL')}"
    if t == 8:
        return f"it is not clear whether the {org} will {g.vp('base', 1.0, 'XTLP')} {g.pick(wl.TIME_FUTURE)}"
    return (f"the {g.noun('X')} has been {g.pick(wl.EVAL_ADJECTIVES)} for {g.pick(wl.NUMBERS)} "
            f"{g.noun('P', True)} and their {g.noun('X', True)}")


def _harvard(g: _Grammar) -> str:
    t = int(g.rng.integers(5))
    if t == 0:
        subj = f"the {g.pick(wl.ADJECTIVES)} {g.noun(g.pick('AP'))}"
        verb = g.pick([v for v in wl.VERBS if v[5] == "-"])
        return f"{subj} {verb[2]} {g.pick(wl.PREPOSITIONS)} the {g.noun(g.pick('LT'))}"
    if t == 1:
        return (f"{g.pick(_IMPERATIVES)} the {g.pick(wl.ADJECTIVES)} {g.noun('T')} "
                f"{g.pick(['on', 'under', 'near', 'behind', 'by'])} the {g.noun('T')}")
    if t == 2:
        subj = f"{g.article(a := g.pick(wl.ADJECTIVES))} {a} {g.noun(g.pick('AP'))}"
        return f"{subj} {g.vp('past', 1.0, 'FTA')}"
    if t == 3:
        return f"the {g.noun(g.pick('FTAL'))} is {g.pick(wl.ADJECTIVES)} and {g.pick(wl.ADJECTIVES)}"
    verb = g.pick([v for v in wl.VERBS if v[5] == "-"])
    return f"{g.noun(g.pick('AP'), True)} {verb[0]} {g.pick(wl.FREQ_ADVERBS)} in the {g.noun('L')}"


def _fifty_word(g: _Grammar) -> str:
    t = int(g.rng.integers(10))
    state = g.pick(["cold", "hot", "tired", "happy", "sore", "better", "good", "bad"])
    deg = g.pick(["", "", "very ", "too "])
    if t == 0:
        return g.pick([f"i am {deg}{state}", f"you are {deg}{state}", f"we are {state}", f"my son is {state}"])
    if t == 1:
        return g.pick([f"i feel {deg}{state}", f"i do not feel {state}", f"i feel better {g.pick(['now', 'today'])}"])
    if t == 2:
        return f"i {g.pick(['want', 'need', 'like'])} {g.pick(['some ', 'more ', ''])}{g.pick(['water', 'food'])}"
    if t == 3:
        return f"i need my {g.pick(['bed', 'phone', 'doctor', 'wife', 'son'])}"
    if t == 4:
        return f"please {g.pick(['call', 'get'])} my {g.pick(['wife', 'son', 'doctor'])}{g.pick(['', ' now', ' today'])}"
    if t == 5:
        return f"do you {g.pick(['want', 'need', 'like'])} {g.pick(['some', 'more'])} {g.pick(['water', 'food'])}?"
    if t == 6:
        return g.pick(["yes please", "no please", "okay please", "thank you", "hello", "goodbye", "see you later",
                       "hello doctor", "thank you doctor", "goodbye my son"])
    if t == 7:
        return f"{g.pick(['we', 'you'])} go home {g.pick(['now', 'later', 'today'])}"
    if t == 8:
        return f"{g.pick(['yes', 'no'])} i am {g.pick(['not ', ''])}{state}"
    return g.pick([f"come see my {g.pick(['wife', 'son'])}", "get my phone please", "i have no food",
                   "do you have my phone?", "please help", "come help my son", "i want more food now"])


@lru_cache(maxsize=1)
def _frequency_bands() -> tuple[tuple[str, ...], tuple[str, ...]]:
    import wordfreq

    from nejm_b2txt_utils.lexicon import cmu_dictionary

    cmu = cmu_dictionary()
    ranked = [w for w in wordfreq.top_n_list("en", 25000) if w.isalpha() and w in cmu]
    frequent = tuple(w for w in ranked[:600] if len(w) > 1 or w in ("a", "i"))[:500]
    rare = tuple(w for w in ranked[2000:] if len(w) >= 3)
    return frequent, rare


def _freq_words(g: _Grammar) -> str:
    frequent, _ = _frequency_bands()
    return " ".join(g.pick(frequent) for _ in range(int(g.rng.integers(3, 9))))


def _random_words(g: _Grammar) -> str:
    _, rare = _frequency_bands()
    return " ".join(g.pick(rare) for _ in range(int(g.rng.integers(3, 8))))


_GENERATORS: dict[str, Callable[[_Grammar], str]] = {
    "Switchboard": _switchboard, "Openwebtext": _openwebtext, "Harvard": _harvard,
    "Freq words": _freq_words, "Random": _random_words, "50-Word": _fifty_word,
}


def _display(text: str) -> str:
    """Capitalised, punctuated display form: ``i'm going`` -> ``I'm going.``"""
    question = text.endswith("?")
    words = [("I" + w[1:]) if w == "i" or w.startswith("i'") else w for w in text.rstrip("?").split()]
    for i, w in enumerate(words[:-1]):
        if w in wl.FILLERS and i == 0:
            words[i] = w + ","
    out = " ".join(words)
    return out[0].upper() + out[1:] + ("?" if question else ".")


def make_sentence(corpus: str, rng: np.random.Generator, max_words: int | None = None) -> str:
    """One sentence of ``corpus`` in display form; at most ``max_words`` words when given."""
    if corpus not in _GENERATORS:
        raise ValueError(f"corpus {corpus!r}: expected one of {CORPORA}")
    g = _Grammar(rng)
    text = _GENERATORS[corpus](g)
    for _ in range(200):
        if max_words is None or len(text.split()) <= max_words:
            break
        text = _GENERATORS[corpus](g)
    else:
        text = " ".join(text.rstrip("?").split()[:max_words])
    return _display(" ".join(text.split()))


def lm_corpus_sentences(n: int = 40000, seed: int = 0, exclude: Iterable[str] = (),
                        mixture: dict[str, float] | None = None) -> list[str]:
    """``n`` normalised sentences (lower case, no punctuation) for building an n-gram LM.

    Drawn from the same grammar as the Switchboard/Openwebtext/Harvard/50-Word blocks, but no
    sentence equals (after :func:`normalize_text`) any sentence in ``exclude``, so val/test
    sentences stay unseen by the LM. Duplicates are allowed, as in any real text corpus.
    """
    mixture = mixture or LM_MIXTURE
    banned = {normalize_text(s) for s in exclude}
    names = list(mixture)
    probs = np.array([mixture[k] for k in names], dtype=float)
    probs /= probs.sum()
    rng = np.random.default_rng([seed, 0x1A2B])
    out: list[str] = []
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 20 * n + 1000:
            raise RuntimeError(f"lm_corpus_sentences: could only draw {len(out)} of {n} non-excluded sentences")
        corpus = names[int(rng.choice(len(names), p=probs))]
        sentence = normalize_text(make_sentence(corpus, rng))
        if sentence not in banned:
            out.append(sentence)
    return out

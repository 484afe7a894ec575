"""A synthetic language pair with real sentence structure, for translating long sentences.

The source is English-like; the target ("Verbish") says the same thing with a systematically
different grammar, so a translator must reorder, inflect and mark case, not copy:

    source  NP  = det adj* noun [prep NP'] [which verb NP']     (NP' = det adj* noun)
            S   = NP verb [NP] [prep NP'], clauses joined by "and" / "but"
                  (an object NP has no prep phrase, so every sentence has exactly one parse)
    target  NP  = [NP'-acc verb-REL] det noun adj* CASE        relative clause before the noun,
                                                                adjectives after it
            PP  = NP'-obl postposition                          postpositions
            S   = NP-nom [NP-acc] [PP] verb                     the verb last

Agreement: nouns, adjectives and verbs have singular and plural forms in both languages;
the target verb and adjectives agree in number with their subject / noun; case particles
mark subject (nom), object (acc) and the object of a postposition (obl). For example
(see ``example()``):

    the big dog which chases a cat sees some birds in the garden
    -> kat-ACC chase-REL the dog big-SG NOM  some birds-PL ACC  the garden OBL in  see-SG

The target vocabulary is made of invented words (built from syllables, fixed by a seed), a
few hundred of them. Token ids: PAD 0, BOS 1, EOS 2, then the source words, then the target
words, in one shared vocabulary. A sentence is sampled as a tree and written out in both
languages; ``sample(rng, n, min_len, max_len, exclude)`` draws sources of a given length
range that are not in ``exclude`` (the held-out set), so the splits share no sentence.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from .tasks import BOS, EOS, PAD, _count_try

NOUNS = ("dog cat bird horse farmer teacher child doctor king queen student artist baker sailor soldier "
         "pilot writer singer garden river house market forest city village school bridge mountain lake "
         "castle road ship train boat book letter song table window apple").split()
ADJECTIVES = ("big small old young red green black white happy sad quiet loud fast tall rich poor clever brave "
              "kind dark").split()
VERBS_T = ("see chase follow help find visit paint watch love call meet carry push build open hold draw "
           "remember teach feed guard leave greet answer").split()
VERBS_I = "sleep run wait sing dance fall laugh work swim rest".split()
PREPS = "in on near under behind with beside above".split()
DETS_SG = "the a every this no".split()          # determiners of a singular noun
DETS_PL = "the some these many no".split()       # of a plural noun ("the", "no" serve both)
LINKS = ("and", "but")
REL = "which"
CASES = ("nom", "acc", "obl")


def _plural(w: str) -> str:
    if w.endswith(("s", "sh", "ch", "x")):
        return w + "es"
    if w.endswith("y") and w[-2] not in "aeiou":
        return w[:-1] + "ies"
    if w == "child":
        return "children"
    return w + "s"


def _third_person(v: str) -> str:
    return _plural(v)                       # sees, teaches, carries: the same spelling rules here


def _invent(n: int, rng: np.random.Generator, taken: set) -> list[str]:
    """n new pseudo-words of 2–3 syllables, none in ``taken``."""
    cons, vows = "bdfgklmnprstvz", "aeiou"
    out = []
    while len(out) < n:
        w = "".join(cons[rng.integers(len(cons))] + vows[rng.integers(len(vows))]
                    for _ in range(int(rng.integers(2, 4))))
        if w not in taken:
            taken.add(w)
            out.append(w)
    return out


def _pick(rng: np.random.Generator, words) -> str:
    return words[int(rng.integers(len(words)))]


@dataclass
class NP:
    det: str
    adjs: list
    noun: str
    plural: bool
    pp: tuple | None = None          # (prep, NP)
    rel: tuple | None = None         # (verb, object NP): "which verb NP"


@dataclass
class Clause:
    subj: NP
    verb: str
    obj: NP | None
    pp: tuple | None                 # (prep, NP)


@dataclass
class TranslationTask:
    """English-like → verb-final "Verbish" translation; sentences of min_len–max_len source tokens."""

    min_len: int = 5
    max_len: int = 40
    seed: int = 0                    # fixes the invented target words
    p_adj: float = 0.35              # chance of each further adjective (at most 2)
    p_pp: float = 0.3                # chance of a prepositional phrase on an NP / a clause
    p_rel: float = 0.25              # chance of a relative clause on a subject / object NP
    vocab: list = field(init=False, repr=False)

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        src = (sorted(set(DETS_SG + DETS_PL)) + NOUNS + [_plural(n) for n in NOUNS] + ADJECTIVES
               + VERBS_T + [_third_person(v) for v in VERBS_T] + VERBS_I + [_third_person(v) for v in VERBS_I]
               + PREPS + list(LINKS) + [REL])
        taken = set(src)
        lemmas = sorted(set(DETS_SG + DETS_PL)) + NOUNS + ADJECTIVES + VERBS_T + VERBS_I + PREPS + list(LINKS)
        self.lex = dict(zip(lemmas, _invent(len(lemmas), rng, taken)))          # lemma -> target stem
        tgt = ([self.lex[w] for w in lemmas if w not in NOUNS + ADJECTIVES + VERBS_T + VERBS_I]
               + [self.lex[n] + s for n in NOUNS for s in ("", "en")]
               + [self.lex[a] + s for a in ADJECTIVES for s in ("", "i")]
               + [self.lex[v] + s for v in VERBS_T + VERBS_I for s in ("a", "an")]
               + ["ga", "o", "ni", "su"])                                       # nom, acc, obl, relative
        self.vocab = ["<pad>", "<bos>", "<eos>"] + src + tgt
        if len(set(self.vocab)) != len(self.vocab):
            raise RuntimeError("translation vocabulary has a duplicate word")    # pragma: no cover
        self.ids = {w: i for i, w in enumerate(self.vocab)}
        self.n_source_words = len(src)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    # ------------------------------------------------------------------ sampling trees
    def _noun_phrase(self, rng, simple: bool, pp: bool = True) -> NP:
        plural = bool(rng.random() < 0.4)
        det = _pick(rng, DETS_PL if plural else DETS_SG)
        adjs = []
        while len(adjs) < 2 and rng.random() < self.p_adj:
            a = _pick(rng, ADJECTIVES)
            if a not in adjs:
                adjs.append(a)
        np_ = NP(det, adjs, _pick(rng, NOUNS), plural)
        if not simple:
            if pp and rng.random() < self.p_pp:
                np_.pp = (_pick(rng, PREPS), self._noun_phrase(rng, True))
            if rng.random() < self.p_rel:
                np_.rel = (_pick(rng, VERBS_T), self._noun_phrase(rng, True))
        return np_

    def _clause(self, rng) -> Clause:
        subj = self._noun_phrase(rng, False)
        if rng.random() < 0.75:
            # an object takes no prepositional phrase: "sees the cat in the garden" would be ambiguous
            # (the cat's place or the seeing's), so a phrase after the object always belongs to the clause
            verb, obj = _pick(rng, VERBS_T), self._noun_phrase(rng, False, pp=False)
        else:
            verb, obj = _pick(rng, VERBS_I), None
        pp = (_pick(rng, PREPS), self._noun_phrase(rng, True)) if rng.random() < self.p_pp else None
        return Clause(subj, verb, obj, pp)

    def _sentence(self, rng, lo: int, hi: int):
        """Clauses and links until the source has at least a drawn length in [lo, hi]; None if it overshoots."""
        want = int(rng.integers(lo, hi + 1))
        clauses, links = [self._clause(rng)], []
        n = len(self._source(clauses, []))
        while n < want:
            links.append(_pick(rng, LINKS))
            clauses.append(self._clause(rng))
            n += 1 + len(self._source(clauses[-1:], []))
        return (clauses, links) if n <= hi else None

    # ------------------------------------------------------------------ writing them out
    def _src_np(self, n: NP) -> list[str]:
        out = [n.det, *n.adjs, _plural(n.noun) if n.plural else n.noun]
        if n.pp:
            out += [n.pp[0], *self._src_np(n.pp[1])]
        if n.rel:
            out += [REL, self._src_verb(n.rel[0], n.plural), *self._src_np(n.rel[1])]
        return out

    @staticmethod
    def _src_verb(v: str, plural: bool) -> str:
        return v if plural else _third_person(v)

    def _source(self, clauses, links) -> list[str]:
        out = []
        for i, c in enumerate(clauses):
            if i:
                out.append(links[i - 1])
            out += self._src_np(c.subj) + [self._src_verb(c.verb, c.subj.plural)]
            if c.obj:
                out += self._src_np(c.obj)
            if c.pp:
                out += [c.pp[0], *self._src_np(c.pp[1])]
        return out

    def _tgt_verb(self, v: str, plural: bool) -> str:
        return self.lex[v] + ("an" if plural else "a")

    def _tgt_np(self, n: NP, case: str) -> list[str]:
        out = []
        if n.rel:                                   # relative clause first: object, verb, REL
            out += self._tgt_np(n.rel[1], "acc") + [self._tgt_verb(n.rel[0], n.plural), "su"]
        out += [self.lex[n.det], self.lex[n.noun] + ("en" if n.plural else "")]
        out += [self.lex[a] + ("i" if n.plural else "") for a in n.adjs]
        if n.pp:                                    # postposition phrase after the noun group
            out += self._tgt_np(n.pp[1], "obl") + [self.lex[n.pp[0]]]
        return out + [{"nom": "ga", "acc": "o", "obl": "ni"}[case]]

    def _target(self, clauses, links) -> list[str]:
        out = []
        for i, c in enumerate(clauses):
            if i:
                out.append(self.lex[links[i - 1]])
            out += self._tgt_np(c.subj, "nom")
            if c.obj:
                out += self._tgt_np(c.obj, "acc")
            if c.pp:
                out += self._tgt_np(c.pp[1], "obl") + [self.lex[c.pp[0]]]
            out.append(self._tgt_verb(c.verb, c.subj.plural))
        return out

    # ------------------------------------------------------------------ the task interface
    def sample(self, rng: np.random.Generator, n: int, min_len: int | None = None, max_len: int | None = None,
               exclude: set | None = None) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
        """n (source ids, target ids) pairs with min_len ≤ len(source) ≤ max_len, sources not in ``exclude``."""
        lo, hi = min_len or self.min_len, max_len or self.max_len
        if lo < 3 or hi < lo:
            raise ValueError(f"TranslationTask.sample: need 3 <= min_len <= max_len, got {lo}, {hi}")
        out, tries = [], 0
        while len(out) < n:
            tries = _count_try(tries, n, exclude)
            s = self._sentence(rng, lo, hi)
            if s is None or len(self._source(*s)) < lo:
                continue
            src = tuple(self.ids[w] for w in self._source(*s))
            if exclude is None or src not in exclude:
                out.append((src, tuple(self.ids[w] for w in self._target(*s))))
        return out

    def batch(self, pairs):
        """(src (B, S), tgt_in (B, T), tgt_out (B, T)) int64, PAD-padded to the longest in the batch."""
        S = max(len(s) for s, _ in pairs)
        T = max(len(t) for _, t in pairs) + 1
        src = np.full((len(pairs), S), PAD, np.int64)
        tgt = np.full((len(pairs), T + 1), PAD, np.int64)
        for i, (s, t) in enumerate(pairs):
            src[i, :len(s)] = s
            tgt[i, 0] = BOS
            tgt[i, 1:len(t) + 1] = t
            tgt[i, len(t) + 1] = EOS
        return src, tgt[:, :-1], tgt[:, 1:]

    def words(self, ids) -> list[str]:
        return [self.vocab[int(i)] for i in ids if int(i) not in (PAD, BOS, EOS)]

    def text(self, ids) -> str:
        return " ".join(self.words(ids))

    def example(self, seed: int = 0, min_len: int = 12, max_len: int = 20) -> tuple[str, str]:
        """One sentence pair as text."""
        s, t = self.sample(np.random.default_rng(seed), 1, min_len, max_len)[0]
        return self.text(s), self.text(t)


def corpus_bleu(hypotheses, references, max_n: int = 4) -> float:
    """Corpus BLEU (0–100) of token lists against one reference each, as sacrebleu computes it:
    clipped n-gram precisions for n = 1..4 summed over the corpus, their geometric mean, a brevity
    penalty exp(1 − ref/hyp) when the hypotheses are shorter, and sacrebleu's default "exp"
    smoothing (the k-th n-gram order with no match counts as 1/2^k matches). On texts that are
    already space-separated words (as here) this equals ``sacrebleu.corpus_bleu``."""
    if len(hypotheses) != len(references):
        raise ValueError(f"corpus_bleu: {len(hypotheses)} hypotheses but {len(references)} references")
    correct, total = [0] * max_n, [0] * max_n
    hyp_len = ref_len = 0
    for h, r in zip(hypotheses, references):
        h, r = list(h), list(r)
        hyp_len, ref_len = hyp_len + len(h), ref_len + len(r)
        for n in range(1, max_n + 1):
            hc = Counter(tuple(h[i:i + n]) for i in range(len(h) - n + 1))
            rc = Counter(tuple(r[i:i + n]) for i in range(len(r) - n + 1))
            correct[n - 1] += sum(min(c, rc[g]) for g, c in hc.items())
            total[n - 1] += max(len(h) - n + 1, 0)
    if not any(correct):
        return 0.0
    bp = 1.0 if hyp_len >= ref_len else (math.exp(1 - ref_len / hyp_len) if hyp_len else 0.0)
    logs, smooth = [], 1.0
    for c, t in zip(correct, total):
        if t == 0:
            break
        if c == 0:
            smooth *= 2
            logs.append(math.log(1.0 / (smooth * t)))
        else:
            logs.append(math.log(c / t))
    logs += [-math.inf] * (max_n - len(logs))                     # an order with no n-grams at all: BLEU 0
    return 100.0 * bp * math.exp(sum(logs) / max_n) if all(np.isfinite(logs)) else 0.0

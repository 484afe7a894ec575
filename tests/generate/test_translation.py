"""The synthetic language pair: grammar, word order, agreement, splits, and corpus BLEU."""
import math

import numpy as np
import pytest

from minitrans.data.translation import (ADJECTIVES, NOUNS, NP, VERBS_I, VERBS_T, Clause, TranslationTask,
                                        corpus_bleu)


@pytest.fixture(scope="module")
def task():
    return TranslationTask()


def test_a_hand_built_sentence_in_both_languages(task):
    L = task.lex
    subj = NP("the", ["big"], "dog", False, rel=("chase", NP("a", [], "cat", False)))
    obj = NP("some", ["red", "old"], "bird", True)
    c1 = Clause(subj, "see", obj, ("in", NP("the", [], "garden", False)))
    c2 = Clause(NP("these", [], "child", True), "sleep", None, None)
    assert task._source([c1, c2], ["but"]) == (
        "the big dog which chases a cat sees some red old birds in the garden but these children sleep").split()
    want = ([L["a"], L["cat"], "o", L["chase"] + "a", "su", L["the"], L["dog"], L["big"], "ga",
             L["some"], L["bird"] + "en", L["red"] + "i", L["old"] + "i", "o",
             L["the"], L["garden"], "ni", L["in"], L["see"] + "a",
             L["but"], L["these"], L["child"] + "en", "ga", L["sleep"] + "an"])
    assert task._target([c1, c2], ["but"]) == want


def test_lengths_splits_and_vocabulary(task):
    rng = np.random.default_rng(1)
    held = task.sample(rng, 40, 5, 40)
    assert all(5 <= len(s) <= 40 for s, _ in held)
    long = task.sample(rng, 10, 61, 80)
    assert all(61 <= len(s) <= 80 for s, _ in long)
    train = task.sample(rng, 400, 5, 12, exclude={s for s, _ in held})
    assert not {s for s, _ in train} & {s for s, _ in held}
    src_ids = {i for s, _ in train + held + long for i in s}
    tgt_ids = {i for _, t in train + held + long for i in t}
    assert not src_ids & tgt_ids                            # the two languages share no word
    assert max(src_ids) < 3 + task.n_source_words <= min(tgt_ids)
    assert 200 <= task.vocab_size - 3 - task.n_source_words <= 400   # a target vocabulary of a few hundred words


def test_every_source_has_one_parse(task):
    """A prepositional phrase after an object would be ambiguous ("sees the cat in the garden": the
    cat's place or the seeing's, two different targets); objects never take one, so the phrase after
    an object is always the clause's, and equal sources always get equal targets."""
    rng = np.random.default_rng(2)
    clauses = [task._clause(rng) for _ in range(2000)]
    assert all(c.obj is None or c.obj.pp is None for c in clauses)
    assert any(c.obj is not None and c.pp is not None for c in clauses)
    assert any(c.subj.pp is not None for c in clauses)
    seen = {}
    for s, t in task.sample(rng, 1000, 5, 14):
        assert seen.setdefault(s, t) == t


def test_target_word_order_is_verb_final_with_adjectives_after_nouns(task):
    verbs = {task.lex[v] + e for v in VERBS_T + VERBS_I for e in ("a", "an")}
    nouns = {task.lex[n] + e for n in NOUNS for e in ("", "en")}
    adjs = {task.lex[a] + e for a in ADJECTIVES for e in ("", "i")}
    links = {task.lex["and"], task.lex["but"]}
    for s, t in task.sample(np.random.default_rng(3), 200, 5, 40):
        words = task.words(t)
        clauses = " ".join(words)
        for w in links:
            clauses = clauses.replace(f" {w} ", " | ")
        for clause in clauses.split(" | "):
            assert clause.split()[-1] in verbs               # each clause ends with its verb
        for a, b in zip(words, words[1:]):
            if b in adjs:
                assert a in nouns | adjs                     # an adjective follows its noun (or another adjective)
        n_src_verbs = sum(w in {v for v in VERBS_T + VERBS_I} | {v + "s" for v in VERBS_T + VERBS_I} |
                          {v + "es" for v in VERBS_T + VERBS_I} | {v[:-1] + "ies" for v in VERBS_T + VERBS_I}
                          for w in task.words(s))
        assert sum(w in verbs for w in words) == n_src_verbs


def test_bad_length_range(task):
    with pytest.raises(ValueError, match="min_len <= max_len"):
        task.sample(np.random.default_rng(0), 1, 20, 10)


# ----------------------------------------------------------------------------- BLEU
def test_corpus_bleu_by_hand():
    assert corpus_bleu([list("abcd")], [list("abcd")]) == pytest.approx(100.0)
    # precisions 3/4, 2/3, 1/2 and no 4-gram match: smoothed to 1/(2·1)
    assert corpus_bleu([list("abcd")], [list("abce")]) == pytest.approx(100 * (0.75 * 2 / 3 * 0.5 * 0.5) ** 0.25)
    # a short hypothesis: brevity penalty exp(1 - 6/5) on perfect precisions
    assert corpus_bleu([list("abcde")], [list("abcdef")]) == pytest.approx(100 * math.exp(1 - 6 / 5))
    assert corpus_bleu([list("ab")], [list("abcd")]) == 0.0        # no 3-grams at all
    assert corpus_bleu([list("xyzw")], [list("abcd")]) == 0.0
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        corpus_bleu([["a"], ["b"]], [["a"]])


def test_corpus_bleu_agrees_with_sacrebleu(task):
    sacrebleu = pytest.importorskip("sacrebleu")
    rng = np.random.default_rng(4)
    refs = [task.words(t) for _, t in task.sample(rng, 60, 5, 40)]
    for keep, cut in ((0.9, 0), (0.6, 3), (1.0, 5)):
        hyps = [[w if rng.random() < keep else "zz" for w in r[:max(1, len(r) - int(rng.integers(0, cut + 1)))]]
                for r in refs]
        want = sacrebleu.corpus_bleu([" ".join(h) for h in hyps], [[" ".join(r) for r in refs]]).score
        assert corpus_bleu(hyps, refs) == pytest.approx(want, rel=1e-9)

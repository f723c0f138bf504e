import re
import time

import numpy as np
import pytest

from crslib.format import serialize
from crslib.evaluation import evaluate, recommenders
from crslib.evaluation.baselines import Popularity, Repeat, TextRetrieval
from crslib.studies.bench import random_sids
from crslib.data import Catalog, Dialog, Item, Turn


def dialogs():
    return [Dialog("1", [Turn("user", "@a @b", ("a", "b")), Turn("assistant", "@b", ("b",))]),
            Dialog("2", [Turn("assistant", "@c @b", ("c", "b"))])]


def test_popularity_counts_mentions_and_breaks_ties_by_catalog_order():
    p = Popularity(["d", "c", "b", "a"]).fit(dialogs())
    assert p.rank([], 3) == ["b", "c", "a"]  # b:3, then c and a (1 each) in catalog order
    assert p.rank(["a"]) == ["b", "c", "a", "d"]


def test_repeat_puts_recent_context_items_first():
    r = Repeat(["d", "c", "b", "a"]).fit(dialogs())
    assert r.rank(["a", "d", "a"], 4) == ["a", "d", "b", "c"]
    assert r.rank([], 2) == ["b", "c"]


# ----------------------------------------------------------------------------- text retrieval
CATALOG = Catalog([Item("a", "Alien", "1979", ("space", "horror")),
                   Item("b", "Love Actually", "2003", ("love", "funny")),
                   Item("c", "Spaceballs", "1987", ("space", "funny")),
                   Item("d", "Notting Hill", "1999", ("love",)),
                   Item("e", "Solaris", "1972", ("space",)),
                   Item("f", "Gravity", "2013", ("space",))])
SIDS = random_sids(CATALOG.ids, 2, 4, 0)
WORDS = ("space", "love", "funny", "horror")
TRAIN = [Dialog("t1", [Turn("user", "@f @c", ("f", "c")), Turn("assistant", "@f @a", ("f", "a"))]),
         Dialog("t2", [Turn("assistant", "@f @c", ("f", "c"))])]  # popularity: f c a b d e


class BagOfWords:
    """Fake encoder: counts of ``WORDS`` (whole words) plus a constant; records its calls."""

    def __init__(self):
        self.calls = []

    def __call__(self, texts):
        self.calls.append(list(texts))
        tokens = [re.findall(r"[a-z]+", t.lower()) for t in texts]
        return np.array([[ws.count(w) for w in WORDS] + [1] for ws in tokens], dtype=np.float32)


def fitted(**kw):
    return TextRetrieval(CATALOG, SIDS, encode=BagOfWords(), **kw).fit(TRAIN)


def case(*turns, item="a"):
    """The last recommendation case of a dialog made of ``turns`` plus an assistant turn."""
    d = Dialog("x", [Turn(role, text, tuple(re.findall(r"@(\w)", text))) for role, text in turns]
               + [Turn("assistant", f"try @{item}", (item,))])
    return serialize.serialize(d, SIDS)[-1]


def test_context_is_the_last_turns_with_titles():
    ex = case(("user", "hi"), ("assistant", "seen @e?"), ("user", "I loved @b, and <a_1>"))
    assert fitted(max_context_turns=2).context_text(ex) == (
        "Assistant: seen Solaris (1972)?\nUser: I loved Love Actually (2003), and <a_1>")
    assert fitted(max_context_turns=None).context_text(ex).startswith("User: hi\nAssistant: ")
    assert fitted().context_text(case()) == ""


def test_ranking_by_hand_ties_by_popularity():
    # cosine with "space": e = f = 1, a = c = 0.816, d = 0.5, b = 0.289; popularity f c a b d e
    r = fitted()
    assert list(r.rank_texts(["User: anything in space?"])) == [["f", "e", "c", "a", "d", "b"]]
    assert list(r.rank_texts(["User: space", ""], k=2)) == [["f", "e"], ["f", "c"]]


def test_rank_cases_equals_brute_force_cosine_and_encodes_once():
    cases = [case(("user", "space horror please")), case(("user", "I love @d"), item="b"),
             case(("user", "funny stuff"), ("assistant", "like @c?"), ("user", "more love")),
             case(item="f")]
    r = fitted()
    got = list(r.rank_cases(cases))
    assert len(r.encode.calls) == 2  # items at fit, then every context in one call

    def vec(text):
        return BagOfWords()([text])[0].astype(np.float64)

    pop = {i: k for k, i in enumerate(["f", "c", "a", "b", "d", "e"])}
    items = {i: vec(CATALOG[i].text()) for i in CATALOG.ids}
    for ex, ranking in zip(cases, got):
        q = vec(r.context_text(ex))
        cos = {i: q @ v / np.linalg.norm(q) / np.linalg.norm(v) for i, v in items.items()}
        want = sorted(CATALOG.ids, key=lambda i: (-round(cos[i], 6), pop[i]))
        assert ranking == (want if ex.context else list(pop))
    ranks = recommenders.baseline_ranks(fitted(), cases)
    assert ranks == [g.index(ex.item) + 1 for g, ex in zip(got, cases)]
    assert ranks[0] == 1  # "space horror please" has Alien's words exactly


def test_default_encoder_is_encode_texts_with_the_sid_encoder(monkeypatch):
    from crslib.ids import encode
    seen = []
    monkeypatch.setattr(encode, "encode_texts",
                        lambda texts, name, **kw: seen.append(name) or BagOfWords()(texts))
    r = TextRetrieval(CATALOG, SIDS, "my-encoder").fit(TRAIN)
    assert list(r.rank_texts(["space"], 1)) == [["f"]] and seen == ["my-encoder"] * 2
    TextRetrieval(CATALOG, SIDS).fit(TRAIN)
    assert seen[-1] == encode.DEFAULT_ENCODER


def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match="max_context_turns"):
        fitted(max_context_turns=0)
    with pytest.raises(RuntimeError, match="not fitted"):
        TextRetrieval(CATALOG, SIDS).rank_texts(["space"])
    with pytest.raises(ValueError, match=r"context items \['zz'\] are not in the catalog"):
        fitted().rank_cases([serialize.Example("d", 2, "gcrs", "", "", "rec", "a", ("zz",), "")])
    assert SIDS.item_of((3, 3)) is None
    ghost = serialize.BOI + "<a_3><b_3>" + serialize.EOI  # a mention of no item
    bad = serialize.Example("d", 2, "gcrs", "", "", "rec", "a", (), "", (), (("user", ghost),))
    with pytest.raises(ValueError, match=r"case d:2: SID \[3, 3\] is no item"):
        fitted().rank_cases([bad])
    with pytest.raises(ValueError, match="not in the catalog"):
        TextRetrieval(Catalog(list(CATALOG)[:3]), SIDS, encode=BagOfWords()).fit(TRAIN)
    with pytest.raises(ValueError, match="zero vector"):
        TextRetrieval(CATALOG, SIDS, encode=lambda t: np.zeros((len(t), 3))).fit(TRAIN)


def test_inspired_ranks_equal_brute_force_with_the_real_encoder(shared_data):
    from crslib import data
    from crslib.ids import encode
    t = time.perf_counter()
    ds = data.load_inspired(shared_data)
    sids = random_sids(ds.catalog.ids, 4, 64, 0)  # rankings do not depend on the SID values
    cases = evaluate.rec_cases(ds, sids, limit=30, seed=0)
    r = TextRetrieval(ds.catalog, sids).fit(ds["train"])
    got = list(r.rank_cases(cases, k=20))
    texts = [r.context_text(ex) for ex in cases]
    assert not any(re.search(r"<[a-z]_\d+>|<BOI>", x) for x in texts)
    X = encode.encode_texts([ds.catalog[i].text() for i in r.items_], progress=False)
    Q = encode.encode_texts([x for x in texts if x], progress=False)
    X, Q = (m / np.linalg.norm(m, axis=1, keepdims=True) for m in (X, Q))
    want = iter([r.items_[j] for j in np.argsort(-(X @ q), kind="stable")[:20]] for q in Q)
    assert got == [next(want) if x else r.items_[:20] for x in texts]
    assert time.perf_counter() - t < 60

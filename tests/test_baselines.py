from crslib.baselines import Popularity, Repeat
from crslib.data import Dialog, Turn


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

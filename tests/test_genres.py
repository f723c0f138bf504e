"""Genres asked in a message, and the share of a top-k list that follows them."""
import pytest

from crslib.data import genres
from crslib.data import Catalog, Item

CATALOG = Catalog([Item("1", "It", "2017", ("Horror",)), Item("2", "Superbad", "2007", ("Comedy",)),
                   Item("3", "Coco", "2017", ("Animation", "Comedy", "Family")),
                   Item("4", "Nameless"), Item("5", "Jaws", "1975", ("Thriller", "Short"))])


def test_vocabulary_is_the_catalogs_genres_and_their_everyday_words():
    vocab = genres.vocabulary(CATALOG)
    assert {w for w, g in vocab.items() if w == g} == {
        "horror", "comedy", "animation", "family", "thriller"}  # "short" is never asked
    assert vocab["scary"] == "horror" and vocab["comedies"] == "comedy"
    assert "romantic" not in vocab  # no romance in this catalog


@pytest.mark.parametrize("text, want", [
    ("What about a scary one?", {"horror"}),
    ("Any good COMEDIES? or a Thriller", {"comedy", "thriller"}),
    ("something animated for the family", {"animation", "family"}),
    ("I loved <BOI><a_1><b_2><EOI> and @203", set()),  # token look-alikes and mentions
    ("a short film about horrorcore", set()),  # "short" is not asked; whole words only
    ("", set()),
])
def test_asked_genres(text, want):
    assert genres.asked_genres(text, genres.vocabulary(CATALOG)) == want


@pytest.mark.parametrize("text, asked, refused", [
    ("I don't like horror at all. A thriller?", {"thriller"}, {"horror"}),
    ("no horror please", set(), {"horror"}),
    ("nothing scary, something funny", {"comedy"}, {"horror"}),
    ("no horror but a comedy", {"comedy"}, {"horror"}),
    ("anything but comedies", set(), {"comedy"}),
    ("I'm not sure, maybe a comedy", {"comedy"}, set()),  # "not" is in another clause
    ("I love horror, not comedy", {"horror"}, {"comedy"}),
    ("I hate horror movies, I want a horror-free family film", {"family"}, {"horror"}),
])
def test_a_negated_genre_is_refused_not_asked(text, asked, refused):
    vocab = genres.vocabulary(CATALOG)
    assert genres.genres_in(text, vocab) == (frozenset(asked), frozenset(refused))
    assert genres.asked_genres(text, vocab) == asked


def test_following_is_the_mean_share_over_cases_that_ask():
    tops = [["1", "2", "3", "4"], ["3", "2"], ["1"], ["9"]]
    asked = [{"horror", "family"}, {"comedy"}, set(), {"horror"}]
    # case 1: It (horror) and Coco (family) of 4 -> 0.5; case 2: both comedies -> 1.0;
    # case 3 asks nothing (left out); case 4: an unknown item carries nothing -> 0
    out = genres.following(tops, asked, CATALOG, k=4)
    assert out == {"share": pytest.approx((0.5 + 1.0 + 0.0) / 3), "n_cases": 3,
                   "per_case": [0.5, 1.0, 0.0]}
    assert genres.following(tops, asked, CATALOG, k=1)["share"] == pytest.approx(2 / 3)
    assert genres.following([], [], CATALOG) == {"share": None, "n_cases": 0, "per_case": []}
    with pytest.raises(ValueError, match="2 top lists for 1 cases"):
        genres.following(tops[:2], asked[:1], CATALOG)
    with pytest.raises(ValueError, match="empty top list"):
        genres.following([[]], [{"horror"}], CATALOG)

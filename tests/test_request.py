"""Requests as catalog filters (issue 22): genres wanted and refused, year ranges."""
import pytest

from crslib.data import request
from crslib.data import Catalog, Item

CATALOG = Catalog([Item("1", "It", "2017", ("Horror",)), Item("2", "Superbad", "2007", ("Comedy",)),
                   Item("3", "Coco", "2017", ("Animation", "Comedy", "Family")),
                   Item("4", "Nameless"), Item("5", "Jaws", "1975", ("Thriller",)),
                   Item("6", "The Shining", "1980", ("Horror", "Drama")),
                   Item("7", "Big", "1988", ("Comedy", "Family"))])


@pytest.mark.parametrize("text, years", [
    ("Something from the 80s maybe?", (1980, 1989)),
    ("any 1970s thrillers", (1970, 1979)),
    ("a film from the '90s", (1990, 1999)),
    ("something from the eighties", (1980, 1989)),
    ("made before 2000", (0, 1999)),
    ("anything after 2010", (2011, 9999)),
    ("from 1994", (1994, 1994)),
    ("something recent", (2013, 9999)),  # the catalog's latest year is 2017
    ("an old classic", (0, 1989)),
    ("I loved <BOI><a_80><EOI> and @1980", None),
    ("a comedy", None),
])
def test_years(text, years):
    assert request.years_in(text, request.latest_year(CATALOG)) == years


def test_parse_and_satisfies():
    r = request.parse("I don't like horror at all. A comedy from the 80s?", CATALOG)
    assert r == request.Request(frozenset({"comedy"}), frozenset({"horror"}), (1980, 1989))
    assert request.allowed(CATALOG, r) == ["7"]
    assert r.describe() == "comedy, from 1980 to 1989, not horror"
    assert not request.parse("hello there", CATALOG)
    assert request.allowed(CATALOG, request.parse("no horror", CATALOG)) == ["2", "3", "4", "5", "7"]
    # an item without a year cannot show it is in a year range
    assert "4" not in request.allowed(CATALOG, request.parse("from the 80s", CATALOG))


def test_coverage_counts_missing_metadata():
    assert request.coverage(CATALOG) == {"items": 7, "no_genres": 1, "no_year": 1,
                                         "no_genres_share": 1 / 7, "no_year_share": 1 / 7}


def test_constraint_summary_means_and_kinds():
    from crslib.studies import constraints
    r = request.parse("I don't like horror. A comedy from the 80s?", CATALOG)
    assert constraints.kind(r) == "genre+refused+years"
    rows = [{"kind": "genre", "satisfied@5": 0.2, "satisfied@5 constrained": 1.0,
             "recall@10": 1.0, "recall@10 constrained": 0.0, "gold_satisfies": 1.0,
             "popularity satisfied@5 constrained": None},
            {"kind": "years", "satisfied@5": 0.6, "satisfied@5 constrained": 1.0,
             "recall@10": 0.0, "recall@10 constrained": 1.0, "gold_satisfies": 0.0,
             "popularity satisfied@5 constrained": 0.5}]
    s = constraints.summarize(rows)
    assert s["all"]["n_cases"] == 2 and s["all"]["satisfied@5"] == pytest.approx(0.4)
    assert s["all"]["popularity satisfied@5 constrained"] == 0.5  # None skipped
    assert s["all"]["popularity satisfied@5"] is None
    assert s["by_kind"]["genre"]["recall@10"] == 1.0 and set(s["by_kind"]) == {"genre", "years"}

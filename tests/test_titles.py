"""Titles typed as text are linked to catalog items by the stated rule (crslib.data.titles)."""
import pytest

from crslib.data import Catalog, Item
from crslib.training.model import load_tokenizer
from crslib.data.titles import TitleLinker


@pytest.fixture(scope="module")
def linker():
    items = [Item("1", "The Shining", "1980", extra={"mentions": 9}),
             Item("2", "It", "1990", extra={"mentions": 5}), Item("3", "It", "2017", extra={"mentions": 50}),
             Item("4", "Get Out", "2017"), Item("5", "Superbad", "2007"), Item("6", "The Comedy", "2012"),
             Item("7", "Up", "2009"), Item("8", "Halloween", "1978", extra={"mentions": 3}),
             Item("9", "Halloween", "2018", extra={"mentions": 3}), Item("10", "I", "2015"),
             Item("11", "Scary Movie", "2000", ("Comedy",))]
    return TitleLinker(Catalog(items), load_tokenizer("tiny"))


@pytest.mark.parametrize("text, linked", [
    ("I loved The Shining", "I loved @1"),
    ("i loved the shining and SUPERBAD", "i loved @1 and @5"),        # case-insensitive
    ("It was great. You should watch Get Out", "It was great. You should watch @4"),
    ("get out of here, it is late", "get out of here, it is late"),  # common words, not typed as a title
    ("I liked It (1990) more than It", "I liked @2 more than @3"),  # year decides; else most mentioned
    ("do you have a comedy?", "do you have a comedy?"),              # "a comedy" is not "The Comedy"
    ("films like Up are fun", "films like @7 are fun"),
    ("up to you", "up to you"),
    ("Halloween 2018 or halloween?", "@9 or @9?"),                   # a tie in mentions: the newest
    ("I think I like it", "I think I like it"),                      # one letter: only with a year
    ("I (2015) is odd", "@10 is odd"),
    ("I saw it in 2017", "I saw it in 2017"),                        # a year alone is no title
    ("I want a scary movie tonight", "I want a scary movie tonight"),  # words describing films
    ("I want to watch Scary Movie tonight", "I want to watch @11 tonight"),  # typed as a title
    ("<MODE=REC> and @5 Superbad", "<MODE=REC> and @5 @5"),          # literals and mentions stay
])
def test_titles_are_linked_by_the_rule(linker, text, linked):
    assert linker.link(text) == linked


def test_links_carry_the_span_with_the_year(linker):
    text = "I loved It (2017)!"
    (ln,) = linker.find(text)
    assert text[ln.start:ln.end] == "It (2017)" and ln.item_id == "3"

"""Serializer: formats, escaping, truncation, encoding and the format/parse round trip."""
from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from crslib.format import serialize as S
from crslib.studies.bench import random_sids
from crslib.data import Catalog, Dialog, Item, Turn

CATALOG = Catalog([Item("11", "Up", "2009"), Item("22", "Heat", "1995"), Item("33", "Alien", "1979"),
                   Item("frozen-2-2019", "Frozen 2", "2019"), Item("44", "Nope", "2022")])
SIDS = random_sids(["11", "22", "33", "frozen-2-2019"], levels=4, codebook_size=8, seed=1)  # no 44
CHAT_TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<assistant>{% endif %}")
WORDS = ["[PAD]", "[UNK]", "[EOS]", "User", "Assistant", ":", "hi", "a", "movie", "like", "I"]


def toy_tokenizer() -> PreTrainedTokenizerFast:
    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", pad_token="[PAD]",
                                  eos_token="[EOS]")
    tok.chat_template = CHAT_TEMPLATE
    S.add_special_tokens(tok, None, SIDS)
    return tok


def dialog() -> Dialog:
    return Dialog("d1", [
        Turn("assistant", "hi , what do you like ?"),
        Turn("user", "I like @11 . <MODE=REC> <BOI><a_1><b_2><c_3><d_4><EOI> <\\RESP> @44", ("11", "44")),
        Turn("assistant", "Try @22 or @33 ! Not @44 though", ("22", "33", "44")),
        Turn("user", "seen Frozen II ? email me@home", ("frozen-2-2019",)),
        Turn("assistant", "Then @frozen-2-2019 and Frozen II", ("frozen-2-2019", "33")),
        Turn("user", "ok"),
        Turn("assistant", "bye <EOI> :)"),
    ])


def test_escape_is_reversible_and_blocks_tokens():
    text = "a <MODE=REC> b <\\BOI> c <\\\\a_1> <movie> <x> <RESP"
    esc = S.escape(text)
    assert S.unescape(esc) == text
    assert "<MODE=REC>" not in esc and "<\\MODE=REC>" in esc and "<\\\\BOI>" in esc
    assert "<movie>" in esc and "<x>" in esc


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("<>\\=_abdMODERCHATISPEOI01 ")), max_size=40))
def test_escape_round_trip_property(text):
    esc = S.escape(text)
    assert S.unescape(esc) == text
    assert not any(tok in esc for tok in S.CONTROL_TOKENS + ("<a_0>", "<b_1>"))


def test_gcrs_targets_and_prompt():
    exs = S.serialize(dialog(), SIDS, "gcrs")
    assert [(e.turn_index, e.mode, e.item) for e in exs] == [
        (0, "chat", None), (2, "rec", "22"), (2, "rec", "33"), (4, "rec", "frozen-2-2019"),
        (4, "rec", "33"), (6, "chat", None)]
    m22, m33 = S.mention("22", SIDS), S.mention("33", SIDS)
    assert m22 == "<BOI>" + SIDS.tokens("22") + "<EOI>"
    assert exs[1].target == f"<MODE=REC>{m22}<RESP>Try {m22} or {m33} ! Not @44 though"
    assert exs[2].target == f"<MODE=REC>{m33}<RESP>Try {m22} or {m33} ! Not @44 though"
    assert exs[0].target == "<MODE=CHAT><RESP>hi , what do you like ?"
    assert exs[0].prompt == "Assistant:"
    assert exs[1].prompt.startswith("Assistant: hi , what do you like ?\nUser: I like " + S.mention("11", SIDS))
    assert exs[1].prompt.endswith("\nAssistant:")
    assert "<MODE=REC>" not in exs[1].prompt and "<\\MODE=REC>" in exs[1].prompt
    assert exs[1].context_items == ("11", "44")
    assert exs[3].context_items == ("11", "44", "22", "33", "44", "frozen-2-2019")
    assert exs[1].turn_items == ("22", "33") and exs[1].response == dialog().turns[2].text
    assert exs[-1].target == "<MODE=CHAT><RESP>bye <\\EOI> :)"


@pytest.mark.parametrize("fmt", S.FORMATS)
def test_round_trip_every_format(fmt):
    for ex in S.serialize(dialog(), SIDS, fmt):
        assert ex.target and ex.fmt == fmt
        p = S.parse(ex.target, SIDS, fmt, catalog=CATALOG)
        if fmt in ("gcrs", "sid", "tiger"):
            assert p.item == ex.item
        else:
            assert p.item is None
        if fmt in ("sid", "tiger"):
            assert p.mode == ex.mode and p.text == ""
            continue
        assert p.text == ex.response
        assert p.mentions == tuple(i for i in ("22", "33", "frozen-2-2019") if "@" + i in ex.response)
        assert p.mode == (ex.mode if fmt != "resp" else ("rec" if p.mentions else "chat"))


def test_parse_renderings():
    ex = S.serialize(dialog(), SIDS, "gcrs")[1]
    p = S.parse(ex.target + "[EOS] junk", SIDS, catalog=CATALOG, eos="[EOS]")
    assert p.metric_text == "Try <movie> or <movie> ! Not @44 though"
    assert p.display_text == "Try Heat (1995) or Alien (1979) ! Not @44 though"
    assert p.mentions == ("22", "33") and p.mode == "rec" and p.item == "22"
    assert S.parse(ex.target, SIDS).display_text == "Try 22 or 33 ! Not @44 though"


def test_tiger_input_is_item_history_only():
    exs = S.serialize(dialog(), SIDS, "tiger")
    assert [(e.turn_index, e.item) for e in exs] == [(2, "22"), (2, "33"), (4, "frozen-2-2019"), (4, "33")]
    assert exs[0].prompt == f"User: {S.mention('11', SIDS)}\nAssistant:"
    hist = "".join(S.mention(i, SIDS) for i in ("11", "22", "33", "frozen-2-2019"))
    assert exs[2].prompt == f"User: {hist}\nAssistant:"
    assert exs[2].target == S.mention("frozen-2-2019", SIDS)


@pytest.mark.parametrize("bad, why", [
    ("<RESP>hi", "expected <MODE=REC> or <MODE=CHAT>"),
    ("<MODE=REC><RESP>hi", "expected <BOI>"),
    ("<MODE=REC><BOI><a_1><b_1><EOI><RESP>x", "level-2 SID token"),
    ("<MODE=REC><BOI><a_1><c_1><c_1><d_1><EOI><RESP>x", "level-1 SID token"),
    ("<MODE=CHAT>hi", "expected <RESP>"),
    ("<MODE=CHAT><RESP>hi <MODE=REC>", "unexpected <MODE=REC>"),
    ("<MODE=CHAT><RESP>hi <a_1>", "unexpected <a_1>"),
    ("<MODE=CHAT><RESP>hi <BOI><a_1>", "level-1 SID token"),
])
def test_parse_malformed_raises_with_text(bad, why):
    with pytest.raises(ValueError, match=why) as e:
        S.parse(bad, SIDS, "gcrs")
    assert repr(bad) in str(e.value)


def test_parse_rejects_non_items_and_trailing_text():
    free = next((a, b, c, d) for a in range(8) for b in range(8) for c in range(8) for d in range(8)
                if SIDS.item_of((a, b, c, d)) is None)
    bogus = "<BOI>" + "".join(f"<{'abcd'[lv]}_{c}>" for lv, c in enumerate(free)) + "<EOI>"
    with pytest.raises(ValueError, match="is no item"):
        S.parse(bogus, SIDS, "tiger")
    with pytest.raises(ValueError, match="unexpected text"):
        S.parse(S.mention("11", SIDS) + "x", SIDS, "tiger")
    with pytest.raises(ValueError, match="unknown format"):
        S.parse("", SIDS, "nope")


def test_chat_template_prompt():
    tok = toy_tokenizer()
    exs = S.serialize(dialog(), SIDS, "gcrs", template="chat", tokenizer=tok)
    assert exs[0].prompt == "<user>\n<assistant>"  # empty conversation: empty user turn
    assert exs[1].prompt.startswith("<user>\n<assistant>hi , what do you like ?\n<user>I like ")
    assert exs[1].prompt.endswith("<assistant>")
    with pytest.raises(ValueError, match="chat template"):
        S.serialize(dialog(), SIDS, template="chat")


def test_encode_masks_all_but_target_and_eos():
    tok = toy_tokenizer()
    ex = S.serialize(dialog(), SIDS, "gcrs")[1]
    enc = S.encode(ex, tok)
    target = tok(ex.target, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    n = len(enc["input_ids"]) - len(target)
    assert enc["input_ids"][n:] == target and enc["labels"][n:] == target
    assert enc["labels"][:n] == [-100] * n and enc["attention_mask"] == [1] * len(enc["input_ids"])
    assert tok.convert_ids_to_tokens(target[:3]) == ["<MODE=REC>", "<BOI>", "<a_" + str(SIDS.code_of("22")[0]) + ">"]
    # user text cannot inject control tokens: the only <MODE=REC> id is the target's
    assert enc["input_ids"].count(tok.convert_tokens_to_ids("<MODE=REC>")) == 1


def test_truncation_drops_whole_turns_then_tokens():
    tok = toy_tokenizer()
    ex = S.serialize(dialog(), SIDS, "gcrs")[3]  # turn 4: context a, u, a, u

    def keep(j: int) -> list[int]:  # the prompt of the last turns from j on, untruncated
        return S.prompt_ids(replace(ex, context=ex.context[j:]), tok, None)

    full = keep(0)
    assert S.prompt_ids(ex, tok, len(full)) == full
    for j in (1, 2, 3):  # a budget that fits turns j.. exactly keeps those whole turns
        assert S.prompt_ids(ex, tok, len(keep(j))) == keep(j)
        assert S.prompt_ids(ex, tok, len(keep(j - 1)) - 1) == keep(j)
    assert tok.convert_ids_to_tokens(keep(2)[:2]) == ["Assistant", ":"]
    # the last turn alone does not fit: keep its last tokens
    assert S.prompt_ids(ex, tok, 5) == keep(3)[-5:]
    enc = S.encode(ex, tok, max_context_tokens=5)
    assert enc["labels"][:5] == [-100] * 5 and enc["labels"][5:] == enc["input_ids"][5:]
    assert tok.convert_ids_to_tokens(enc["input_ids"][5:7]) == ["<MODE=REC>", "<BOI>"]
    rec = S.rec_prompt_ids(ex, tok, 5)
    assert len(rec) == 7 and tok.convert_ids_to_tokens(rec[-2:]) == ["<MODE=REC>", "<BOI>"]


def test_add_special_tokens_is_idempotent_and_resizes():
    from crslib.training.model import tiny_model
    tok = toy_tokenizer()
    n = len(tok)
    model = tiny_model(len(WORDS), hidden_size=16, intermediate_size=32)
    ids = S.add_special_tokens(tok, model, SIDS)
    assert len(tok) == n == len(WORDS) + 5 + SIDS.levels * SIDS.codebook_size
    assert list(ids) == S.special_tokens(SIDS) and len(set(ids.values())) == len(ids)
    assert model.get_input_embeddings().num_embeddings == len(tok)
    assert all(t in tok.all_special_tokens for t in ("<BOI>", "<a_0>", "<MODE=CHAT>"))


@pytest.mark.slow
def test_redial_round_trip_through_smollm2_tokenizer(shared_data):
    from crslib import data
    from crslib.training.model import load_tokenizer
    ds = data.load_redial(shared_data, splits=("test",))
    sids = random_sids(ds.catalog.ids, 4, 64, seed=0)
    tok = load_tokenizer("smollm2-135m")
    S.add_special_tokens(tok, None, sids)
    for fmt in S.FORMATS:
        exs = S.serialize_all(ds["test"][:40], sids, fmt)
        assert exs
        for ex in exs:
            decoded = tok.decode(tok(ex.target, add_special_tokens=False)["input_ids"],
                                 skip_special_tokens=False)
            p = S.parse(decoded, sids, fmt)
            assert p.item == (ex.item if fmt in ("gcrs", "sid", "tiger") else None)
            assert fmt in ("sid", "tiger") or p.text == ex.response
    chat = S.serialize_all(ds["test"][:5], sids, "gcrs", template="chat", tokenizer=tok)
    assert all(e.prompt.endswith("<|im_start|>assistant\n") for e in chat)
    long = max(chat, key=lambda e: len(e.prompt))
    assert len(S.prompt_ids(long, tok, 64)) <= 64

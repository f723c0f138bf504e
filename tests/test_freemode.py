"""Free mode on a tiny random backbone: the mode margin equals a plain forward pass (batched,
left-padded), a CHAT choice counts as a miss, REC choices keep their forced rank; latency
reports what it measured."""
import pytest
import torch

from crslib.format import serialize
from crslib.evaluation import recommenders
from crslib.studies import freemode
from crslib.studies.bench import random_sids
from crslib.data import Dialog, Turn
from crslib.training.model import load_tokenizer, tiny_model

ITEMS = [str(100 + i) for i in range(16)]


@pytest.fixture(scope="module")
def world():
    torch.set_num_threads(1)
    sids = random_sids(ITEMS, 3, 4, 0)
    tok = load_tokenizer("tiny")
    serialize.add_special_tokens(tok, None, sids)
    model = tiny_model(len(tok), seed=0, pad_token_id=tok.pad_token_id)
    dialogs = [Dialog(f"d{k}", [Turn("user", "hi there " * k + f"I liked @{ITEMS[k]}", (ITEMS[k],)),
                                Turn("assistant", f"try @{ITEMS[k + 1]}", (ITEMS[k + 1],)),
                                Turn("user", "more please"),
                                Turn("assistant", f"@{ITEMS[k + 2]} then", (ITEMS[k + 2],))])
               for k in range(4)]
    cases = [ex for ex in serialize.serialize_all(dialogs, sids) if ex.mode == "rec"]
    return model, tok, sids, cases


def test_free_ranks_count_chat_choices_as_misses():
    assert freemode.free_ranks([1, 5, None, 2], [0.3, -1.0, 2.0, 0.0]) == [1, None, None, None]
    with pytest.raises(ValueError):
        freemode.free_ranks([1], [0.1, 0.2])


def test_rec_margin_equals_a_plain_forward_pass(world):
    model, tok, sids, cases = world
    margins = freemode.rec_margin(model, tok, cases, batch_size=3)  # mixed lengths, left padded
    rec, chat = tok.convert_tokens_to_ids([serialize.MODE_REC, serialize.MODE_CHAT])
    for ex, m in zip(cases, margins):
        ids = torch.tensor([serialize.prompt_ids(ex, tok)])
        assert tok.decode(ids[0, -1:]) == ":"  # the prompt ends 'Assistant:', no mode given
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, -1]
        assert m == pytest.approx(float(logits[rec] - logits[chat]), abs=1e-4)


def test_forced_vs_free_with_controlled_mode_choices(world, monkeypatch):
    model, tok, sids, cases = world
    cases = cases[:4]
    monkeypatch.setattr(freemode, "rec_margin", lambda *a, **k: [1.0, -1.0, 0.5, -0.2])
    monkeypatch.setattr(recommenders, "model_ranks", lambda *a, **k: [1, 1, 3, 30])
    r = freemode.forced_vs_free(model, tok, sids, cases)
    assert r["ranks"] == {"forced": [1, 1, 3, 30], "free": [1, None, 3, None]}
    assert r["rec_share"] == 0.5
    assert r["forced"]["metrics"]["recall@1"] == 0.5 and r["free"]["metrics"]["recall@1"] == 0.25
    assert r["forced"]["metrics"]["recall@5"] == 0.75 and r["free"]["metrics"]["recall@5"] == 0.5
    assert r["forced"]["metrics"]["recall@20"] == 0.75 and r["free"]["metrics"]["recall@20"] == 0.5


def test_forced_ranks_are_the_paper_protocol_and_rec_choices_keep_them(world, monkeypatch):
    model, tok, sids, cases = world
    choice = [(-1.0) ** k for k in range(len(cases))]  # REC, CHAT, REC, ...
    monkeypatch.setattr(freemode, "rec_margin", lambda *a, **k: choice)
    r = freemode.forced_vs_free(model, tok, sids, cases, num_beams=len(ITEMS))
    assert r["ranks"]["forced"] == recommenders.model_ranks(model, tok, sids, cases, "paper",
                                                        num_beams=len(ITEMS))
    assert r["ranks"]["free"] == [f if c > 0 else None for f, c in zip(r["ranks"]["forced"], choice)]
    # ranks already scored are reused as they are: the same result, no second beam search
    monkeypatch.setattr(recommenders, "model_ranks", lambda *a, **k: pytest.fail("re-scored"))
    again = freemode.forced_vs_free(model, tok, sids, cases, num_beams=len(ITEMS),
                                    forced=r["ranks"]["forced"])
    assert again == r
    with pytest.raises(ValueError, match="forced ranks"):
        freemode.forced_vs_free(model, tok, sids, cases, forced=[1])


def test_latency_reports_what_it_measured(world):
    model, tok, sids, cases = world
    lat = freemode.latency(model, tok, sids, cases, n=3, seed=0, num_beams=len(ITEMS))
    assert lat["prompts"] == 3 and lat["top1_agree"] == 1.0  # the beam covers the catalog
    assert all(lat[f"{k}_ms_median"] > 0 for k in ("mode", "beam", "exact"))
    with pytest.raises(ValueError):
        freemode.latency(model, tok, sids, [], n=3)


def test_intent_cut_maximises_f1_and_prefers_the_papers_rule_on_ties():
    # margins of 6 turns, REC gold on 3: the model under-recommends (all margins below 0)
    margins, gold = [-3.0, -2.0, -1.5, -1.0, -0.5, -4.0], [False, True, False, True, True, False]
    out = freemode.choose_cut(margins, gold)
    # cut -1.75: REC for -1.5, -1.0, -0.5 -> tp 2, fp 1, fn 1 -> F1 4/6; cut -2.5 -> tp 3,
    # fp 1 (-1.5), fn 0 -> F1 6/7, the best; cut 0 predicts no REC -> F1 0
    assert out["cut"] == -2.5 and out["f1"] == pytest.approx(6 / 7) and out["f1_at_zero"] == 0
    assert out["rec_share"] == pytest.approx(4 / 6) and out["gold_rec_share"] == 0.5

    def brute(cut):  # F1 of 'margin > cut', computed the long way
        pred = [m > cut for m in margins]
        tp = sum(p and g for p, g in zip(pred, gold))
        return 2 * tp / (sum(pred) + sum(gold))
    grid = [x / 100 for x in range(-600, 200)]
    assert out["f1"] == pytest.approx(max(brute(c) for c in grid))
    # a well-calibrated model keeps the paper's cut 0 (ties go to the cut nearest 0)
    assert freemode.choose_cut([-1.0, 2.0, -3.0, 1.0], [False, True, False, True])["cut"] == 0.0
    with pytest.raises(ValueError, match="margins"):
        freemode.choose_cut([0.1], [True, False])


def test_the_chat_decides_with_the_same_margin_as_free_mode_bias_included(world):
    """Issue 23's suspected bug: the chat's intent margin and free mode's must agree, the
    output head's bias counted by both (a head with a bias that favours CHAT by 3)."""
    import copy

    from crslib import chat
    model, tok, sids, cases = world
    model = copy.deepcopy(model)
    old = model.get_output_embeddings()
    head = torch.nn.Linear(old.in_features, old.out_features, bias=True)
    with torch.no_grad():
        head.weight.copy_(old.weight)
        head.bias.zero_()
        head.bias[tok.convert_tokens_to_ids(serialize.MODE_CHAT)] = 3.0
    model.set_output_embeddings(head)
    model.config.tie_word_embeddings = False
    s = chat.ChatSession(model, tok, sids, max_context_tokens=768)
    for ex in cases[:3]:
        prompt = serialize.prompt_ids(ex, tok, 768)
        want = freemode.rec_margin(model, tok, [ex], 768)[0]
        assert s._rec_margin(prompt) == pytest.approx(want, abs=1e-4)
        s.reset()
    # the bias is in both: without it both margins are 3 higher
    with torch.no_grad():
        head.bias.zero_()
    assert freemode.rec_margin(model, tok, [ex], 768)[0] == pytest.approx(want + 3, abs=1e-4)
    assert s._rec_margin(prompt) == pytest.approx(want + 3, abs=1e-4)

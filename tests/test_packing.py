"""Tree packing gives every instance exactly the tokens, positions and predictions of the
one-instance-at-a-time encoding (crslib.format.serialize.encode)."""
import pytest
import torch

from crslib.format import packing, serialize
from crslib.studies.bench import random_sids
from crslib.data import Dialog, Turn
from crslib.training.model import load_tokenizer, tiny_model

ITEMS = ["111", "222", "333", "444"]


def dialog():
    return Dialog("d", [
        Turn("user", "hi, I loved @111 and <MODE=REC> tricks", ("111",)),
        Turn("assistant", "try @222 or @333", ("222", "333")),
        Turn("user", "thanks!", ()),
        Turn("assistant", "you are welcome", ()),
        Turn("user", "one more like @444?", ("444",)),
        Turn("assistant", "@111 again", ("111",)),
    ])


@pytest.fixture(scope="module")
def setup():
    sids = random_sids(ITEMS, 4, 8, 0)
    tok = load_tokenizer("tiny")
    serialize.add_special_tokens(tok, None, sids)
    model = tiny_model(len(tok), seed=0, pad_token_id=tok.pad_token_id)
    return sids, tok, model


def visible(w: packing.Packed, branch: int) -> tuple[list[int], list[int]]:
    """Tokens and positions branch ``branch`` can see: plain ones up to its start, then its own."""
    first = w.branch.index(branch)
    keep = [i for i in range(len(w)) if (i < first and w.branch[i] == -1) or w.branch[i] == branch]
    return [w.input_ids[i] for i in keep], [w.position_ids[i] for i in keep]


@pytest.mark.parametrize("fmt", ["gcrs", "resp", "mode_resp", "sid", "tiger"])
@pytest.mark.parametrize("budget", [768, 40])
def test_each_branch_sees_exactly_the_encoded_instance(setup, fmt, budget):
    sids, tok, _ = setup
    examples = serialize.serialize(dialog(), sids, fmt)
    windows = packing.pack_dialog(dialog(), sids, tok, fmt, max_context_tokens=budget)
    assert sum(w.n_branches for w in windows) == len(examples)
    if budget == 40:
        assert len(windows) > 1
    branches = [(w, b) for w in windows for b in range(w.n_branches)]
    for ex, (w, b) in zip(examples, branches):
        enc = serialize.encode(ex, tok, max_context_tokens=budget)
        ids, pos = visible(w, b)
        assert ids == enc["input_ids"][:-1]  # the final EOS is predicted, never fed
        assert pos == list(range(len(ids)))


def test_packed_forward_equals_one_instance_forward(setup):
    sids, tok, model = setup
    windows = packing.pack_dialog(dialog(), sids, tok, "gcrs", max_context_tokens=768)
    batch = packing.collate(windows, tok.pad_token_id)
    with torch.no_grad():
        h = model.model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                        attention_mask=batch["attention_mask"]).last_hidden_state
        packed = model.lm_head(h[batch["loss_rows"], batch["loss_src"]]).log_softmax(-1)
        packed = packed.gather(1, batch["loss_tgt"][:, None])[:, 0]
        single = []
        for ex in serialize.serialize(dialog(), sids, "gcrs"):
            enc = serialize.encode(ex, tok)
            logits = model(input_ids=torch.tensor([enc["input_ids"]])).logits[0].log_softmax(-1)
            for q, y in enumerate(enc["labels"]):
                if y != -100:
                    single.append(logits[q - 1, y])
    assert torch.allclose(packed, torch.stack(single), atol=1e-5)


def test_unknown_format_is_refused(setup):
    sids, tok, _ = setup
    with pytest.raises(ValueError, match="cannot be packed"):
        packing.pack_dialog(dialog(), sids, tok, "bogus")


def test_tiger_windows_are_one_example_each(setup):
    sids, tok, _ = setup
    windows = packing.pack_dialog(dialog(), sids, tok, "tiger")
    assert [w.n_branches for w in windows] == [1, 1, 1]  # items 222, 333, then 111

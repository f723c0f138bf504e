"""Prefix tree, SID logits processor, beam search and exact scoring on toy vocabularies.

Reference: brute-force scoring, one full forward pass per item (``brute_force``)."""
from __future__ import annotations


import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from crslib.format import serialize
from crslib.decoding import batching, beam_search, item_scores, trie
from crslib.studies.bench import random_sids
from crslib.training.model import tiny_model
from crslib.ids.semantic_ids import SemanticIDs

WORDS = ["[PAD]", "[UNK]", "[EOS]", "User", "Assistant", ":", "hi", "a", "movie", "like", "I"]
PROMPTS = ["User : hi I like a movie Assistant :<MODE=REC><BOI>", "User : hi<BOI>",
           "movie movie movie Assistant :<MODE=REC><BOI>"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small ops on a shared 2-core machine are far faster on one thread."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def toy_tokenizer(sids: SemanticIDs | None = None) -> PreTrainedTokenizerFast:
    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", pad_token="[PAD]",
                                  eos_token="[EOS]")
    if sids is not None:
        serialize.add_special_tokens(tok, None, sids)
    return tok


def toy_setup(n_items=40, levels=3, codebook=5, seed=0, model_seed=1):
    sids = random_sids([f"i{j}" for j in range(n_items)], levels, codebook, seed)
    tok = toy_tokenizer(sids)
    model = tiny_model(len(tok), seed=model_seed, hidden_size=32, intermediate_size=64)
    return sids, tok, model, trie.SIDVocab.build(sids, tok)


def ids_of(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


@torch.no_grad()
def brute_force(model, vocab: trie.SIDVocab, prompt: list[int]) -> torch.Tensor:
    """Score of every item: one forward pass over prompt + its L SID tokens."""
    P = len(prompt)
    out = []
    for iid in vocab.sids.item_ids:
        code = vocab.sids.code_of(iid)
        toks = [int(vocab.level_tokens[lv, c]) for lv, c in enumerate(code)]
        logits = model(torch.tensor([prompt + toks])).logits[0]
        out.append(sum(torch.log_softmax(logits[P - 1 + lv, vocab.level_tokens[lv]], -1)[c].item()
                       for lv, c in enumerate(code)))
    return torch.tensor(out)


def top(scores: torch.Tensor, sids: SemanticIDs, k: int) -> list[str]:
    order = torch.sort(scores, descending=True, stable=True).indices[:k]
    return [sids.item_ids[i] for i in order]


# ----------------------------------------------------------------------------- trie
@settings(max_examples=60, deadline=None)
@given(st.integers(1, 3), st.integers(1, 5), st.integers(1, 30), st.integers(0, 10 ** 6))
def test_allowed_next_matches_brute_force(levels, K, n, seed):
    n = min(n, K ** levels)
    sids = random_sids([str(i) for i in range(n)], levels, K, seed)
    t = trie.SIDTrie.from_sids(sids)
    codes = [tuple(r) for r in sids.codes.tolist()]
    prefixes = {c[:d] for c in codes for d in range(levels + 1)}
    for p in prefixes:
        want = tuple(sorted({c[len(p)] for c in codes if c[:len(p)] == p and len(c) > len(p)}))
        assert t.allowed_next(p) == want
    for c in codes:
        assert sids.item_ids[t.node(c)] == sids.item_of(c)
    assert t.allowed_next((K,)) == () and t.node((K,)) is None


def test_allowed_next_is_per_tuple_not_per_level():
    # per-level sets would allow (0, 1) and (1, 0), which are no items
    t = trie.SIDTrie(np.array([[0, 0], [1, 1]]), 2)
    assert t.allowed_next(()) == (0, 1)
    assert t.allowed_next((0,)) == (0,)
    assert t.allowed_next((1,)) == (1,)
    assert t.node((0, 1)) is None


def test_trie_rejects_duplicates():
    with pytest.raises(ValueError, match="unique"):
        trie.SIDTrie(np.array([[0, 1], [0, 1]]), 2)


# ----------------------------------------------------------------------------- processor
def test_processor_states():
    sids, tok, _, vocab = toy_setup(n_items=6, levels=2, codebook=4)
    proc = trie.SIDConstraint(vocab)
    V = len(tok)
    base = torch.log_softmax(torch.randn(1, V), -1)
    before = ids_of(tok, "User : hi")
    assert torch.equal(proc(torch.tensor([before]), base.clone()), base)  # inactive: untouched

    out = proc(torch.tensor([before + [vocab.boi]]), base.clone())
    finite = set(torch.nonzero(torch.isfinite(out[0])).flatten().tolist())
    first = {int(vocab.level_tokens[0, c]) for c in sids.codes[:, 0]}
    assert finite == first
    level0 = base[0, vocab.level_tokens[0]]
    want = torch.log_softmax(level0, -1)
    for c in range(4):
        tid = int(vocab.level_tokens[0, c])
        assert (out[0, tid] == -np.inf) if tid not in first else torch.isclose(out[0, tid], want[c])

    code = sids.code_of(sids.item_ids[0])
    mid = before + [vocab.boi, int(vocab.level_tokens[0, code[0]])]
    out = proc(torch.tensor([mid]), base.clone())
    finite = set(torch.nonzero(torch.isfinite(out[0])).flatten().tolist())
    assert finite == {int(vocab.level_tokens[1, c]) for c in trie.SIDTrie.from_sids(sids)
                      .allowed_next(code[:1])}

    full = mid + [int(vocab.level_tokens[1, code[1]])]
    out = proc(torch.tensor([full]), base.clone())
    assert torch.nonzero(torch.isfinite(out[0])).flatten().tolist() == [vocab.eoi]
    assert out[0, vocab.eoi] == 0.0

    closed = full + [vocab.eoi]
    assert torch.equal(proc(torch.tensor([closed]), base.clone()), base)


def test_processor_mixed_rows_and_errors():
    sids, tok, _, vocab = toy_setup(n_items=6, levels=2, codebook=4)
    proc = trie.SIDConstraint(vocab)
    pad = tok.pad_token_id
    base = torch.log_softmax(torch.randn(2, len(tok)), -1)
    rows = torch.tensor([[pad, pad, pad, vocab.boi], [pad] + ids_of(tok, "hi a movie")])
    out = proc(rows, base.clone())
    assert torch.equal(out[1], base[1])
    assert torch.isfinite(out[0]).sum() == len(set(sids.codes[:, 0].tolist()))
    wrong_level = torch.tensor([[vocab.boi, int(vocab.level_tokens[1, 0])]])
    with pytest.raises(ValueError, match="no prefix"):
        proc(wrong_level, base[:1].clone())
    unused = sorted(set(range(4)) - set(sids.codes[:, 0].tolist()))
    if unused:
        with pytest.raises(ValueError, match="no prefix"):
            proc(torch.tensor([[vocab.boi, int(vocab.level_tokens[0, unused[0]])]]), base[:1].clone())


# ----------------------------------------------------------------------------- beam search
def test_beam_equals_brute_force_when_wide():
    sids, tok, model, vocab = toy_setup()
    for text in PROMPTS:
        prompt = ids_of(tok, text)
        want = brute_force(model, vocab, prompt)
        got = beam_search.recommend(model, tok, prompt, sids, k=10, num_beams=len(sids))
        assert got.items == top(want, sids, 10)
        idx = [sids.item_ids.index(i) for i in got.items]
        assert np.allclose(got.scores, want[idx].numpy(), atol=1e-4)


def test_score_all_items_equals_brute_force():
    sids, tok, model, vocab = toy_setup(n_items=60, levels=3, codebook=6, seed=3)
    for text in PROMPTS[:2]:
        prompt = ids_of(tok, text)
        want = brute_force(model, vocab, prompt)
        for chunk in (1, 7, 256):
            got = item_scores.score_all_items(model, tok, prompt, vocab, chunk_size=chunk)
            assert got.items == top(want, sids, len(sids))
            idx = [sids.item_ids.index(i) for i in got.items]
            assert np.allclose(got.scores, want[idx].numpy(), atol=1e-4)


def test_checkpoint_sampling_config_is_ignored():
    sids, tok, model, vocab = toy_setup()
    prompt = ids_of(tok, PROMPTS[0])
    want = top(brute_force(model, vocab, prompt), sids, 5)
    g = model.generation_config
    g.do_sample, g.temperature, g.top_k, g.top_p = True, 3.0, 2, 0.5
    g.repetition_penalty, g.no_repeat_ngram_size, g.length_penalty = 5.0, 1, 2.0
    g.suppress_tokens = [int(t) for t in vocab.level_tokens[0]]
    runs = [beam_search.recommend(model, tok, prompt, sids, k=5, num_beams=len(sids)).items
            for _ in range(3)]
    assert runs[0] == runs[1] == runs[2] == want
    assert model.generation_config is g and g.do_sample  # restored


def test_batched_equals_one_by_one_and_distinct():
    sids, tok, model, vocab = toy_setup()
    batch = beam_search.recommend(model, tok, PROMPTS, sids, k=20, batch_size=2)
    for text, got in zip(PROMPTS, batch):
        single = beam_search.recommend(model, tok, text, vocab, k=20)
        assert got.items == single.items
        assert np.allclose(got.scores, single.scores, atol=1e-4)
        assert len(set(got.items)) == 20 and got.invalid == 0
        assert got.scores == sorted(got.scores, reverse=True)


def test_cache_budget_only_changes_batching():
    sids, tok, model, vocab = toy_setup()
    assert [len(b) for b in batching.prompt_batches([[1] * 10] * 7, 3, 10, 250)] == [2, 2, 2, 1]
    full = beam_search.recommend(model, tok, PROMPTS, vocab, k=10, batch_size=8)
    small = beam_search.recommend(model, tok, PROMPTS, vocab, k=10, batch_size=8, max_cache_bytes=1)
    assert [r.items for r in full] == [r.items for r in small]


def test_unconstrained_ablation_reports_invalid():
    sids, tok, model, vocab = toy_setup()
    got = beam_search.recommend(model, tok, PROMPTS[0], vocab, k=10, constrained=False)
    assert len(got.items) == 10
    assert got.invalid == sum(i is None for i in got.items)
    assert all(i is None or i in sids for i in got.items)
    assert got.invalid > 0  # a random model rarely writes 3 SID tokens in order


def test_prompt_must_end_with_boi():
    sids, tok, model, vocab = toy_setup()
    with pytest.raises(ValueError, match="must end with <BOI>"):
        beam_search.recommend(model, tok, "User : hi", vocab, k=3)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 3), st.integers(2, 6), st.integers(1, 40), st.integers(1, 12),
       st.integers(0, 10 ** 6), st.sampled_from(PROMPTS))
def test_constrained_outputs_are_always_items(levels, K, n, k, seed, text):
    n = min(n, K ** levels)
    sids, tok, model, vocab = toy_setup(n, levels, K, seed, model_seed=seed)
    got = beam_search.recommend(model, tok, text, vocab, k=k, num_beams=max(k, 8))
    assert len(got.items) == min(k, n)
    assert len(set(got.items)) == len(got.items)
    assert all(i in sids for i in got.items)


# ----------------------------------------------------------------------------- real data
@pytest.mark.slow
def test_tiny_model_decodes_50_distinct_items_on_redial_sample(shared_data):
    from crslib import data
    from crslib.studies import bench
    from crslib.training.model import load_backbone

    ds = data.load("redial", shared_data)
    sids = bench.random_sids(ds.catalog.ids, 4, 64, seed=0)
    model, tok = load_backbone("tiny")
    serialize.add_special_tokens(tok, model, sids)
    vocab = trie.SIDVocab.build(sids, tok)
    dialogs = [ds["test"][i] for i in np.random.default_rng(0).choice(len(ds["test"]), 4, False)]
    examples = [e for e in serialize.serialize_all(dialogs, sids) if e.mode == "rec"][:8]
    prompts = [serialize.rec_prompt_ids(e, tok) for e in examples]
    report = bench.check_prompts(model, tok, prompts, vocab, k=50)
    assert report == {"checked_prompts": len(prompts), "valid_share": 1.0, "distinct_share": 1.0}


def test_sid_beam_search_equals_generate_beam_search():
    sids, tok, model, vocab = toy_setup(n_items=40, levels=3, codebook=5)
    prompts = [ids_of(tok, p) for p in PROMPTS]
    for beams in (6, 40):
        a = beam_search.recommend(model, tok, prompts, vocab, k=6, num_beams=beams, batch_size=2)
        b = beam_search.sid_beam_search(model, tok, prompts, vocab, k=6, num_beams=beams,
                                        batch_size=2)
        for ra, rb in zip(a, b):
            assert ra.items == rb.items
            assert np.allclose(ra.scores, rb.scores, atol=1e-4)
    # wide enough: equals the exact top-k
    exact = item_scores.score_all_items(model, tok, prompts, vocab)
    wide = beam_search.sid_beam_search(model, tok, prompts, vocab, k=10, num_beams=40)
    for e, w in zip(exact, wide):
        assert e.items[:10] == w.items


# ----------------------------------------------------------------------------- shared work
def test_prompt_trie_golden():
    ids, depth, anc, last = beam_search.prompt_trie([(1, 2, 3), (1, 2, 4), (1, 5), (6,)])
    assert ids == [1, 2, 3, 4, 5, 6]
    assert depth.tolist() == [0, 1, 2, 2, 1, 0]
    assert last == [2, 3, 4, 5]
    assert anc[3].tolist() == [True, True, False, True, False, False]  # 1, 2, 4: not 3
    assert anc[4].tolist() == [True, False, False, False, True, False]
    assert anc[5].tolist() == [False] * 5 + [True]
    # a prompt that is a prefix of another ends on an inner node
    ids, depth, anc, last = beam_search.prompt_trie([(1, 2), (1, 2, 3)])
    assert ids == [1, 2, 3] and last == [1, 2]


def test_pack_rows_respects_both_limits():
    prompts = [(1, 2, 3), (1, 2, 4), (1, 5), (6, 7, 8, 9)]
    # tokens: 3+1, 1+1, 1+1 (shared prefixes) then 4+1
    assert list(beam_search.pack_rows(prompts, 16, 100, 1)) == [prompts]
    assert list(beam_search.pack_rows(prompts, 2, 100, 1)) == [prompts[:2], prompts[2:]]
    assert list(beam_search.pack_rows(prompts, 16, 8, 1)) == [prompts[:3], prompts[3:]]
    assert list(beam_search.pack_rows(prompts, 16, 2, 1)) == [[p] for p in prompts]  # too big alone


def test_shared_rows_equal_one_prompt_at_a_time_and_brute_force():
    """Turns of one dialog (prefixes of each other), repeats, and a prompt that is a prefix of
    another: packed rows give the items and scores of one prompt per row, and the exact top."""
    sids, tok, model, vocab = toy_setup(n_items=40, levels=3, codebook=5)
    base = ids_of(tok, "User : hi I like a movie")
    end = ids_of(tok, " Assistant :<MODE=REC><BOI>")
    more = ids_of(tok, " Assistant : movie User : hi movie")
    prompts = [base + end, base + more + end, base + end, ids_of(tok, "User : hi<BOI>"),
               base + more + more + end, ids_of(tok, "User : hi<BOI>")]
    alone = beam_search.sid_beam_search(model, tok, prompts, vocab, k=8, num_beams=40, batch_size=1)
    shared = beam_search.sid_beam_search(model, tok, prompts, vocab, k=8, num_beams=40,
                                         batch_size=16)
    for a, s in zip(alone, shared):
        assert a.items == s.items
        assert np.allclose(a.scores, s.scores, atol=1e-5)
    exact = item_scores.score_all_items(model, tok, prompts, vocab)
    for e, s in zip(exact, shared):
        assert e.items[:8] == s.items


def test_restricted_vocab_decodes_only_the_subset_in_exact_order():
    """A filtered catalog (a chat request) is a sub-trie: the beam reaches only its items, in
    the order of their exact scores."""
    sids, tok, model, vocab = toy_setup(n_items=40, levels=3, codebook=5)
    subset = [f"i{j}" for j in range(0, 40, 3)]
    sub = vocab.restricted(subset)
    prompt = ids_of(tok, PROMPTS[0])
    got = beam_search.sid_beam_search(model, tok, prompt, sub, k=len(subset), num_beams=40)
    exact = item_scores.score_all_items(model, tok, [prompt], vocab)[0]
    assert got.items == [i for i in exact.items if i in set(subset)]
    with pytest.raises(ValueError, match="no item"):
        vocab.restricted([])
    with pytest.raises(ValueError, match="unknown"):
        vocab.restricted(["nope"])


def test_padding_by_pad_sequence_equals_the_hand_written_padding():
    """Parity of the swap (issue 23): ``batching.pad_batch`` (torch's ``pad_sequence``) gives
    the tensors the two hand-written paddings gave, left (generation) and right (the decoupled
    head's prompts)."""
    import torch
    from crslib.decoding import batching
    batch = [[5, 6, 7], [1], [2, 3], [9, 8, 7, 6]]
    T = 4
    left_ids = torch.full((4, T), 0, dtype=torch.long)
    left_mask = torch.zeros((4, T), dtype=torch.long)
    for r, ids in enumerate(batch):
        left_ids[r, T - len(ids):] = torch.tensor(ids)
        left_mask[r, T - len(ids):] = 1
    ids, mask = batching.left_pad(batch, 0)
    assert torch.equal(ids, left_ids) and torch.equal(mask, left_mask)
    lens = torch.tensor([len(p) for p in batch])
    right_ids = torch.full((4, T), 3)
    for r, p in enumerate(batch):
        right_ids[r, :len(p)] = torch.tensor(p)
    right_mask = (torch.arange(T)[None] < lens[:, None]).long()
    ids, mask = batching.pad_batch(batch, 3, side="right")
    assert torch.equal(ids, right_ids) and torch.equal(mask, right_mask)
    assert ids.dtype == mask.dtype == torch.long

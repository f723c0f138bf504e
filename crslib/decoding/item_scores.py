"""Exact scoring of every catalog item after a prompt (NOTES.md §5, the all-item protocols): the
item score of :mod:`crslib.decoding.trie` for every item, the prefix tree walked once with the
prompt's KV cache shared."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from crslib.decoding.batching import as_id_lists, as_vocab, cache_of, check_boi
from crslib.decoding.trie import Ranked, SIDVocab, level_log_probs
from crslib.ids.semantic_ids import SemanticIDs


@torch.no_grad()
def score_all_items(model, tokenizer, prompts, sids: SemanticIDs | SIDVocab, *,
                    chunk_size: int = 256):
    """Exact score of every item (module docstring) for each prompt ending with ``<BOI>``:
    a :class:`Ranked` over the whole catalog (ties in catalog order); a list for several.

    The prompt runs once; then each trie depth d = 1..L-1 is run as batches of ``chunk_size``
    nodes, each node one token attending to the prompt's KV cache and its own ancestors' cached
    keys/values (a 4-D attention mask over [prompt | ancestors | chunk]), and only the K rows of
    the output head for level d's tokens are applied. Assumes ``logits = lm_head(hidden)``.
    """
    vocab = as_vocab(sids, tokenizer)
    ids_list, single = as_id_lists(prompts, tokenizer)
    check_boi(ids_list, vocab)
    out = []
    for ids in ids_list:
        scores = item_log_probs(model, vocab, ids, chunk_size=chunk_size)
        order = torch.sort(scores, descending=True, stable=True).indices.tolist()
        out.append(Ranked([vocab.sids.item_ids[i] for i in order], scores[order].tolist()))
    return out[0] if single else out


@torch.no_grad()
def item_log_probs(model, vocab: SIDVocab, prompt: Sequence[int], chunk_size: int = 256
                   ) -> torch.Tensor:
    """``(n_items,)`` scores in catalog order for one prompt (token ids ending with ``<BOI>``)."""
    body, head, trie = model.get_decoder(), model.get_output_embeddings(), vocab.trie
    device = head.weight.device
    first = body(input_ids=torch.tensor([list(prompt)], device=device), use_cache=True)
    prompt_kv = [(layer.keys, layer.values) for layer in cache_of(first).layers]
    logp = level_log_probs(head, first.last_hidden_state[:, -1], vocab.level_tokens[0]).cpu()
    score = logp[0, torch.from_numpy(trie.last_code[1])]  # scores of the depth-1 nodes
    node_kv: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}  # depth -> per layer K, V
    for d in range(1, trie.levels):
        n = trie.n_nodes(d)
        ancestors = {d: np.arange(n)}
        for j in range(d - 1, 0, -1):
            ancestors[j] = trie.parent[j + 1][ancestors[j + 1]]
        logp = torch.empty(n, trie.codebook_size)
        chunks = []
        for s in range(0, n, chunk_size):
            e = min(n, s + chunk_size)
            hidden, kv = _run_nodes(body, vocab, prompt_kv, node_kv,
                                    {j: a[s:e] for j, a in ancestors.items()}, d)
            logp[s:e] = level_log_probs(head, hidden, vocab.level_tokens[d]).cpu()
            if d < trie.levels - 1:
                chunks.append(kv)
        if chunks:
            node_kv[d] = [(torch.cat([c[layer][0] for c in chunks], dim=2),
                           torch.cat([c[layer][1] for c in chunks], dim=2))
                          for layer in range(len(prompt_kv))]
        parent = torch.from_numpy(trie.parent[d + 1])
        score = score[parent] + logp[parent, torch.from_numpy(trie.last_code[d + 1])]
    return score


def _run_nodes(body, vocab: SIDVocab, prompt_kv, node_kv, ancestors: dict[int, np.ndarray],
               d: int):
    """Run the last token of a chunk of depth-d nodes; ``ancestors[j]`` are their depth-j
    ancestors (``ancestors[d]`` the nodes). Returns hidden states (C, H) and the chunk's new
    per-layer keys/values (1, kv_heads, C, head_dim)."""
    from transformers import DynamicCache

    nodes = ancestors[d]
    C, P = len(nodes), prompt_kv[0][0].shape[2]
    dtype, device = prompt_kv[0][0].dtype, prompt_kv[0][0].device
    neg = torch.finfo(dtype).min
    blocks = [torch.zeros(C, P)]
    kv = [([k], [v]) for k, v in prompt_kv]
    for j in range(1, d):  # distinct ancestors of the chunk at depth j
        uniq, inv = np.unique(ancestors[j], return_inverse=True)
        block = torch.full((C, len(uniq)), neg)
        block[torch.arange(C), torch.from_numpy(inv.reshape(-1))] = 0.0
        blocks.append(block)
        u = torch.from_numpy(uniq).to(device)
        for layer, (ks, vs) in enumerate(kv):
            ks.append(node_kv[j][layer][0][:, :, u])
            vs.append(node_kv[j][layer][1][:, :, u])
    blocks.append(torch.full((C, C), neg).fill_diagonal_(0.0))
    mask = torch.cat(blocks, dim=1).to(device=device, dtype=dtype)[None, None]
    cache = DynamicCache([(torch.cat(ks, dim=2), torch.cat(vs, dim=2)) for ks, vs in kv])
    tokens = vocab.level_tokens[d - 1][torch.from_numpy(vocab.trie.last_code[d][nodes])]
    res = body(input_ids=tokens[None].to(device), attention_mask=mask, cache=cache,
               position_ids=torch.full((1, C), P + d - 1, device=device), use_cache=True)
    new = [(layer.keys[:, :, -C:].clone(), layer.values[:, :, -C:].clone())
           for layer in cache_of(res).layers]
    return res.last_hidden_state[0], new

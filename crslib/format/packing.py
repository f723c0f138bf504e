"""Tree packing: all training instances of one dialog in one sequence, exactly the paper's format.

The paper trains one instance per assistant turn (one per item for multi-item turns), each
``prompt + target`` with the context written as plain turns (NOTES.md §3). Encoding those
instances one by one re-reads the same context once per turn; on a CPU that is most of the
cost. Here one dialog becomes one *stream* of its plain turns, and each target is a *branch*
inserted right after its prompt:

    User: u1\\n Assistant: [<MODE=CHAT><RESP>a1</s>] ␣a1\\n User: u2\\n Assistant: [<MODE=REC>…</s>] [<MODE=REC>…</s>] ␣a2\\n …

A branch token attends to the plain tokens before it and to the earlier tokens of its own
branch only; plain tokens never attend to branches; a branch's position ids continue from its
prompt, and the plain text after it restarts at the same position. So every branch sees exactly
``prompt_ids(example) + target`` — the same tokens at the same positions as
:func:`crslib.format.serialize.encode` gives (tested for parity) — while the context is encoded
once. Long dialogs are cut into windows whose prompts fit ``max_context_tokens`` (oldest whole turns
dropped, as :func:`crslib.format.serialize.prompt_ids` does).

Works for the ``plain`` template and the formats ``gcrs``, ``resp``, ``mode_resp``, ``sid``.
``tiger`` prompts do not extend each other (each is one user turn listing the mentions so far),
so :func:`pack_examples` gives each of its examples a window of its own: prompt, then target.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from crslib.data import Dialog
from crslib.format.serialize import prompt_ids, render_text, serialize, text_ids
from crslib.ids.semantic_ids import SemanticIDs

PACKABLE = ("gcrs", "resp", "mode_resp", "sid", "tiger")


@dataclass
class Packed:
    """One window: ``input_ids``, ``position_ids``, ``branch`` (-1 = plain, else branch number),
    and the loss pairs: hidden state at ``src[k]`` predicts token ``tgt[k]``."""

    input_ids: list[int] = field(default_factory=list)
    position_ids: list[int] = field(default_factory=list)
    branch: list[int] = field(default_factory=list)
    src: list[int] = field(default_factory=list)
    tgt: list[int] = field(default_factory=list)
    n_branches: int = 0

    def __len__(self) -> int:
        return len(self.input_ids)


def pack_dialog(dialog: Dialog, sids: SemanticIDs, tokenizer, fmt: str = "gcrs",
                max_context_tokens: int = 768, examples=None) -> list[Packed]:
    """The windows of one dialog (see module docstring); empty if it has no instance."""
    if fmt not in PACKABLE:
        raise ValueError(f"format {fmt!r} cannot be packed; choose from {PACKABLE}")
    examples = examples if examples is not None else serialize(dialog, sids, fmt)
    if fmt == "tiger":
        return pack_examples(examples, tokenizer, max_context_tokens)
    by_turn: dict[int, list] = {}
    for ex in examples:
        by_turn.setdefault(ex.turn_index, []).append(ex)
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    prefix = text_ids("Assistant:", tokenizer)
    # plain rendering of each turn, as render_prompt writes it: "User: …\n" / "Assistant: …\n"
    plain = []
    for t in dialog.turns:
        body = text_ids(f" {render_text(t.text, sids)}\n", tokenizer)
        plain.append((text_ids("User:", tokenizer) if t.role == "user" else prefix) + body)
    windows: list[Packed] = []
    cur: Packed | None = None
    start = 0  # first turn of the current window

    def open_window(first: int, upto: int) -> Packed:
        w = Packed()
        for j in range(first, upto):
            _append_plain(w, plain[j])
        return w

    for k, turn in enumerate(dialog.turns):
        if k in by_turn:
            ctx = sum(len(p) for p in plain[start:k]) + len(prefix)
            if cur is None or ctx > max_context_tokens:
                if cur is not None and cur.n_branches:
                    windows.append(cur)
                start = _first_fitting(plain, start, k, len(prefix), max_context_tokens)
                cur = open_window(start, k)
                if sum(len(p) for p in plain[start:k]) + len(prefix) > max_context_tokens:
                    keep = max_context_tokens - len(prefix)  # one turn alone too long: cut it
                    cur = Packed()
                    _append_plain(cur, (plain[k - 1][-keep:] if keep > 0 else []))
            _append_plain(cur, prefix)
            for ex in by_turn[k]:
                _append_branch(cur, text_ids(ex.target, tokenizer) + eos)
            _append_plain(cur, plain[k][len(prefix):])
        elif cur is not None:
            _append_plain(cur, plain[k])
    if cur is not None and cur.n_branches:
        windows.append(cur)
    return windows


def pack_examples(examples, tokenizer, max_context_tokens: int = 768) -> list[Packed]:
    """One window per example: its prompt (truncated as :func:`crslib.format.serialize.prompt_ids`
    does) as plain tokens and its target + EOS as the only branch — what
    :func:`crslib.format.serialize.encode` gives, in the packed layout."""
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    windows = []
    for ex in examples:
        w = Packed()
        _append_plain(w, prompt_ids(ex, tokenizer, max_context_tokens))
        _append_branch(w, text_ids(ex.target, tokenizer) + eos)
        windows.append(w)
    return windows


def _first_fitting(plain: Sequence[list[int]], lo: int, k: int, extra: int, budget: int) -> int:
    j = lo
    while j < k - 1 and sum(len(p) for p in plain[j:k]) + extra > budget:
        j += 1
    return j


def _append_plain(w: Packed, ids: list[int]) -> None:
    pos = _next_position(w)
    w.input_ids += ids
    w.position_ids += range(pos, pos + len(ids))
    w.branch += [-1] * len(ids)


def _next_position(w: Packed) -> int:
    for p, b in zip(reversed(w.position_ids), reversed(w.branch)):
        if b == -1:
            return p + 1
    return 0


def _append_branch(w: Packed, ids: list[int]) -> None:
    """Add a target branch after the plain tokens so far; record its loss pairs."""
    if not ids:
        return
    src = _last_plain_index(w)
    pos = w.position_ids[src] + 1 if src >= 0 else 0
    b = w.n_branches
    first = len(w.input_ids)
    for j, tok in enumerate(ids):
        w.src.append(src if j == 0 else first + j - 1)
        w.tgt.append(tok)
    # the last target token (EOS) is predicted but never fed
    w.input_ids += ids[:-1]
    w.position_ids += range(pos, pos + len(ids) - 1)
    w.branch += [b] * (len(ids) - 1)
    w.n_branches += 1


def _last_plain_index(w: Packed) -> int:
    for i in range(len(w.branch) - 1, -1, -1):
        if w.branch[i] == -1:
            return i
    return -1


def collate(windows: Sequence[Packed], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch with the 4D boolean attention mask (True = may attend)."""
    n, L = len(windows), max(len(w) for w in windows)
    ids = torch.full((n, L), pad_id, dtype=torch.long)
    pos = torch.zeros((n, L), dtype=torch.long)
    br = torch.full((n, L), -2, dtype=torch.long)  # -2 = padding
    src, tgt, row = [], [], []
    for i, w in enumerate(windows):
        m = len(w)
        ids[i, :m] = torch.tensor(w.input_ids)
        pos[i, :m] = torch.tensor(w.position_ids)
        br[i, :m] = torch.tensor(w.branch)
        src += w.src
        tgt += w.tgt
        row += [i] * len(w.src)
    causal = torch.ones(L, L, dtype=torch.bool).tril()
    bq, bk = br[:, :, None], br[:, None, :]
    visible = (bk == -1) | (bk == bq)
    mask = causal[None] & visible & (bk != -2)
    mask |= torch.eye(L, dtype=torch.bool)[None]  # padding rows attend to themselves (no NaN)
    return {"input_ids": ids, "position_ids": pos, "attention_mask": mask[:, None],
            "loss_rows": torch.tensor(row, dtype=torch.long),
            "loss_src": torch.tensor(src, dtype=torch.long),
            "loss_tgt": torch.tensor(tgt, dtype=torch.long)}

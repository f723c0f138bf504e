"""The structured sequence format of GCRS (NOTES.md §3): dialogs -> examples -> token ids, and back.

Vocabulary: the control tokens ``<BOI> <EOI> <RESP> <MODE=REC> <MODE=CHAT>`` plus the L x K SID
tokens (:meth:`SemanticIDs.all_tokens`). Every item mention, in the context and in the target,
is written ``<BOI><a_1><b_2><c_3><d_4><EOI>`` (no spaces).

Targets by format (``M(i)`` is the mention of item ``i``, ``R`` the response with mentions as
``M``), the text that follows the prompt (which ends ``Assistant:`` or the chat template's
generation prompt):

=============  ====================================  =========================
format         recommendation turn (one per item)    chat turn
=============  ====================================  =========================
``gcrs``       ``<MODE=REC>`` M(i) ``<RESP>`` R      ``<MODE=CHAT><RESP>`` R
``resp``       R                                     R
``mode_resp``  ``<MODE=REC><RESP>`` R                ``<MODE=CHAT><RESP>`` R
``sid``        ``<MODE=REC>`` M(i)                   ``<MODE=CHAT>``
``tiger``      M(i)                                  (no example)
=============  ====================================  =========================

``tiger`` is the generative-recommender baseline: its input is only the mentions of the items
listed so far (all roles, in order), as one user turn. ``RANK_PREFIX[fmt]`` is the text put after
the prompt to rank items with the mode forced to REC; it ends with ``<BOI>``.

Contracts:

* a turn is a recommendation turn when it lists an item that has a SID; it yields one
  :class:`Example` per such item (for ``resp``/``mode_resp`` the targets of one turn are equal;
  training code may keep one per ``(dialog_id, turn_index)``). Items without a SID are ignored.
* an ``@id`` mention whose id has no SID stays literal text; items listed in ``Turn.items``
  without an inline ``@id`` (INSPIRED spelling variants) are targets but not rewritten in text.
* literal text that looks like a control or SID token (``<MODE=REC>``, ``<a_17>``) is escaped
  to ``<\\MODE=REC>`` (one more backslash; :func:`unescape` removes it), so text can never
  inject a token; :func:`parse` of :func:`serialize` gives back mode, item and text exactly.
* prompts are complete text: the chat template includes its own special tokens and the plain
  template uses none, so prompts and targets are always tokenized with
  ``add_special_tokens=False``; :func:`encode` appends the tokenizer's EOS to the target.
* the context is truncated from the left to ``max_context_tokens`` (paper: 768) by dropping
  whole turns; only when the last turn alone is too long are tokens cut. The target is never cut.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from crslib.data import Catalog, Dialog, mention_parts
from crslib.ids.semantic_ids import LEVEL_NAMES, SemanticIDs

BOI, EOI, RESP = "<BOI>", "<EOI>", "<RESP>"
MODE_REC, MODE_CHAT = "<MODE=REC>", "<MODE=CHAT>"
CONTROL_TOKENS = (BOI, EOI, RESP, MODE_REC, MODE_CHAT)
MODES = {"rec": MODE_REC, "chat": MODE_CHAT}
FORMATS = ("gcrs", "resp", "mode_resp", "sid", "tiger")
TEMPLATES = ("plain", "chat")
ITEM_PLACEHOLDER = "<movie>"
MAX_CONTEXT_TOKENS = 768
# text after the prompt from which a recommendation (mode forced to REC) decodes the first code
RANK_PREFIX = {"gcrs": MODE_REC + BOI, "sid": MODE_REC + BOI, "tiger": BOI, "resp": BOI,
               "mode_resp": MODE_REC + RESP + BOI}

_NAME = r"BOI|EOI|RESP|MODE=REC|MODE=CHAT|[a-z]_[0-9]+"
_ESCAPE_RE = re.compile(rf"<(\\*)({_NAME})>")
_UNESCAPE_RE = re.compile(rf"<\\(\\*)({_NAME})>")
_SID_RE = re.compile(r"<([a-z])_([0-9]+)>")
TOKEN_RE = re.compile(rf"<({_NAME})>")


def escape(text: str) -> str:
    """Add one backslash inside every token-like ``<NAME>``: ``<BOI>`` -> ``<\\BOI>``."""
    return _ESCAPE_RE.sub(r"<\\\1\2>", text)


def unescape(text: str) -> str:
    """Inverse of :func:`escape`."""
    return _UNESCAPE_RE.sub(r"<\1\2>", text)


def special_tokens(sids: SemanticIDs) -> list[str]:
    """The control tokens, then every SID token level by level."""
    return list(CONTROL_TOKENS) + sids.all_tokens()


def mention(item_id: str, sids: SemanticIDs) -> str:
    """``<BOI><a_1><b_2><c_3><d_4><EOI>``."""
    return BOI + sids.tokens(item_id) + EOI


# ----------------------------------------------------------------------------- examples
@dataclass(frozen=True)
class Example:
    """One training/evaluation instance: the assistant turn ``turn_index`` of a dialog.

    ``prompt`` is the full (untruncated) rendering of ``context``; ``target`` follows it
    directly. ``mode``/``item`` are the gold intent and target item; ``turn_items`` all gold
    items of the turn; ``context_items`` every item listed in the context turns, in order,
    repeats kept; ``response`` the gold turn text (mentions as ``@id``).
    """

    dialog_id: str
    turn_index: int
    fmt: str
    prompt: str
    target: str
    mode: str
    item: str | None
    context_items: tuple[str, ...]
    response: str
    turn_items: tuple[str, ...] = ()
    context: tuple[tuple[str, str], ...] = ()  # (role, serialized text), for truncation
    template: str = "plain"


def render_text(text: str, sids: SemanticIDs) -> str:
    """Turn text with ``@id`` mentions as SID mentions and token-like literals escaped."""
    out = []
    for part in mention_parts(text):
        if isinstance(part, tuple):
            iid = part[0]
            out.append(mention(iid, sids) if iid in sids else escape("@" + iid))
        else:
            out.append(escape(part))
    return "".join(out)


def render_prompt(context: Sequence[tuple[str, str]], fmt: str = "gcrs", template: str = "plain",
                  tokenizer=None) -> str:
    """The prompt text for serialized context turns.

    ``plain``: ``User: …\\nAssistant: …\\n…Assistant:``. ``chat``: the tokenizer's chat template
    with ``add_generation_prompt=True``; a conversation that opens with the assistant (or is
    empty) gets an empty user turn first, since many templates require one. For ``tiger`` the
    context segments (one mention each) are joined into one user turn.
    """
    if fmt == "tiger":
        context = [("user", "".join(text for _, text in context))]
    if template == "plain":
        lines = [f"{'User' if role == 'user' else 'Assistant'}: {text}\n" for role, text in context]
        return "".join(lines) + "Assistant:"
    if template != "chat":
        raise ValueError(f"unknown template {template!r}; choose from {TEMPLATES}")
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise ValueError("template='chat' needs a tokenizer with a chat template")
    messages = [{"role": role, "content": text} for role, text in context]
    if not messages or messages[0]["role"] != "user":
        messages.insert(0, {"role": "user", "content": ""})
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def _target(fmt: str, mode: str, item: str | None, response: str, sids: SemanticIDs) -> str:
    seg = mention(item, sids) if item is not None else ""
    if fmt == "gcrs":
        return MODES[mode] + seg + RESP + response
    if fmt == "resp":
        return response
    if fmt == "mode_resp":
        return MODES[mode] + RESP + response
    if fmt == "sid":
        return MODES[mode] + seg
    if fmt == "tiger":
        return seg
    raise ValueError(f"unknown format {fmt!r}; choose from {FORMATS}")


def serialize(dialog: Dialog, sids: SemanticIDs, fmt: str = "gcrs", *, template: str = "plain",
              tokenizer=None) -> list[Example]:
    """Every assistant turn of ``dialog`` as examples of format ``fmt`` (see module docstring)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose from {FORMATS}")
    examples: list[Example] = []
    context: list[tuple[str, str]] = []
    context_items: list[str] = []
    for k, turn in enumerate(dialog.turns):
        if turn.role == "assistant":
            items = tuple(dict.fromkeys(i for i in turn.items if i in sids))
            response = render_text(turn.text, sids)
            targets = [("rec", i) for i in items] or ([] if fmt == "tiger" else [("chat", None)])
            prompt = render_prompt(context, fmt, template, tokenizer) if targets else ""
            for mode, item in targets:
                examples.append(Example(
                    dialog.id, k, fmt, prompt, _target(fmt, mode, item, response, sids), mode, item,
                    tuple(context_items), turn.text, items, tuple(context), template))
        if fmt == "tiger":
            context.extend(("user", mention(i, sids)) for i in turn.items if i in sids)
        else:
            context.append((turn.role, render_text(turn.text, sids)))
        context_items.extend(turn.items)
    return examples


def serialize_all(dialogs: Sequence[Dialog], sids: SemanticIDs, fmt: str = "gcrs",
                  **kwargs) -> list[Example]:
    """:func:`serialize` over many dialogs, concatenated in order."""
    return [ex for d in dialogs for ex in serialize(d, sids, fmt, **kwargs)]


# ----------------------------------------------------------------------------- token ids
def text_ids(text: str, tokenizer) -> list[int]:
    """Token ids of ``text`` as it stands (no special tokens added)."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def prompt_ids(example: Example, tokenizer, max_context_tokens: int | None = MAX_CONTEXT_TOKENS,
               suffix: str = "") -> list[int]:
    """Token ids of the prompt, context truncated from the left, then of ``suffix`` (not counted).

    Drops the fewest whole oldest turns that make the prompt fit ``max_context_tokens``; if the
    last turn alone does not fit, keeps its last ``max_context_tokens`` tokens.
    """
    tail = text_ids(suffix, tokenizer) if suffix else []

    def ids(j: int) -> list[int]:
        prompt = render_prompt(example.context[j:], example.fmt, example.template, tokenizer)
        return text_ids(prompt, tokenizer)

    full = ids(0)
    if max_context_tokens is None or len(full) <= max_context_tokens:
        return full + tail
    lo, hi = 1, len(example.context) - 1  # smallest j in [lo, hi] whose prompt fits
    last = ids(hi) if hi > 0 else full
    if hi <= 0 or len(last) > max_context_tokens:
        return last[-max_context_tokens:] + tail
    while lo < hi:
        mid = (lo + hi) // 2
        if len(ids(mid)) <= max_context_tokens:
            hi = mid
        else:
            lo = mid + 1
    return ids(lo) + tail


def rec_prompt_ids(example: Example, tokenizer,
                   max_context_tokens: int | None = MAX_CONTEXT_TOKENS) -> list[int]:
    """Prompt ids for ranking with the mode forced to REC: they end with ``<BOI>``."""
    return prompt_ids(example, tokenizer, max_context_tokens, RANK_PREFIX[example.fmt])


def encode(example: Example, tokenizer, max_context_tokens: int | None = MAX_CONTEXT_TOKENS
           ) -> dict[str, list[int]]:
    """``input_ids``, ``labels`` (-100 everywhere but target + EOS) and ``attention_mask``."""
    context = prompt_ids(example, tokenizer, max_context_tokens)
    target = text_ids(example.target, tokenizer)
    if tokenizer.eos_token_id is not None:
        target.append(tokenizer.eos_token_id)
    return {"input_ids": context + target, "labels": [-100] * len(context) + target,
            "attention_mask": [1] * (len(context) + len(target))}


def add_special_tokens(tokenizer, model, sids: SemanticIDs) -> dict[str, int]:
    """Add the control and SID tokens as extra special tokens (never split, idempotent) and
    resize ``model``'s embeddings (new rows by the library's mean resizing, seeded 0).

    Returns ``{token: id}`` for every token of :func:`special_tokens`.
    """
    import torch

    tokens = special_tokens(sids)
    vocab = tokenizer.get_vocab()
    missing = [t for t in tokens if t not in vocab]
    if missing:
        try:
            tokenizer.add_special_tokens({"extra_special_tokens": missing},
                                         replace_extra_special_tokens=False)
        except TypeError:  # transformers 4.x
            tokenizer.add_special_tokens({"additional_special_tokens": missing},
                                         replace_additional_special_tokens=False)
    if model is not None and model.get_input_embeddings().num_embeddings < len(tokenizer):
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model.resize_token_embeddings(len(tokenizer))
    return {t: tokenizer.convert_tokens_to_ids(t) for t in tokens}


# ----------------------------------------------------------------------------- parse
@dataclass(frozen=True)
class Parsed:
    """A generated target read back.

    ``item`` is the item of the target segment (None for chat turns and for formats without a
    target segment); ``text`` the response with mentions as ``@id`` (the inverse of the
    serializer, ``""`` for ``sid``/``tiger``); ``metric_text`` with each mention as one
    ``<movie>`` (dialog metrics, NOTES.md §5); ``display_text`` with titles (for people);
    ``mentions`` the items mentioned in the response, in order.
    """

    mode: str
    item: str | None
    text: str = ""
    metric_text: str = ""
    display_text: str = ""
    mentions: tuple[str, ...] = ()


def _read_mention(s: str, pos: int, sids: SemanticIDs, whole: str) -> tuple[str, int]:
    """Read ``<BOI>`` L SID tokens ``<EOI>`` at ``pos``; return (item id, end position)."""
    if not s.startswith(BOI, pos):
        raise ValueError(f"expected {BOI} at offset {pos} of {whole!r}")
    pos += len(BOI)
    codes = []
    for level in range(sids.levels):
        m = _SID_RE.match(s, pos)
        if not m or m.group(1) != LEVEL_NAMES[level] or int(m.group(2)) >= sids.codebook_size:
            raise ValueError(f"expected a level-{level} SID token at offset {pos} of {whole!r}")
        codes.append(int(m.group(2)))
        pos = m.end()
    if not s.startswith(EOI, pos):
        raise ValueError(f"expected {EOI} at offset {pos} of {whole!r}")
    item = sids.item_of(codes)
    if item is None:
        raise ValueError(f"SID {codes} is no item, in {whole!r}")
    return item, pos + len(EOI)


def _read_response(s: str, pos: int, sids: SemanticIDs, catalog: Catalog | None, whole: str
                   ) -> tuple[str, str, str, tuple[str, ...]]:
    text, metric, display, mentions = [], [], [], []
    while pos < len(s):
        m = TOKEN_RE.search(s, pos)
        end = m.start() if m else len(s)
        plain = unescape(s[pos:end])
        text.append(plain)
        metric.append(plain)
        display.append(plain)
        if not m:
            break
        if m.group(0) != BOI:
            raise ValueError(f"unexpected {m.group(0)} at offset {m.start()} of {whole!r}")
        item, pos = _read_mention(s, m.start(), sids, whole)
        mentions.append(item)
        text.append("@" + item)
        metric.append(ITEM_PLACEHOLDER)
        display.append(catalog[item].name if catalog is not None and item in catalog else item)
    return "".join(text), "".join(metric), "".join(display), tuple(mentions)


def display_text(text: str, sids: SemanticIDs, catalog: Catalog | None = None) -> str:
    """Serialized turn text (a context turn) for people: each SID mention written as the
    item's ``name`` (title and year; the id without ``catalog``), escapes removed.

    Raises ``ValueError`` naming the text on a malformed mention or a SID that is no item.
    """
    return _read_response(text, 0, sids, catalog, text)[2]


def mentioned_items(text: str, sids: SemanticIDs) -> tuple[str, ...]:
    """The items mentioned in a serialized turn, in order (repeats kept)."""
    return _read_response(text, 0, sids, None, text)[3]


def parse(text: str, sids: SemanticIDs, fmt: str = "gcrs", *, catalog: Catalog | None = None,
          eos: str | None = None) -> Parsed:
    """Read a target of format ``fmt`` back; anything after the first ``eos`` is dropped.

    Raises ``ValueError`` naming the text when it does not follow the format: a missing or
    unknown mode, a mention that is not ``<BOI>`` + L codes + ``<EOI>`` or not an item, a control
    or SID token outside a mention, or trailing text after a ``sid``/``tiger`` target.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose from {FORMATS}")
    s = text.split(eos, 1)[0] if eos else text
    pos, mode, item = 0, None, None
    if fmt in ("gcrs", "mode_resp", "sid"):
        mode = next((m for m, tok in MODES.items() if s.startswith(tok)), None)
        if mode is None:
            raise ValueError(f"expected {MODE_REC} or {MODE_CHAT} at the start of {text!r}")
        pos = len(MODES[mode])
        if mode == "rec" and fmt in ("gcrs", "sid"):
            item, pos = _read_mention(s, pos, sids, text)
    elif fmt == "tiger":
        mode = "rec"
        item, pos = _read_mention(s, pos, sids, text)
    if fmt in ("sid", "tiger"):
        if pos != len(s):
            raise ValueError(f"unexpected text after the target at offset {pos} of {text!r}")
        return Parsed(mode, item)
    if fmt in ("gcrs", "mode_resp"):
        if not s.startswith(RESP, pos):
            raise ValueError(f"expected {RESP} at offset {pos} of {text!r}")
        pos += len(RESP)
    plain, metric, display, mentions = _read_response(s, pos, sids, catalog, text)
    if mode is None:  # resp: no mode token; a response that mentions an item recommends
        mode = "rec" if mentions else "chat"
    return Parsed(mode, item, plain, metric, display, mentions)

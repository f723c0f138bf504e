"""Chat with a trained GCRS run (NOTES.md §3 inference modes), from Python or as a widget.

Modules: :mod:`.replies` (what a reply is), :mod:`.grammar` (what a response may say),
:mod:`.cache` (the conversation's KV cache), :mod:`.session` (:class:`ChatSession`),
:mod:`.script` (the scripted conversation), :mod:`.widget` (the notebook widget); their public
names are this package's own (``chat.ChatSession``).

:class:`ChatSession` keeps the dialog as serialized turns (the training format) and answers
each user message in one of the paper's three inference modes:

* ``free``: the model picks the intent — ``<MODE=REC>`` vs ``<MODE=CHAT>`` after
  ``Assistant:``, REC when its logit exceeds CHAT's by more than ``intent_cut`` (0, the
  paper's rule, unless a cut chosen on validation turns is given:
  :func:`crslib.studies.freemode.intent_cut`); ``Reply.p_rec`` is their two-way softmax;
* ``rec`` / ``chat`` (guided): the mode token is supplied;
* ``item`` (item-conditioned): ``<MODE=REC><BOI>`` + the given item's SID + ``<EOI><RESP>`` is
  supplied and the model writes the response about that item.

A recommendation turn ranks items by the constrained beam search of the evaluation
(``beam_search.sid_beam_search``, width 50, summed per-level log-probabilities) and shows the top
``top_k``; its response is written after the top item's SID, in the paper's order (mode, item,
text). Responses are decoded with the session's :class:`crslib.decoding.generation.ResponseDecoding`
(the setting :func:`crslib.evaluation.dialog_eval.generate_responses` measures; greedy unless told)
and end at the end of their turn: item mentions inside them are constrained to catalog SIDs
(``trie.SIDConstraint``), outside a mention no control or SID token may be written, and a model
trained with a restricted softmax (the run's ``output_vocab.json``) keeps to that vocabulary
(``dialog_eval.OnlyTokens``), as in ``dialog_eval.generate_responses``.

Titles typed as plain text ("I loved The Shining") are linked to catalog items by
:class:`crslib.data.titles.TitleLinker` (its rule: case-insensitive, year optional, ambiguity
resolved by year, then the dataset's mention count) and enter the context as ``<BOI>SID<EOI>``,
exactly as dataset mentions do. With ``exclude_named`` (the default) a recommendation never repeats
an item the user named in the conversation; turn it off to allow them. With ``exclude_recommended``
(the default) it never repeats an item the assistant already mentioned either, so asking "something
else?" brings new titles. Both are chat-only options: the evaluation protocols are unchanged.
A list never shows one film twice under two catalog entries (:meth:`ChatSession.same_film`),
nor, under those options, another entry of a film already named or shown.

User text is whitespace-collapsed (a typed newline cannot open a fake ``Assistant:`` line),
rendered like dataset text (``serialize.render_text``: ``@<item id>`` becomes a mention,
token-like literals such as ``<MODE=REC>`` are escaped) and the tokenizer's own special tokens
(``<|im_end|>``…) are broken with a zero-width space, so typed text never becomes a control
token. Empty or over-long messages raise :class:`InputError` (a ``ValueError``) with a message
meant for people; the widget shows it.
"""
from crslib.chat.grammar import NoMentionOf, ResponseGrammar, response_text  # noqa: F401
from crslib.chat.replies import (INFERENCE_MODES, MAX_CHARS, MODE_LABELS,  # noqa: F401
                                 SAMPLE_CANDIDATES, InputError, Recommendation, Reply, is_follow_up)
from crslib.chat.script import SCRIPT, run_script  # noqa: F401
from crslib.chat.session import ChatSession  # noqa: F401
from crslib.chat.widget import ChatWidget, reply_html, transcript_html  # noqa: F401

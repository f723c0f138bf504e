"""The chat as an ipywidgets widget in a notebook, and a reply as HTML."""
from __future__ import annotations

import html
import time
import warnings

from crslib import data
from crslib.chat.replies import INFERENCE_MODES, MODE_LABELS, InputError, Recommendation, Reply
from crslib.chat.session import ChatSession


def reply_html(reply: Reply, catalog: data.Catalog | None = None, details: bool = False) -> str:
    """One assistant turn as HTML (all escaped): a badge with the decision in words, the
    response, and the recommendations as a person reads them (title, year, genres); with
    ``details`` also each item's SID path and score (summed per-level log-probability)."""
    badge = (f"<span class='crslib-badge' style='font-size:85%;color:#666'>[{reply.mode.upper()}] "
             f"{html.escape(reply.reason or MODE_LABELS[reply.requested])}</span>")
    body = (f"<span class='crslib-response'>{html.escape(reply.text)}</span>" if reply.text.strip()
            else "<i>(empty response)</i>")
    note = ""
    if reply.request and reply.matching is not None:
        shown = len(reply.recommendations)
        note = (f"<div class='crslib-filter' style='font-size:85%;color:#666'>only films that are "
                f"{html.escape(reply.request)}: {reply.matching} in the catalog"
                + (f", so {shown} shown" if reply.matching < 5 else "") + "</div>")

    def row(k: int, r: Recommendation) -> str:
        it = catalog[r.item_id] if catalog is not None and r.item_id in catalog else None
        title = html.escape(it.title if it else r.title)
        year = html.escape(str(it.year)) if it and it.year else ""
        kinds = html.escape(", ".join(it.genres)) if it and it.genres else ""
        extra = (f"<td>{r.score:.3f}</td><td><code>{html.escape(r.sid)}</code></td>"
                 if details else "")
        return f"<tr><td>{k}</td><td>{title}</td><td>{year}</td><td>{kinds}</td>{extra}</tr>"
    rows = "".join(row(k, r) for k, r in enumerate(reply.recommendations, start=1))
    head = "<th>#</th><th>title</th><th>year</th><th>genres</th>" + (
        "<th>score</th><th>SID path</th>" if details else "")
    table = (f"<table class='crslib-recs' style='font-size:85%;margin:2px 0 4px 12px;line-height:1.1'>"
             f"<tr>{head}</tr>{rows}</table>") if rows else ""
    return f"<div class='crslib-assistant'><b>Assistant</b> {badge}<br>{body}{note}{table}</div>"


def transcript_html(session: ChatSession, height: str = "360px", details: bool = False) -> str:
    """The conversation as HTML, newest at the bottom, in a box that stays scrolled down."""
    parts, k = [], 0
    for role, text in session.history:
        if role == "user":
            parts.append(f"<div class='crslib-user' style='margin:4px 0'><b>You</b><br>"
                         f"{html.escape(text)}</div>")
        else:
            parts.append(reply_html(session.replies[k], session.catalog, details))
            k += 1
    inner = "".join(parts) or "<i>Say hello to start.</i>"
    # column-reverse keeps the scroll position at the newest turn
    style = (f"height:{height};overflow-y:auto;display:flex;flex-direction:column-reverse;"
             "border:1px solid #ccc;padding:6px")
    return f"<div style='{style}'><div>{inner}</div></div>"


class ChatWidget:
    """ipywidgets front end of a :class:`ChatSession`: transcript, mode selector, item picker
    (item mode), boxes "only what I asked for" (the session's ``only_asked``), "recommend
    titles I named" (``exclude_named``) and "details" (SID paths and scores in the tables), a
    text box (Enter sends), Send and Reset buttons, and a status line: "thinking…" while a reply
    is computed (Send and the text box disabled), then the seconds it took, or a message.

    It talks in its own conversation (``session.fresh()`` unless ``share=True``), so an example
    conversation played above it stays apart. :meth:`send` and :meth:`reset` are what the
    buttons and Enter call; tests call them directly.
    """

    def __init__(self, session: ChatSession, height: str = "360px", share: bool = False):
        import ipywidgets as w
        self.session, self.height = (session if share else session.fresh()), height
        session = self.session
        names = {}
        if session.catalog is not None:
            for iid in session.sids.item_ids:
                name = session.title(iid)
                names[name if name not in names else f"{name} [{iid}]"] = iid
        else:
            names = {iid: iid for iid in session.sids.item_ids}
        self.item_ids = names
        self._busy, self._done_at = False, -1e9
        self.transcript = w.HTML(transcript_html(session, height))
        self.mode = w.Dropdown(options=[(MODE_LABELS[m], m) for m in INFERENCE_MODES],
                               value="free", description="mode")
        # ensure_option off: a cleared picker reaches the kernel as "" (then item mode asks for
        # an item) instead of keeping the last valid title
        self.item = w.Combobox(options=sorted(names), placeholder="type a title",
                               ensure_option=False, description="item",
                               layout=w.Layout(display="none", width="420px"))
        self.text = w.Text(placeholder="Type a message and press Enter…",
                           layout=w.Layout(width="60%"))
        self.only_asked = w.Checkbox(value=session.only_asked, indent=False,
                                     description="only what I asked for")
        self.allow_named = w.Checkbox(value=not session.exclude_named, indent=False,
                                      description="recommend titles I named")
        self.details = w.Checkbox(value=False, indent=False, description="details")
        self.send_button = w.Button(description="Send", button_style="primary")
        self.reset_button = w.Button(description="Reset")
        self.status = w.HTML()
        self.send_button.on_click(lambda _: self.send())
        self.reset_button.on_click(lambda _: self.reset())
        with warnings.catch_warnings():  # ipywidgets 8 deprecates on_submit, but it is the
            warnings.simplefilter("ignore", DeprecationWarning)  # only Enter-only event
            self.text.on_submit(lambda _: self.send())
        self.mode.observe(self._on_mode, names="value")
        self.only_asked.observe(self._on_only_asked, names="value")
        self.allow_named.observe(self._on_allow_named, names="value")
        self.details.observe(lambda _: self._refresh(), names="value")
        self.box = w.VBox([self.transcript,
                           w.HBox([self.mode, self.item, self.only_asked, self.allow_named,
                                   self.details]),
                           w.HBox([self.text, self.send_button, self.reset_button]), self.status])

    def _on_only_asked(self, change) -> None:
        self.session.only_asked = bool(change["new"])

    def _on_allow_named(self, change) -> None:
        self.session.exclude_named = not change["new"]

    def _on_mode(self, change) -> None:
        self.item.layout.display = None if change["new"] == "item" else "none"

    def _refresh(self) -> None:
        self.transcript.value = transcript_html(self.session, self.height, self.details.value)

    def _status(self, message: str, error: bool = False) -> None:
        color = "#b00" if error else "#666"
        self.status.value = f"<span style='color:{color}'>{html.escape(message)}</span>"

    def _thinking(self, on: bool) -> None:
        self._busy = on
        self.text.disabled = self.send_button.disabled = on
        if on:
            self._status("thinking…")

    def send(self, text: str | None = None) -> Reply | None:
        """Send ``text`` (default: the text box) with the selected mode; a rejected message
        is shown in the status line and returns None. An Enter pressed while the last reply
        was being computed (queued, arriving just after it) is dropped, not answered."""
        text = self.text.value if text is None else text
        if self._busy or (not text.strip() and time.monotonic() - self._done_at < 1.5):
            return None
        item = None
        if self.mode.value == "item":
            item = self.item_ids.get(self.item.value, self.item.value) or None
        self._thinking(True)
        try:
            reply = self.session.reply(text, self.mode.value, item)
        except InputError as e:
            self._status(str(e), error=True)
            return None
        finally:
            self._busy = False
            self.text.disabled = self.send_button.disabled = False
            self._done_at = time.monotonic()
        self.text.value = ""
        self._refresh()
        self._status(f"answered in {reply.seconds:.2f} s")
        return reply

    def reset(self) -> None:
        self.session.reset()
        self._refresh()
        self._status("conversation cleared")

    def display(self):
        from IPython.display import display
        display(self.box)
        return self

    def _ipython_display_(self):
        self.display()

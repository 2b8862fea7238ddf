"""The status page as HTML: string templates, every value escaped with :func:`html.escape`.

:func:`sections` renders each part of the page (summary, links, queues, documents, dead
letters) as an HTML fragment; :func:`page` puts them in the whole document with the style and
the script. The script fetches the same fragments from ``status.json`` every few seconds and
puts them in place, so the page is rendered by the server only, once per request.

Figures a program may read carry ``data-`` attributes: ``data-link``/``data-state`` on a link's
state, ``data-hop`` with ``data-queued``/``data-in-flight``/``data-dead`` on a queue row,
``data-figure`` with ``data-value`` in the summary.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from functools import cache
from html import escape
from importlib import resources

from lienthong.edxml.model import STATUS_CODES
from lienthong.receipts import VIETNAM
from lienthong.statuspage.snapshot import DocumentRow, QueueRow, Snapshot
from lienthong.store.model import DeadLetter, Receipt

__all__ = ["REFRESH_S", "SECTIONS", "page", "sections"]

REFRESH_S = 5
"""How often the page refreshes itself."""

IDLE_ROWS = 12
"""Neighbours with nothing waiting get rows up to this many; more are listed in one line."""

SECTIONS = ("summary", "links", "queues", "documents", "dead-letters")
"""The ids of the parts of the page the script replaces."""


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _time(at: float) -> str:
    """Vietnam local time, as clerks read it."""
    return dt.datetime.fromtimestamp(at, VIETNAM).strftime("%Y-%m-%d %H:%M:%S")


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min"
    return f"{hours // 24} days {hours % 24} h"


def _table(headers: Sequence[str], rows: Iterable[str], empty: str) -> str:
    body = "".join(rows)
    if not body:
        return f'<p class="empty">{_e(empty)}</p>'
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _badge(state: str, good: bool) -> str:
    return f'<span class="badge {"good" if good else "bad"}">{_e(state)}</span>'


def _figure(name: str, label: str, value: int | str, detail: str, good: bool) -> str:
    return (
        f'<div class="figure {"good" if good else "bad"}">'
        f'<span class="label">{_e(label)}</span>'
        f'<span class="value" data-figure="{_e(name)}" data-value="{_e(value)}">{_e(value)}</span>'
        f'<span class="detail">{_e(detail)}</span></div>'
    )


def _summary(s: Snapshot) -> str:
    oldest = s.oldest_waiting
    waiting_detail = (
        f"oldest {_age(oldest.age_s)}, to {oldest.next_hop}" if oldest else "nothing waiting"
    )
    figures = [
        _figure(
            "links-up",
            "Links up",
            s.links_up,
            f"of {len(s.links)}",
            s.links_up == len(s.links),
        ),
        _figure("waiting", "Transfers waiting", s.waiting, waiting_detail, True),
        _figure("dead-letters", "Dead letters", s.dead_total, "need a requeue", s.dead_total == 0),
        _figure(
            "intake",
            "Intake",
            "blocked" if s.intake_blocked else "open",
            s.intake_blocked or "taking new packages",
            s.intake_blocked is None,
        ),
    ]
    if s.directory:
        state = "in force" if s.directory_ok else "expired"
        figures.append(_figure("directory", "Directory", state, s.directory, s.directory_ok))
    return (
        f'<div class="figures">{"".join(figures)}</div>'
        f'<p class="updated">Updated <time id="updated">{_e(_time(s.at))}</time>'
        f" (Vietnam time); refreshed every {REFRESH_S} s.</p>"
    )


def _links(s: Snapshot) -> str:
    rows = (
        "<tr>"
        f"<td>{_e(link.name)}</td><td><code>{_e(link.broker)}</code></td>"
        f'<td data-link="{_e(link.name)}" data-state="{_e(link.state)}">'
        f"{_badge(link.state, link.state == 'up')}</td>"
        f"<td>{_e(_time(link.since))} ({_e(_age(s.at - link.since))} ago)</td>"
        f"<td>{link.connects}</td>"
        f'<td class="reason">{_e(link.last_error or "")}</td>'
        "</tr>"
        for link in s.links
    )
    headers = ("Link", "Broker", "State", "Since", "Connections", "Last error")
    return _table(headers, rows, "This node has no broker links.")


def _queue_row(q: QueueRow) -> str:
    gone = "" if q.neighbour else '<div class="sub">no longer a neighbour</div>'
    return (
        f'<tr data-hop="{_e(q.next_hop)}" data-queued="{q.queued}"'
        f' data-in-flight="{q.in_flight}" data-dead="{q.dead}"'
        f' data-neighbour="{"yes" if q.neighbour else "no"}">'
        f"<td><code>{_e(q.next_hop)}</code>{gone}</td>"
        f'<td class="num">{q.queued}</td><td class="num">{q.in_flight}</td>'
        f'<td class="num{" alert" if q.dead else ""}">{q.dead}</td>'
        f'<td class="num">{q.acked}</td>'
        "</tr>"
    )


def _queues(s: Snapshot) -> str:
    # A national or provincial node may have a hundred neighbours: the ones with something
    # waiting are rows; past IDLE_ROWS, the idle ones are one line the operator can open.
    busy = [q for q in s.queues if not q.idle]
    idle = [q for q in s.queues if q.idle]
    shown = busy + idle if len(idle) <= IDLE_ROWS else busy
    headers = ("Next hop", "Queued", "In flight", "Dead", "Acknowledged")
    empty = "Nothing is waiting for any neighbour." if idle else "This node has no neighbours."
    table = _table(headers, map(_queue_row, shown), empty)
    if len(shown) < len(s.queues):
        codes = " ".join(
            f'<code data-idle-hop="{_e(q.next_hop)}">{_e(q.next_hop)}</code>' for q in idle
        )
        table += (
            f'<details class="idle"><summary>{len(idle)} more neighbours with nothing'
            f" waiting</summary><p>{codes}</p></details>"
        )
    oldest = s.oldest_waiting
    if oldest is None:
        note = "Nothing is waiting for a hop receipt."
    else:
        note = (
            f"Oldest waiting: transfer <code>{_e(oldest.transfer_id)}</code> to"
            f" <code>{_e(oldest.next_hop)}</code>, {_e(oldest.state)}, for"
            f' <strong data-oldest-age="{oldest.age_s:.0f}">{_e(_age(oldest.age_s))}</strong>.'
        )
    return f'{table}<p class="note">{note}</p>'


def _receipt(r: Receipt) -> str:
    if r.level == "hop":
        text = f"hop receipt: stored by {r.by}"
    elif r.level == "status":
        text = f"status {r.code} {STATUS_CODES.get(r.code, 'unknown status')} from {r.by}"
    else:
        text = f"{'retrieved' if r.code == 'done' else 'retrieval failed'} by {r.by}"
    good = not (r.level == "status" and r.code == "02") and r.code != "fail"
    return (
        f'<li class="{"good" if good else "bad"}" data-level="{_e(r.level)}"'
        f' data-code="{_e(r.code)}">{_e(text)} <time>{_e(_time(r.at))}</time></li>'
    )


def _document(d: DocumentRow) -> str:
    record, meta = d.record, d.record.meta
    origin = "submitted here" if record.from_peer is None else f"from {record.from_peer}"
    receipts = "".join(_receipt(r) for r in d.receipts) or '<li class="none">none yet</li>'
    state = record.state.value
    deviations = ""
    if d.deviations:
        items = "".join(f"<li>{_e(line)}</li>" for line in d.deviations)
        deviations = (
            f'<details class="deviations"><summary>{len(d.deviations)} deviation(s) from'
            f" QCVN 102, accepted</summary><ul>{items}</ul></details>"
        )
    return (
        f'<tr data-document="{_e(meta.document_id)}" data-state="{_e(state)}">'
        f"<td><code>{_e(meta.document_id)}</code>{deviations}</td>"
        f"<td><code>{_e(meta.sender)}</code> &rarr; {_e(', '.join(meta.recipients))}"
        f'<div class="sub">{_e(origin)}</div></td>'
        f"<td>{_badge(state, state not in ('quarantined', 'expired'))}</td>"
        f"<td>{_e(_time(record.created_at))}</td>"
        f'<td><ul class="receipts">{receipts}</ul></td>'
        "</tr>"
    )


def _documents(s: Snapshot) -> str:
    headers = ("Document", "From → to", "State", "Stored", "Receipts")
    return _table(headers, map(_document, s.documents), "No documents since the daemon started.")


def _dead(d: DeadLetter) -> str:
    return (
        f'<tr data-dead="{_e(d.id)}">'
        f"<td>{_e(d.kind)}</td><td><code>{_e(d.document_id)}</code></td>"
        f'<td><code>{_e(d.next_hop or "")}</code></td><td class="num">{d.attempts}</td>'
        f'<td class="reason">{_e(d.reason)}</td><td>{_e(_time(d.since))}</td>'
        f'<td><button type="button" data-requeue="{_e(d.id)}" data-kind="{_e(d.kind)}"'
        f' data-document="{_e(d.document_id)}">Requeue</button></td>'
        "</tr>"
    )


def _dead_letters(s: Snapshot) -> str:
    headers = ("Kind", "Document", "Next hop", "Attempts", "Reason", "Since", "")
    table = _table(headers, map(_dead, s.dead_letters), "No dead letters.")
    if s.dead_total > len(s.dead_letters):
        more = s.dead_total - len(s.dead_letters)
        table += f'<p class="note">{more} older dead letters are not listed.</p>'
    return table


def sections(s: Snapshot) -> dict[str, str]:
    """Each part of the page (by the id of its element) as an HTML fragment."""
    return {
        "summary": _summary(s),
        "links": _links(s),
        "queues": _queues(s),
        "documents": _documents(s),
        "dead-letters": _dead_letters(s),
    }


@cache
def _asset(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


_TITLES = {
    "links": "Broker links",
    "queues": "Queues per next hop",
    "documents": "Recent documents and their receipts",
    "dead-letters": "Dead letters",
}


def page(s: Snapshot, token: str) -> str:
    """The whole page; ``token`` goes with requeue requests to show they come from it."""
    parts = sections(s)
    body = f'<section id="summary">{parts["summary"]}</section>' + "".join(
        f'<h2>{_e(title)}</h2><section id="{name}">{parts[name]}</section>'
        for name, title in _TITLES.items()
    )
    return (
        "<!DOCTYPE html>"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="lienthong-token" content="{_e(token)}">'
        f'<meta name="lienthong-refresh" content="{REFRESH_S}">'
        f"<title>lienthong {_e(s.node)}</title>"
        f"<style>{_asset('status.css')}</style></head>"
        f'<body data-node="{_e(s.node)}" data-refreshes="0">'
        f"<header><h1>lienthong <code>{_e(s.node)}</code></h1>"
        '<nav><a href="healthz">health</a> <a href="metrics">metrics</a></nav></header>'
        '<p id="notice" role="status" hidden></p>'
        f"<main>{body}</main>"
        f"<script>{_asset('status.js')}</script>"
        "</body></html>"
    )

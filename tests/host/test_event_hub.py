"""The event hub on a real etcd: one watch fanned out to several streams, each with what it asked
for: from now, from a Last-Event-ID (replaying only what came after it), from before the hub began
(a reload event), and from a recent past when a stream starts the hub."""

from __future__ import annotations

import threading
import time

from cairn.web.streams import END, EventHub, parse_event_id


def collect(hub: EventHub, position, seconds: float, into: list[str]) -> threading.Thread:
    """Follow the hub for `seconds` in a thread; the SSE text goes into `into`."""
    def run():
        for text in hub.follow(position, until=time.monotonic() + seconds, keepalive=0.5):
            into.append(text)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def messages(texts: list[str]) -> list[tuple[str, str]]:
    """(id or event kind, event) of each message in the stream's text, keep-alives and retry left out."""
    found = []
    for block in "".join(texts).split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":"))
        if "event" in fields:
            found.append((fields.get("id", "-"), fields["event"]))
    return found


def test_one_watch_feeds_every_stream_from_where_it_stands(store):
    hub = EventHub(store)
    hub.start()
    try:
        before = store.revision()
        first = store.put("events/1", {"message": "one"})
        store.put("locks/x", {"job": "j"})                   # not followed: no message
        second = store.put("jobs/2", {"id": "2", "state": "queued"})
        time.sleep(0.5)
        live, replay, old = [], [], []
        threads = [collect(hub, None, 2.0, live), collect(hub, parse_event_id(str(first)), 2.0, replay),
                   collect(hub, (before - 5, END), 2.0, old)]
        time.sleep(0.3)
        third = store.put("nodes/n", {"name": "n"})
        for thread in threads:
            thread.join(5)
    finally:
        hub.stop()
    assert [(str(third), "node")] == messages(live)
    assert [(str(second), "job"), (str(third), "node")] == messages(replay)
    assert [("-", "reload"), (str(third), "node")] == messages(old)
    assert all(texts[0] == "retry: 2000\n\n" for texts in (live, replay, old))


def test_a_stream_that_starts_the_hub_gets_its_recent_past(store):
    since = store.revision()
    first = store.put("events/a", {"message": "a"})
    second = store.put("events/b", {"message": "b"})
    hub = EventHub(store)
    hub.start((since, END))
    try:
        got: list[str] = []
        collect(hub, (since, END), 1.0, got).join(5)
    finally:
        hub.stop()
    assert [(str(first), "event"), (str(second), "event")] == messages(got)

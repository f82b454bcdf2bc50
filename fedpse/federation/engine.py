"""A faster message feeder for Flower's simulation engine (``federation.fast_engine``, on by default).

Flower 1.41's simulation engine moves messages from its LinkState to the client actors in a loop
(``flwr.server.superlink.fleet.vce.vce_api.add_messages_to_queue``) that, every 0.1 s, asks the LinkState for the
next message of *every* node; each ask scans every stored message and validates it. With one node per user the cost
grows with users × messages in flight: at 300 users the server process spent a large share of a core in that loop,
and a message waited up to 0.1 s before an actor could take it.

``fast_feeder`` is the same loop restricted to the nodes that have an undelivered message (read from the in-memory
LinkState's store), polling every 20 ms. The LinkState's own ``get_message_ins`` still validates, marks and returns
each message, so what reaches the actors is unchanged; only the nodes with nothing to deliver are skipped. The patch
applies only when Flower's function has the signature it replaces and the LinkState keeps its messages in memory;
otherwise Flower's loop runs untouched. Effect measured by ``benchmarks/throughput.py`` (see README).
"""

from __future__ import annotations

import contextlib
import inspect
import threading
from collections.abc import Iterator
from queue import Queue

POLL_SECONDS = 0.02


def _pending_nodes(state) -> set[int] | None:
    store = getattr(state, "message_ins_store", None)
    lock = getattr(state, "lock", None)
    if not isinstance(store, dict) or lock is None:
        return None
    with lock:
        return {m.metadata.dst_node_id for m in store.values() if m.metadata.delivered_at == ""}


def fast_feeder(state, queue: Queue, nodes_mapping, f_stop: threading.Event) -> None:
    """Put undelivered messages of the simulated nodes into the actors' queue (see module docstring)."""
    while not f_stop.is_set():
        pending = _pending_nodes(state)
        nodes = nodes_mapping.keys() if pending is None else [n for n in pending if n in nodes_mapping]
        for node_id in nodes:
            for message in state.get_message_ins(node_id=node_id, limit=1):
                queue.put(message)
        f_stop.wait(POLL_SECONDS)


@contextlib.contextmanager
def fast_engine(enabled: bool = True) -> Iterator[bool]:
    """Install ``fast_feeder`` in Flower's simulation engine for the duration; yields whether it is installed."""
    try:
        from flwr.server.superlink.fleet.vce import vce_api
    except ImportError:
        yield False
        return
    original = getattr(vce_api, "add_messages_to_queue", None)
    expected = ["state", "queue", "nodes_mapping", "f_stop"]
    if not enabled or original is None or list(inspect.signature(original).parameters) != expected:
        yield False
        return
    vce_api.add_messages_to_queue = fast_feeder
    try:
        yield True
    finally:
        vce_api.add_messages_to_queue = original

"""The fast feeder hands the simulation engine exactly the undelivered messages, polling only busy nodes."""

from __future__ import annotations

import threading
import time
from queue import Queue
from types import SimpleNamespace

from fedpse.federation.engine import fast_engine, fast_feeder


class FakeLinkState:
    """The two things the feeder uses: the in-memory store (with its lock) and ``get_message_ins``."""

    def __init__(self, messages: dict[str, int]):
        self.lock = threading.RLock()
        self.message_ins_store = {
            mid: SimpleNamespace(metadata=SimpleNamespace(dst_node_id=node, delivered_at=""), id=mid)
            for mid, node in messages.items()
        }
        self.asked: list[int] = []

    def get_message_ins(self, node_id: int, limit: int):
        self.asked.append(node_id)
        with self.lock:
            for message in self.message_ins_store.values():
                if message.metadata.dst_node_id == node_id and message.metadata.delivered_at == "":
                    message.metadata.delivered_at = "now"
                    return [message]
        return []


def test_only_nodes_with_pending_messages_are_asked_and_every_message_arrives_once():
    state = FakeLinkState({"a": 3, "b": 3, "c": 7})
    queue: Queue = Queue()
    stop = threading.Event()
    thread = threading.Thread(target=fast_feeder, args=(state, queue, dict.fromkeys(range(300)), stop))
    thread.start()
    deadline = time.monotonic() + 5
    while queue.qsize() < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    thread.join()
    assert sorted(queue.get().id for _ in range(3)) == ["a", "b", "c"]
    assert set(state.asked) <= {3, 7}  # never the 298 idle nodes


def test_the_patch_is_installed_only_for_the_block_and_can_be_turned_off():
    from flwr.server.superlink.fleet.vce import vce_api

    original = vce_api.add_messages_to_queue
    with fast_engine(True) as installed:
        assert installed and vce_api.add_messages_to_queue is fast_feeder
    assert vce_api.add_messages_to_queue is original
    with fast_engine(False) as installed:
        assert not installed and vce_api.add_messages_to_queue is original

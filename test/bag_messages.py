"""Every message of a rosbag, deserialized, for the drive-bag tests (test_drive_bag.py,
test_drive_sim.py); rosbags is imported by the caller's importorskip first."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple


class Message(NamedTuple):
    topic: str
    msgtype: str
    log_ns: int
    msg: Any


def read_messages(path: Path) -> list[Message]:
    """All messages of the bag at `path`, in log-time order."""
    from rosbags.highlevel import AnyReader

    with AnyReader([path]) as reader:
        return [Message(conn.topic, conn.msgtype, log_ns, reader.deserialize(raw, conn.msgtype))
                for conn, log_ns, raw in reader.messages()]


def stamp_ns(msg: Any) -> int:
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec

"""Every message of a rosbag, deserialized, for the drive-bag tests (test_drive_bag.py,
test_drive_sim.py), and the simulated raw-sensor drive the supervision, calibration and world
tests replay (write_sim_drive); rosbags is imported by the caller's importorskip first."""

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


def write_sim_drive(directory: Path, frames: int, size: str, seed: int) -> Path:
    """`contrast-semask-data drive-bag` (the raw-sensor drive: camera, camera_info, TF,
    odometry, IMU, ground truth) of `frames` frames of `size` (HxW) into directory/drive."""
    from contrast_semask_train.data.cli import main as data_main

    bag = directory / 'drive'
    assert data_main(['drive-bag', str(bag), '--frames', str(frames), '--size', size, '--seed',
                      str(seed), '--no-progress']) == 0
    return bag

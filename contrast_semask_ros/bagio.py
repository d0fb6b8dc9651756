"""Bag reading and writing for replay (and the synthetic drive bags), through `rosbags`.

    with InputBag(Path('drive')) as bag:                   # rosbag2 (mcap/sqlite3) or ROS 1
        cams = bag.connections('/camera/image_raw', 'image', IMAGE_TYPES)
        for conn, log_ns, raw in bag.messages(cams):
            msg = bag.decode(raw, conn)                     # None when undecodable
    with OutputBag(out / 'replay_bag', '/camera/image_raw', IMAGE_TYPE, '/cost_map') as bag:
        bag.write_frame(log_ns, camera_raw, result, frame_id, overlay)

One place for the choices every writer here makes: the typestore per rosbag2 metadata version
(`typestore`), the storage plugin by name (`storage_plugin`), the QoS a default rclpy publisher
offers (`reliable_qos`). rosbags is imported lazily (a robot without it still imports this).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np

from contrast_semask_ros import codec

if TYPE_CHECKING:
    from rosbags.typesys.store import Typestore

    from contrast_semask_ros.render import Encoded

IMAGE_TYPE = 'sensor_msgs/msg/Image'
COMPRESSED_IMAGE_TYPE = 'sensor_msgs/msg/CompressedImage'
MASK_TYPES = (IMAGE_TYPE, 'sensor_msgs/Image')  # ROS 2 and ROS 1 names
IMAGE_TYPES = (*MASK_TYPES, COMPRESSED_IMAGE_TYPE, 'sensor_msgs/CompressedImage')
OUTPUT_TOPICS = ('embedding', 'cost', 'confidence', 'cost_overlay')  # under the namespace
STORAGES = ('mcap', 'sqlite3')
VERSIONS = (8, 9)  # rosbag2 metadata versions: 8 for Humble/Iron readers, 9 for Jazzy+


class BagError(RuntimeError):
    """A bag or topic that cannot be read as asked; says what the bag has and how to fix it."""


def typestore(version: int = 9) -> Typestore:
    """Humble's types for metadata version 8, Jazzy's for 9 (Image and CompressedImage and
    their RIHS01 hashes are the same in both)."""
    from rosbags.typesys import Stores, get_typestore

    if version not in VERSIONS:
        raise ValueError(f'rosbag2 metadata version must be one of {VERSIONS}, got {version}')
    return get_typestore(Stores.ROS2_HUMBLE if version == 8 else Stores.ROS2_JAZZY)


def storage_plugin(name: str) -> Any:
    """rosbags' StoragePlugin for 'mcap' or 'sqlite3'."""
    from rosbags.rosbag2 import StoragePlugin

    if name not in STORAGES:
        raise ValueError(f'storage must be one of {STORAGES}, got {name!r}')
    return StoragePlugin.MCAP if name == 'mcap' else StoragePlugin.SQLITE3


def reliable_qos() -> list[Any]:
    """What a default rclpy publisher offers: reliable, volatile, keep last 10."""
    from rosbags.interfaces import (
        Qos,
        QosDurability,
        QosHistory,
        QosLiveliness,
        QosReliability,
        QosTime,
    )

    unset = QosTime(0, 0)  # 0 = the rmw default (infinite)
    return [Qos(QosHistory.KEEP_LAST, 10, QosReliability.RELIABLE, QosDurability.VOLATILE, unset,
                unset, QosLiveliness.AUTOMATIC, unset, False)]


def header(ts: Typestore, stamp_ns: int, frame_id: str) -> Any:
    """A std_msgs/msg/Header of typestore `ts`."""
    sec, nanosec = divmod(stamp_ns, 1_000_000_000)
    stamp = ts.types['builtin_interfaces/msg/Time'](sec=sec, nanosec=nanosec)
    return ts.types['std_msgs/msg/Header'](stamp=stamp, frame_id=frame_id)


def serialize_image(ts: Typestore, array: np.ndarray, encoding: str, msg_header: Any
                    ) -> memoryview:
    """array (H, W[, C]) -> CDR bytes of a sensor_msgs/msg/Image."""
    fields = codec.array_to_fields(array, encoding)
    fields = fields._replace(data=np.frombuffer(fields.data, np.uint8))  # rosbags: ndarray
    msg = ts.types[IMAGE_TYPE](header=msg_header, **fields._asdict())
    return ts.serialize_cdr(msg, IMAGE_TYPE)


def serialize_encoded(ts: Typestore, encoded: Encoded, msg_header: Any) -> memoryview:
    """A rendered output (render.Encoded) -> CDR bytes of a sensor_msgs/msg/Image."""
    fmt = codec.parse_encoding(encoded.encoding)
    msg = ts.types[IMAGE_TYPE](
        header=msg_header, height=encoded.height, width=encoded.width,
        encoding=encoded.encoding, is_bigendian=0,
        step=encoded.width * fmt.channels * fmt.dtype.itemsize,
        data=np.frombuffer(encoded.data, np.uint8))  # rosbags: an ndarray (a view, no copy)
    return ts.serialize_cdr(msg, IMAGE_TYPE)


class InputBag:
    """A recorded bag opened with rosbags' AnyReader: rosbag2 (mcap or sqlite3, metadata 8 or
    9) or ROS 1 `.bag`; messages come in log-time order (the order a node received them)."""

    def __init__(self, path: Path) -> None:
        from rosbags.highlevel import AnyReader

        self.path = path
        self._reader = AnyReader([path])
        try:
            self._reader.open()
        except Exception as err:  # rosbags raises several types for unreadable bags
            raise BagError(f'cannot read {path} as a rosbag2 directory or ROS 1 bag: {err}') \
                from err

    @property
    def is_ros2(self) -> bool:
        return bool(self._reader.is2)

    def connections(self, topic: str, what: str, allowed: Sequence[str]) -> list[Any]:
        """The connections of `topic`; BagError naming the bag's topics if there are none, or
        if the topic's type is not one of `allowed`."""
        found = [c for c in self._reader.connections if c.topic == topic]
        if not found:
            available = sorted({f'{c.topic} ({c.msgtype})' for c in self._reader.connections})
            raise BagError(f'{self.path} has no {what} topic {topic!r}; it has: {available}')
        bad = [c.msgtype for c in found if c.msgtype not in allowed]
        if bad:
            raise BagError(f'{what} topic {topic!r} has type {bad[0]}, expected one of '
                           f'{list(allowed)}')
        return found

    def messages(self, connections: Sequence[Any]) -> Iterator[tuple[Any, int, bytes]]:
        """(connection, log time in ns, raw bytes) in log-time order."""
        return self._reader.messages(connections=list(connections))

    def decode(self, raw: bytes, connection: Any) -> Any | None:
        """The deserialized message, or None for a corrupt one (the caller counts it)."""
        try:
            return self._reader.deserialize(raw, connection.msgtype)
        except Exception:  # noqa: BLE001 - rosbags raises several types for corrupt data
            return None

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> InputBag:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


class OutputBag:
    """The replay output: a rosbag2 (mcap, metadata 9) with the camera copy and the pipeline's
    `<namespace>/{embedding,cost,confidence,cost_overlay}`, all stamped like the input frame."""

    def __init__(self, path: Path, camera_topic: str, camera_type: str, namespace: str) -> None:
        from rosbags.rosbag2 import Writer

        self.ts = typestore(9)
        self._writer = Writer(path, version=9, storage_plugin=storage_plugin('mcap'))
        self._writer.open()
        self._camera = self._writer.add_connection(camera_topic, camera_type, typestore=self.ts)
        self._topics = {name: self._writer.add_connection(f'{namespace}/{name}', IMAGE_TYPE,
                                                          typestore=self.ts)
                        for name in OUTPUT_TOPICS}

    def camera_image(self, rgb: np.ndarray, stamp_ns: int, frame_id: str) -> memoryview:
        """rgb (H, W, 3) uint8 as a ROS 2 rgb8 Image (for cameras from a ROS 1 bag)."""
        return serialize_image(self.ts, rgb, 'rgb8', header(self.ts, stamp_ns, frame_id))

    def write_frame(self, log_ns: int, camera_raw: bytes, stamp_ns: int, frame_id: str,
                    outputs: Mapping[str, Encoded]) -> None:
        """The camera message as recorded and the rendered outputs of one frame
        (render.OutputRenderer, OUTPUT_TOPICS)."""
        msg_header = header(self.ts, stamp_ns, frame_id)
        self._writer.write(self._camera, log_ns, camera_raw)
        for name in OUTPUT_TOPICS:
            self._writer.write(self._topics[name], log_ns,
                               serialize_encoded(self.ts, outputs[name], msg_header))

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> OutputBag:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

"""Bag reading and writing for replay (and the synthetic drive bags), through `rosbags`.

    with InputBag(Path('drive')) as bag:                   # rosbag2 (mcap/sqlite3) or ROS 1
        bag.format                                          # BagFormat: storage, version, ...
        cams = bag.connections('/camera/image_raw', 'image', IMAGE_TYPES)
        for conn, log_ns, raw in bag.messages(cams):
            msg = bag.decode(raw, conn)                     # None when undecodable
    with OutputBag(out / 'replay_bag', '/camera/image_raw', IMAGE_TYPE, '/cost_map') as bag:
        bag.write_frame(log_ns, camera_raw, result, frame_id, overlay)

A bag is named by its directory, its metadata.yaml, a storage file (.mcap, .db3) or a ROS 1
.bag (`locate`); anything else is a BagError saying what is accepted. Bags without message
definitions (sqlite3 before Jazzy, e.g. Humble's schema 3 with metadata version 5) are read with
the typestore of the bag's ROS distro (`bag_format`).

One place for the choices every writer here makes: the typestore per rosbag2 metadata version
(`typestore`), the storage plugin by name (`storage_plugin`), the QoS a default rclpy publisher
offers (`reliable_qos`; `transient_local_qos` for latched topics). rosbags (and yaml, for
metadata.yaml) are imported lazily: a robot without them still imports this; a replay without
them gets an ImportError saying what to install.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from contrast_semask_ros import codec

if TYPE_CHECKING:
    from rosbags.typesys.store import Typestore

    from contrast_semask_ros.render import Encoded
    from contrast_semask_ros.world.cloud import CostCloud

IMAGE_TYPE = 'sensor_msgs/msg/Image'
COMPRESSED_IMAGE_TYPE = 'sensor_msgs/msg/CompressedImage'
MASK_TYPES = (IMAGE_TYPE, 'sensor_msgs/Image')  # ROS 2 and ROS 1 names
OCCUPANCY_GRID_TYPE = 'nav_msgs/msg/OccupancyGrid'
OCCUPANCY_GRID_TYPES = (OCCUPANCY_GRID_TYPE, 'nav_msgs/OccupancyGrid')
POINT_CLOUD_TYPE = 'sensor_msgs/msg/PointCloud2'
IMAGE_TYPES = (*MASK_TYPES, COMPRESSED_IMAGE_TYPE, 'sensor_msgs/CompressedImage')
OUTPUT_TOPICS = ('embedding', 'cost', 'confidence', 'cost_overlay')  # under the namespace
STORAGES = ('mcap', 'sqlite3')
VERSIONS = (8, 9)  # rosbag2 metadata versions: 8 for Humble/Iron readers, 9 for Jazzy+


STORAGE_SUFFIXES = {'.mcap': 'mcap', '.db3': 'sqlite3', '.bag': 'ros1'}
ROS2_DISTROS = ('foxy', 'galactic', 'humble', 'iron', 'jazzy', 'kilted', 'lyrical')  # rosbags'
ACCEPTED = ('expected a rosbag2 directory (with metadata.yaml), its metadata.yaml, a .mcap or '
            '.db3 storage file, or a ROS 1 .bag file')


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
    return _offered_qos(transient_local=False, depth=10)


def transient_local_qos() -> list[Any]:
    """What a latched publisher (a /tf_static broadcaster, a map) offers: reliable, transient
    local, keep last 1."""
    return _offered_qos(transient_local=True, depth=1)


def _offered_qos(transient_local: bool, depth: int) -> list[Any]:
    from rosbags.interfaces import (
        Qos,
        QosDurability,
        QosHistory,
        QosLiveliness,
        QosReliability,
        QosTime,
    )

    unset = QosTime(0, 0)  # 0 = the rmw default (infinite)
    durability = QosDurability.TRANSIENT_LOCAL if transient_local else QosDurability.VOLATILE
    return [Qos(QosHistory.KEEP_LAST, depth, QosReliability.RELIABLE, durability, unset,
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


def serialize_occupancy(ts: Typestore, data: np.ndarray, resolution: float,
                        origin_xy: tuple[float, float], msg_header: Any) -> memoryview:
    """data (height, width) int8 in OccupancyGrid order (row-major, row r along +y, column c
    along +x; 0..100, -1 unknown) -> CDR bytes of a nav_msgs/msg/OccupancyGrid whose cell
    (0, 0) has its lower-left corner at origin_xy (m, in header.frame_id; identity
    orientation); map_load_time is the header's stamp."""
    t = ts.types
    height, width = data.shape
    origin = t['geometry_msgs/msg/Pose'](
        position=t['geometry_msgs/msg/Point'](x=float(origin_xy[0]), y=float(origin_xy[1]),
                                              z=0.0),
        orientation=t['geometry_msgs/msg/Quaternion'](x=0.0, y=0.0, z=0.0, w=1.0))
    info = t['nav_msgs/msg/MapMetaData'](map_load_time=msg_header.stamp,
                                         resolution=float(resolution), width=int(width),
                                         height=int(height), origin=origin)
    msg = t[OCCUPANCY_GRID_TYPE](header=msg_header, info=info,
                                 data=np.ascontiguousarray(data, np.int8).reshape(-1))
    return ts.serialize_cdr(msg, OCCUPANCY_GRID_TYPE)


def serialize_cloud(ts: Typestore, cloud: CostCloud, msg_header: Any) -> memoryview:
    """A world.cloud.CostCloud -> CDR bytes of a sensor_msgs/msg/PointCloud2 (its layout:
    x, y, z, cost, confidence float32)."""
    from contrast_semask_ros.world.cloud import cloud_fields

    t = ts.types
    msg = t[POINT_CLOUD_TYPE](header=msg_header, data=np.frombuffer(cloud.data, np.uint8),
                              **cloud_fields(cloud, t['sensor_msgs/msg/PointField']))
    return ts.serialize_cdr(msg, POINT_CLOUD_TYPE)


class BagFormat(NamedTuple):
    """How a bag was recorded, as far as reading it goes (report.json's `bag_format`)."""

    storage: str  # 'mcap', 'sqlite3' or 'ros1'
    version: int | None  # rosbag2 metadata version; None for ROS 1 or a file without metadata
    ros_distro: str | None  # as the bag names it (metadata.yaml or the sqlite3 schema table)
    typestore: str  # rosbags' types for messages without definitions in the bag
    files: list[str]  # what was read


class BagSource(NamedTuple):
    """Where a bag's messages are: what `locate` made of the path given."""

    paths: list[Path]  # what rosbags opens: storage files, a compressed bag's directory, .bag
    metadata: dict[str, Any] | None  # metadata.yaml's rosbag2_bagfile_information, if any
    storage: str  # 'mcap', 'sqlite3' or 'ros1'


def locate(path: Path) -> BagSource:
    """A rosbag2 directory, its metadata.yaml, one of its .mcap/.db3 storage files (alone or
    in a bag directory), a directory of storage files without metadata.yaml, or ROS 1 .bag
    file(s); BagError for anything else, saying what is accepted."""
    if not path.exists():
        raise BagError(f'{path} does not exist; {ACCEPTED}')
    if path.is_dir():
        if (path / 'metadata.yaml').is_file():
            return _from_metadata(path, None)
        found = sorted(p for p in path.iterdir() if p.suffix in STORAGE_SUFFIXES)
        kinds = {p.suffix for p in found}
        if len(kinds) != 1:
            has = sorted(p.name for p in path.iterdir())[:10]
            raise BagError(f'{path} is not a bag directory: no metadata.yaml and '
                           f"{'no' if not kinds else 'mixed'} .mcap, .db3 or .bag files in it "
                           f'(it has {has}); {ACCEPTED}')
        return BagSource(found, None, STORAGE_SUFFIXES[kinds.pop()])
    if path.name == 'metadata.yaml':
        return _from_metadata(path.parent, None)
    if path.suffix == '.bag':
        return BagSource([path], None, 'ros1')
    if path.suffix in STORAGE_SUFFIXES:
        if (path.parent / 'metadata.yaml').is_file():
            return _from_metadata(path.parent, path)
        return BagSource([path], None, STORAGE_SUFFIXES[path.suffix])
    if path.suffix == '.zstd' and (path.parent / 'metadata.yaml').is_file():
        return _from_metadata(path.parent, None)  # a compressed bag: read whole
    kind = f'a {path.suffix} file' if path.suffix else 'a file without an extension'
    raise BagError(f'{path} is {kind}, not a bag; {ACCEPTED}')


def _from_metadata(directory: Path, only: Path | None) -> BagSource:
    """The bag that directory/metadata.yaml describes; `only` = the one storage file asked for
    (a compressed bag is always read whole, through its directory)."""
    import yaml

    where = directory / 'metadata.yaml'
    try:
        info = yaml.safe_load(where.read_text())['rosbag2_bagfile_information']
        names = [Path(name).name for name in info['relative_file_paths']]
        storage, _ = str(info['storage_identifier']), int(info['version'])
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as err:
        raise BagError(f'cannot read {where} as rosbag2 metadata ({type(err).__name__}: '
                       f'{err}); check the file, or pass the storage file (.mcap, .db3) '
                       'itself') from err
    if storage not in STORAGES:
        raise BagError(f'{where} names storage {storage!r}; replay reads {list(STORAGES)}')
    if info.get('compression_mode'):  # rosbags decompresses through the directory reader
        return BagSource([directory], info, storage)
    if only is not None:
        return BagSource([only], info, storage)
    if missing := [name for name in names if not (directory / name).is_file()]:
        raise BagError(f'{where} lists {missing}, which {directory} does not have; copy the '
                       'whole bag directory')
    return BagSource([directory / name for name in names], info, storage)


def _sqlite_distro(path: Path) -> tuple[int | None, str | None]:
    """(schema version, ROS distro) of a rosbag2 sqlite3 file; (None, None) before schema 3
    (Foxy, Galactic) or for a file that is no such database."""
    import sqlite3

    try:
        con = sqlite3.connect(f'{path.resolve().as_uri()}?mode=ro&immutable=1', uri=True)
        try:
            row = con.execute('SELECT schema_version, ros_distro FROM schema').fetchone()
        finally:
            con.close()
    except sqlite3.Error:
        return None, None
    return (int(row[0]), str(row[1])) if row else (None, None)


def bag_format(source: BagSource) -> BagFormat:
    """The bag's format and the typestore for messages it has no definitions of (rosbag2 sqlite3
    before Jazzy stores none): the bag's own ROS distro (metadata.yaml, else the sqlite3 schema
    table), else the one its metadata version implies (<= 5 Humble, 6-7 Iron, else Jazzy)."""
    files = [str(p) for p in source.paths]
    if source.storage == 'ros1':  # ROS 1 bags carry every definition
        return BagFormat('ros1', None, None, 'ros1_noetic', files)
    metadata = source.metadata or {}
    version = int(metadata['version']) if 'version' in metadata else None
    distro = metadata.get('ros_distro')
    schema = None
    if source.storage == 'sqlite3' and source.paths[0].is_file():
        schema, from_db = _sqlite_distro(source.paths[0])
        distro = distro if distro in ROS2_DISTROS else from_db or distro
    if distro in ROS2_DISTROS:
        store = f'ros2_{distro}'
    elif version is not None:
        store = 'ros2_humble' if version <= 5 else 'ros2_iron' if version <= 7 else 'ros2_jazzy'
    else:
        store = 'ros2_humble' if schema is None or schema <= 3 else 'ros2_jazzy'
    return BagFormat(source.storage, version, distro, store, files)


class InputBag:
    """A recorded bag read with rosbags' AnyReader (see `locate` for the paths it takes):
    rosbag2 (mcap or sqlite3, metadata 5 of Humble to 9 of Jazzy) or ROS 1 `.bag`;
    messages come in log-time order (the order a node received them).

    A rosbag2 directory is read through its storage files, whose own topic records (QoS
    included) are what their messages refer to: a metadata.yaml rewritten by another tool then
    still reads every message (rosbags' directory reader drops those whose QoS differs)."""

    def __init__(self, path: Path) -> None:
        rosbags = _require_rosbags()
        self.path = path
        source = locate(path)
        self.format = bag_format(source)
        default = (None if source.storage == 'ros1' else
                   rosbags.get_typestore(rosbags.Stores(self.format.typestore)))
        try:
            self._reader = rosbags.AnyReader(source.paths, default_typestore=default)
            self._reader.open()
        except Exception as err:  # rosbags raises several types for unreadable bags
            raise BagError(f'cannot read {path} as a rosbag2 bag or ROS 1 bag: '
                           f"{type(err).__name__}: {err}; {ACCEPTED}") from err

    @property
    def is_ros2(self) -> bool:
        return bool(self._reader.is2)

    def topics(self) -> str:
        """The bag's topics with types and message counts, for error messages."""
        counts: dict[str, int] = {}
        types: dict[str, set[str]] = {}
        for c in self._reader.connections:
            counts[c.topic] = counts.get(c.topic, 0) + c.msgcount
            types.setdefault(c.topic, set()).add(c.msgtype)
        return ', '.join(f"{t} ({' or '.join(sorted(types[t]))}, {counts[t]} messages)"
                         for t in sorted(counts)) or 'no topics'

    def connections(self, topic: str, what: str, allowed: Sequence[str]) -> list[Any]:
        """The connections of `topic`; BagError naming the bag's topics if there are none, or
        if the topic's type is not one of `allowed`."""
        found = [c for c in self._reader.connections if c.topic == topic]
        if not found:
            raise BagError(f'{self.path} has no {what} topic {topic!r}; it has: '
                           f'{self.topics()}')
        bad = [c.msgtype for c in found if c.msgtype not in allowed]
        if bad:
            raise BagError(f'{what} topic {topic!r} has type {bad[0]}, expected one of '
                           f'{list(allowed)}; the bag has: {self.topics()}')
        return found

    def optional_connections(self, topic: str) -> list[Any]:
        """The connections of `topic`, [] when the bag has none."""
        return [c for c in self._reader.connections if c.topic == topic]

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


class _Rosbags(NamedTuple):
    AnyReader: Any
    Stores: Any
    get_typestore: Any


def _require_rosbags() -> _Rosbags:
    """rosbags' reader, or ImportError saying how to install it (an environment problem)."""
    try:
        from rosbags.highlevel import AnyReader
        from rosbags.typesys import Stores, get_typestore
    except ImportError as err:
        raise ImportError(f'replay reads and writes bags with rosbags, which cannot be imported '
                          f'({err}): pip install rosbags (requirements/dev.txt)') from err
    return _Rosbags(AnyReader, Stores, get_typestore)


class OutputBag:
    """The replay output: a rosbag2 (mcap, metadata 9) with the camera copy and the pipeline's
    `<namespace>/{embedding,cost,confidence,cost_overlay}`, all stamped like the input frame;
    topics added on first use: `patch_cost` masks, the `cost_grid` (OccupancyGrid) and the
    `cost_cloud` (PointCloud2)."""

    def __init__(self, path: Path, camera_topic: str, camera_type: str, namespace: str) -> None:
        _require_rosbags()
        from rosbags.rosbag2 import Writer

        self.ts = typestore(9)
        self._writer = Writer(path, version=9, storage_plugin=storage_plugin('mcap'))
        self._writer.open()
        self._camera = self._writer.add_connection(camera_topic, camera_type, typestore=self.ts)
        self._namespace = namespace
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

    def write_mask(self, log_ns: int, name: str, mask: np.ndarray, stamp_ns: int,
                   frame_id: str) -> None:
        """A 32FC1 mask (H, W) on `<namespace>/<name>` (the topic is added on first use)."""
        self._writer.write(self._topic(name, IMAGE_TYPE), log_ns, serialize_image(
            self.ts, np.ascontiguousarray(mask, np.float32), '32FC1',
            header(self.ts, stamp_ns, frame_id)))

    def write_grid(self, log_ns: int, name: str, data: np.ndarray, resolution: float,
                   origin_xy: tuple[float, float], stamp_ns: int, frame_id: str) -> None:
        """An OccupancyGrid (serialize_occupancy) on `<namespace>/<name>`."""
        self._writer.write(self._topic(name, OCCUPANCY_GRID_TYPE), log_ns, serialize_occupancy(
            self.ts, data, resolution, origin_xy, header(self.ts, stamp_ns, frame_id)))

    def write_cloud(self, log_ns: int, name: str, cloud: CostCloud, stamp_ns: int,
                    frame_id: str) -> None:
        """A cost cloud as a PointCloud2 (serialize_cloud) on `<namespace>/<name>`."""
        self._writer.write(self._topic(name, POINT_CLOUD_TYPE), log_ns, serialize_cloud(
            self.ts, cloud, header(self.ts, stamp_ns, frame_id)))

    def _topic(self, name: str, msgtype: str) -> Any:
        """The connection of `<namespace>/<name>`, added on first use."""
        if name not in self._topics:
            self._topics[name] = self._writer.add_connection(f'{self._namespace}/{name}',
                                                             msgtype, typestore=self.ts)
        return self._topics[name]

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> OutputBag:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

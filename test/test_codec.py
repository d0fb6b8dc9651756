"""Image codec: round trips through the real sensor_msgs classes and rclpy serialization (marker
`ros`; no rclpy.init, no node, no DDS), row padding and big-endian data, and rosbags-image as an
independent decoder of what we encode (and rosbags-built messages decoded by us)."""

from __future__ import annotations

import array
import types
from typing import Any

import numpy as np
import pytest

from contrast_semask_ros import codec
from contrast_semask_ros.codec import CodecError

array_type = array.array  # the rclpy `data` container (the name `array` is a local below)
ROS_REASON = 'needs the ROS 2 Jazzy wheels: pip install -r requirements/ros-jazzy.txt'
ROSBAGS_REASON = 'needs rosbags and rosbags-image[opencv-headless] (requirements/dev.txt)'

ENCODINGS = [
    'rgb8', 'bgr8', 'rgba8', 'bgra8', 'rgb16', 'bgr16', 'rgba16', 'bgra16', 'mono8', 'mono16',
    '8UC1', '8UC3', '8UC512', '8SC1', '8SC2', '16UC1', '16UC3', '16SC1', '32SC1', '32SC4',
    '32FC1', '32FC3', '32FC64', '64FC1', '64FC2',
]


def _sample(encoding: str, height: int = 5, width: int = 7, seed: int = 0) -> np.ndarray:
    """Random H, W[, C] array in the encoding's dtype, covering the whole value range."""
    fmt = codec.parse_encoding(encoding)
    rng = np.random.default_rng(seed)
    shape = (height, width) if fmt.channels == 1 else (height, width, fmt.channels)
    if fmt.dtype.kind == 'f':
        return (rng.standard_normal(shape) * 1e3).astype(fmt.dtype)
    info = np.iinfo(fmt.dtype)
    return rng.integers(info.min, info.max, shape, dtype=fmt.dtype, endpoint=True)


def _rows(array: np.ndarray, pad: int, bigendian: bool) -> tuple[int, bytes]:
    """(step, data) for `array` with `pad` 0xEE bytes after every row, in the given byte order."""
    order = '>' if bigendian else '<'
    pixels = array.astype(array.dtype.newbyteorder(order))
    rows = [pixels[r].tobytes() + b'\xee' * pad for r in range(array.shape[0])]
    return int(np.prod(array.shape[1:])) * array.itemsize + pad, b''.join(rows)


def _plain(array: np.ndarray, encoding: str, pad: int = 0, bigendian: bool = False,
           container: type = bytes) -> types.SimpleNamespace:
    """A duck-typed Image with the given padding, byte order and `data` container."""
    step, data = _rows(array, pad, bigendian)
    if container is array_type:
        data = array_type('B', data)
    elif container is np.ndarray:
        data = np.frombuffer(data, np.uint8).copy()
    return types.SimpleNamespace(height=array.shape[0], width=array.shape[1], encoding=encoding,
                                 is_bigendian=int(bigendian), step=step, data=data)


@pytest.fixture(scope='module')
def ros() -> types.SimpleNamespace:
    msg = pytest.importorskip('sensor_msgs.msg', reason=ROS_REASON)
    std_msgs = pytest.importorskip('std_msgs.msg', reason=ROS_REASON)
    serialization = pytest.importorskip('rclpy.serialization', reason=ROS_REASON)
    return types.SimpleNamespace(Image=msg.Image, CompressedImage=msg.CompressedImage,
                                 Header=std_msgs.Header, serialize=serialization.serialize_message,
                                 deserialize=serialization.deserialize_message)


@pytest.fixture(scope='module')
def bags() -> types.SimpleNamespace:
    typesys = pytest.importorskip('rosbags.typesys', reason=ROSBAGS_REASON)
    image = pytest.importorskip('rosbags.image', reason=ROSBAGS_REASON)
    ts = typesys.get_typestore(typesys.Stores.ROS2_JAZZY)
    Time = ts.types['builtin_interfaces/msg/Time']
    Header = ts.types['std_msgs/msg/Header']
    return types.SimpleNamespace(
        ts=ts, Image=ts.types['sensor_msgs/msg/Image'],
        CompressedImage=ts.types['sensor_msgs/msg/CompressedImage'],
        header=lambda: Header(stamp=Time(sec=12, nanosec=345), frame_id='camera'),
        to_cv=image.message_to_cvimage, compressed_to_cv=image.compressed_image_to_cvimage,
    )


def _bag_image(bags: types.SimpleNamespace, fields: codec.ImageFields) -> Any:
    """A rosbags typestore Image from ImageFields (its data must be an np.uint8 array)."""
    return bags.Image(header=bags.header(),
                      **fields._replace(data=np.frombuffer(fields.data, np.uint8))._asdict())


# ---- encodings --------------------------------------------------------------------------------


@pytest.mark.parametrize(('encoding', 'dtype', 'channels'), [
    ('rgb8', np.uint8, 3), ('bgra8', np.uint8, 4), ('mono8', np.uint8, 1),
    ('mono16', np.uint16, 1), ('rgb16', np.uint16, 3), ('8UC1', np.uint8, 1),
    ('8SC2', np.int8, 2), ('16UC3', np.uint16, 3), ('16SC1', np.int16, 1),
    ('32SC4', np.int32, 4), ('32FC1', np.float32, 1), ('32FC64', np.float32, 64),
    ('64FC2', np.float64, 2), ('8UC512', np.uint8, 512),
])
def test_parse_encoding(encoding: str, dtype: type, channels: int) -> None:
    assert codec.parse_encoding(encoding) == (np.dtype(dtype), channels)
    if encoding[0].isdigit():
        assert codec.generic_encoding(dtype, channels) == encoding


@pytest.mark.parametrize('encoding', [
    '', 'RGB8', 'rgb', 'rgb8 ', 'yuv422', 'bayer_rggb8', '32F', '32FC', '32UC1', '16FC1', 'FC1',
])
def test_parse_encoding_rejects_unknown(encoding: str) -> None:
    with pytest.raises(CodecError, match=r'unknown image encoding .*supported: rgb8.*32FC64'):
        codec.parse_encoding(encoding)


@pytest.mark.parametrize('encoding', ['32FC0', '8UC513'])
def test_parse_encoding_rejects_channel_count(encoding: str) -> None:
    with pytest.raises(CodecError, match=r'channel count must be 1\.\.512'):
        codec.parse_encoding(encoding)


def test_generic_encoding_rejects_unknown_dtype() -> None:
    with pytest.raises(CodecError, match='no ROS image encoding holds bool'):
        codec.generic_encoding(np.bool_, 1)


# ---- real sensor_msgs classes and rclpy serialization -----------------------------------------


@pytest.mark.ros
@pytest.mark.parametrize('encoding', ENCODINGS)
def test_round_trip_through_rclpy_image(ros: types.SimpleNamespace, encoding: str) -> None:
    import rclpy

    pixels = _sample(encoding)
    msg = codec.fill_image(ros.Image(), pixels, encoding)
    fmt = codec.parse_encoding(encoding)
    assert (msg.height, msg.width, msg.encoding, msg.is_bigendian) == (5, 7, encoding, 0)
    assert msg.step == 7 * fmt.channels * fmt.dtype.itemsize
    assert isinstance(msg.data, array.array) and len(msg.data) == msg.step * msg.height
    decoded = codec.image_to_array(msg)
    assert decoded.dtype == fmt.dtype and decoded.shape == pixels.shape
    np.testing.assert_array_equal(decoded, pixels)

    back = ros.deserialize(ros.serialize(msg), ros.Image)
    assert isinstance(back.data, array.array)  # what a subscriber receives
    np.testing.assert_array_equal(codec.image_to_array(back), pixels)
    assert not rclpy.ok()  # serialization needed no rclpy.init() (and so no DDS)


@pytest.mark.ros
def test_fill_image_on_checked_rclpy_message(ros: types.SimpleNamespace) -> None:
    """With check_fields (ROS_PYTHON_CHECK_FIELDS=1) every setter validates its value: ints must
    be Python ints, and `data` must be array.array('B') to avoid an element-wise check."""
    embedding = np.random.default_rng(1).standard_normal((64, 3, 4)).astype(np.float32)
    header = ros.Header(frame_id='camera')
    header.stamp.sec, header.stamp.nanosec = 7, 8
    msg = ros.Image(check_fields=True)
    assert codec.fill_image(msg, codec.embedding_to_hwc(embedding), '32FC64', header) is msg
    assert type(msg.data) is array.array and msg.data.typecode == 'B'
    assert msg.header == header and (msg.height, msg.width, msg.step) == (3, 4, 4 * 64 * 4)
    back = ros.deserialize(ros.serialize(msg), ros.Image)
    assert back.header.frame_id == 'camera' and back.header.stamp.nanosec == 8
    np.testing.assert_array_equal(codec.hwc_to_embedding(codec.image_to_array(back)), embedding)


@pytest.mark.ros
@pytest.mark.parametrize('bigendian', [False, True])
def test_padded_rclpy_image_after_serialization(ros: types.SimpleNamespace,
                                                bigendian: bool) -> None:
    pixels = _sample('32FC3', height=4, width=5)
    step, data = _rows(pixels, pad=6, bigendian=bigendian)
    msg = ros.Image(height=4, width=5, encoding='32FC3', is_bigendian=int(bigendian), step=step,
                    data=data)
    back = ros.deserialize(ros.serialize(msg), ros.Image)
    np.testing.assert_array_equal(codec.image_to_array(back), pixels)


@pytest.mark.ros
def test_rgb_and_compressed_through_rclpy(ros: types.SimpleNamespace) -> None:
    rgb = _sample('rgb8', height=6, width=9)
    msg = codec.fill_image(ros.Image(), rgb[..., ::-1], 'bgr8')
    np.testing.assert_array_equal(codec.image_to_rgb(ros.deserialize(ros.serialize(msg),
                                                                     ros.Image)), rgb)
    compressed = codec.fill_compressed(ros.CompressedImage(), rgb, 'png')
    assert compressed.format == 'rgb8; png compressed bgr8'
    assert isinstance(compressed.data, array.array)
    back = ros.deserialize(ros.serialize(compressed), ros.CompressedImage)
    np.testing.assert_array_equal(codec.compressed_to_rgb(back), rgb)


# ---- padding, byte order, containers (no ROS needed) ------------------------------------------


@pytest.mark.parametrize('encoding', ['mono8', 'rgb8', '16UC1', '32FC3', '64FC1', '32FC64'])
@pytest.mark.parametrize('pad', [0, 3, 8])
@pytest.mark.parametrize('bigendian', [False, True])
def test_step_padding_and_byte_order(encoding: str, pad: int, bigendian: bool) -> None:
    pixels = _sample(encoding, height=4, width=5)
    decoded = codec.image_to_array(_plain(pixels, encoding, pad, bigendian))
    assert decoded.dtype == pixels.dtype and decoded.dtype.isnative
    np.testing.assert_array_equal(decoded, pixels)


@pytest.mark.parametrize('container', [bytes, array_type, np.ndarray, list])
def test_data_containers_and_zero_copy(container: type) -> None:
    pixels = _sample('32FC3')
    msg = _plain(pixels, '32FC3', container=container if container is not list else bytes)
    if container is list:
        msg.data = list(msg.data)
    decoded = codec.image_to_array(msg)
    np.testing.assert_array_equal(decoded, pixels)
    if container is not list:  # zero-copy view, read-only so it cannot alter the message
        assert np.shares_memory(decoded, np.frombuffer(msg.data, np.uint8))
        assert not decoded.flags.writeable


def test_big_endian_and_misaligned_data_are_copied() -> None:
    pixels = _sample('32FC1')
    swapped = codec.image_to_array(_plain(pixels, '32FC1', bigendian=True, container=array_type))
    misaligned = codec.image_to_array(_plain(pixels, '32FC1', pad=1, container=array_type))
    for decoded in (swapped, misaligned):
        np.testing.assert_array_equal(decoded, pixels)
        assert decoded.flags.c_contiguous and decoded.flags.aligned and decoded.flags.writeable


def test_trailing_extra_data_is_ignored() -> None:
    pixels = _sample('mono16')
    msg = _plain(pixels, 'mono16')
    msg.data += b'\x00' * 5
    np.testing.assert_array_equal(codec.image_to_array(msg), pixels)


@pytest.mark.parametrize(('encoding', 'to_rgb'), [
    ('rgb8', lambda p: p), ('bgr8', lambda p: p[..., ::-1]),
    ('rgba8', lambda p: p[..., :3]), ('bgra8', lambda p: p[..., 2::-1]),
    ('mono8', lambda p: np.repeat(p[..., None], 3, axis=2)),
])
@pytest.mark.parametrize('pad', [0, 5])
def test_image_to_rgb(encoding: str, to_rgb: Any, pad: int) -> None:
    pixels = _sample(encoding)
    rgb = codec.image_to_rgb(_plain(pixels, encoding, pad))
    assert rgb.dtype == np.uint8 and rgb.shape == (5, 7, 3) and rgb.flags.c_contiguous
    np.testing.assert_array_equal(rgb, to_rgb(pixels))


@pytest.mark.parametrize('shape', [(0, 4), (3, 0), (0, 0)])
def test_image_to_rgb_rejects_an_empty_image(shape: tuple[int, int]) -> None:
    # it used to pass as (0, 4, 3) and fail later, inside the pipeline's resize
    with pytest.raises(CodecError, match=rf"Image \(encoding 'mono8'\) is {shape[1]}x{shape[0]}: "
                                         'it has no pixels'):
        codec.image_to_rgb(_plain(np.zeros(shape, np.uint8), 'mono8'))


def test_embedding_layout_round_trip() -> None:
    embedding = np.random.default_rng(2).standard_normal((1, 16, 3, 5)).astype(np.float32)
    hwc = codec.embedding_to_hwc(embedding)
    assert hwc.shape == (3, 5, 16) and hwc.flags.c_contiguous
    fields = codec.array_to_fields(hwc, '32FC16')
    assert fields.step == 5 * 16 * 4 and len(fields.data) == 3 * fields.step
    decoded = codec.image_to_array(types.SimpleNamespace(**fields._asdict()))
    chw = codec.hwc_to_embedding(decoded)
    assert chw.shape == (16, 3, 5) and chw.flags.c_contiguous
    np.testing.assert_array_equal(chw, embedding[0])
    np.testing.assert_array_equal(codec.hwc_to_embedding(hwc[..., 0]), embedding[0, :1])


def test_fill_image_on_a_plain_object_assigns_bytes() -> None:
    msg = codec.fill_image(types.SimpleNamespace(data=None, header=None),
                           _sample('mono8'), 'mono8', header='h')
    assert type(msg.data) is bytes and msg.header == 'h'
    fields = codec.array_to_fields(_sample('mono8'), 'mono8')
    assert fields == (5, 7, 'mono8', 0, 7, msg.data)


def test_array_to_fields_writes_little_endian() -> None:
    pixels = _sample('16UC1').astype('>u2')
    fields = codec.array_to_fields(pixels, '16UC1')
    assert fields.is_bigendian == 0 and fields.data == pixels.astype('<u2').tobytes()
    assert codec.array_to_fields(pixels[:, :, None], '16UC1').data == fields.data


# ---- errors -----------------------------------------------------------------------------------


def test_errors_on_decode() -> None:
    pixels = _sample('32FC3')
    msg = _plain(pixels, '32FC3')
    msg.encoding = '32FC'
    with pytest.raises(CodecError, match="unknown image encoding '32FC'; supported"):
        codec.image_to_array(msg)
    msg = _plain(pixels, '32FC3')
    msg.data = msg.data[:-1]
    with pytest.raises(CodecError, match=r'419 bytes, expected step \* height = 84 \* 5 = 420'):
        codec.image_to_array(msg)
    msg = _plain(pixels, '32FC3')
    msg.step = 80
    with pytest.raises(CodecError, match=r'step 80 is smaller than one row .* = 84 bytes'):
        codec.image_to_array(msg)
    with pytest.raises(CodecError, match=r"encoding '32FC3'; supported: rgb8, bgr8, rgba8, "
                                         r'bgra8, mono8, rgb16, .*, nv12, nv21\. Publish'):
        codec.image_to_rgb(_plain(pixels, '32FC3'))


@pytest.mark.parametrize(('array', 'encoding', 'message'), [
    (np.zeros((2, 3)), '32FC1', r'needs a float32 array .* got float64 \(2, 3\); cast it with '
                                r'\.astype\(np\.float32\)'),
    (np.zeros((2, 3, 64), np.float32), '32FC1',
     r"got float32 \(2, 3, 64\); use an encoding with the array's channel count, e\.g\. '32FC64'"),
    (np.zeros((2, 3), np.float32), '32FC64', r'shape \(H, W, 64\), got float32 \(2, 3\)'),
    (np.zeros((2, 3, 3), np.uint16), 'rgb8', r'needs a uint8 .* cast it with \.astype'),
    (np.zeros((2, 3), bool), 'mono8', r'got bool \(2, 3\)'),
    (np.zeros(6, np.uint8), 'mono8', r'got uint8 \(6,\)'),
    (np.zeros((2, 3), np.uint8), 'rgb9', 'unknown image encoding'),
])
def test_errors_on_encode(array: np.ndarray, encoding: str, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        codec.array_to_fields(array, encoding)
    with pytest.raises(CodecError, match=message):
        codec.fill_image(types.SimpleNamespace(), array, encoding)


@pytest.mark.parametrize(('data', 'fmt', 'message'), [
    (b'not an image at all', 'jpeg', r"cannot decode CompressedImage \(format 'jpeg', 19 bytes"),
    (b'\x89PNG\r\n\x1a\n' + bytes(40), 'png', 'cannot decode CompressedImage'),
    (b'', 'rgb8; jpeg compressed bgr8', 'has no data'),
    (b'\x00' * 12, '16UC1; compressedDepth png', 'compressedDepth'),
])
def test_errors_on_compressed(data: bytes, fmt: str, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        codec.compressed_to_rgb(types.SimpleNamespace(format=fmt, data=data))


def test_errors_on_compress_and_embedding() -> None:
    with pytest.raises(CodecError, match=r'uint8 \(H, W, 3\) RGB image, got uint8 \(4, 4\)'):
        codec.rgb_to_compressed_bytes(np.zeros((4, 4), np.uint8))
    with pytest.raises(CodecError, match="unknown compressed format 'webp'; use 'jpeg' or 'png'"):
        codec.rgb_to_compressed_bytes(np.zeros((4, 4, 3), np.uint8), 'webp')
    with pytest.raises(CodecError, match='quality must be 1..100'):
        codec.rgb_to_compressed_bytes(np.zeros((4, 4, 3), np.uint8), quality=0)
    with pytest.raises(CodecError, match=r'float32 \(D, h, w\) .* got float64'):
        codec.embedding_to_hwc(np.zeros((8, 2, 2)))
    with pytest.raises(CodecError, match=r'\(h, w, D\) or \(h, w\) array'):
        codec.hwc_to_embedding(np.zeros(3, np.float32))


# ---- rosbags-image as an independent oracle ---------------------------------------------------


@pytest.mark.parametrize('encoding', ENCODINGS)
def test_rosbags_image_decodes_our_fields(bags: types.SimpleNamespace, encoding: str) -> None:
    pixels = _sample(encoding)
    msg = _bag_image(bags, codec.array_to_fields(pixels, encoding))
    np.testing.assert_array_equal(bags.to_cv(msg), pixels)
    # and a rosbags-serialized message decoded by us (data is a view into the CDR buffer)
    raw = bags.ts.serialize_cdr(msg, 'sensor_msgs/msg/Image')
    back = bags.ts.deserialize_cdr(raw, 'sensor_msgs/msg/Image')
    np.testing.assert_array_equal(codec.image_to_array(back), pixels)


@pytest.mark.parametrize('encoding', ['mono16', '16SC1', '32FC1', '32FC64', '64FC2'])
def test_big_endian_agrees_with_rosbags_image(bags: types.SimpleNamespace, encoding: str) -> None:
    pixels = _sample(encoding)
    fields = codec.array_to_fields(pixels, encoding)
    big = pixels.astype(pixels.dtype.newbyteorder('>')).tobytes()
    msg = _bag_image(bags, fields._replace(is_bigendian=1, data=big))
    np.testing.assert_array_equal(codec.image_to_array(msg), bags.to_cv(msg))
    np.testing.assert_array_equal(codec.image_to_array(msg), pixels)


def test_fill_image_on_a_rosbags_message(bags: types.SimpleNamespace) -> None:
    pixels = _sample('32FC64', height=3, width=4)
    msg = _bag_image(bags, codec.array_to_fields(_sample('mono8'), 'mono8'))
    assert codec.fill_image(msg, pixels, '32FC64') is msg
    assert isinstance(msg.data, np.ndarray) and msg.data.dtype == np.uint8  # rosbags needs this
    raw = bags.ts.serialize_cdr(msg, 'sensor_msgs/msg/Image')
    back = bags.ts.deserialize_cdr(raw, 'sensor_msgs/msg/Image')
    np.testing.assert_array_equal(bags.to_cv(back), pixels)


@pytest.mark.ros
@pytest.mark.parametrize('encoding', ['bgr8', '16UC1', '32FC1', '32FC64'])
def test_rosbags_and_rclpy_serializations_interoperate(ros: types.SimpleNamespace,
                                                       bags: types.SimpleNamespace,
                                                       encoding: str) -> None:
    pixels = _sample(encoding)
    bag_msg = _bag_image(bags, codec.array_to_fields(pixels, encoding))
    bag_raw = bytes(bags.ts.serialize_cdr(bag_msg, 'sensor_msgs/msg/Image'))
    received = ros.deserialize(bag_raw, ros.Image)
    np.testing.assert_array_equal(codec.image_to_array(received), pixels)
    ros_raw = ros.serialize(codec.fill_image(ros.Image(), pixels, encoding))
    np.testing.assert_array_equal(
        bags.to_cv(bags.ts.deserialize_cdr(ros_raw, 'sensor_msgs/msg/Image')), pixels)


def _smooth_rgb(height: int = 24, width: int = 32) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // (width - 1), y * 255 // (height - 1), (x + y) * 4 % 256],
                    axis=2).astype(np.uint8)


@pytest.mark.parametrize('fmt', ['png', 'jpeg'])
def test_compressed_agrees_with_rosbags_image(bags: types.SimpleNamespace, fmt: str) -> None:
    rgb = _smooth_rgb()
    format_string, payload = codec.rgb_to_compressed_bytes(rgb, fmt, quality=95)
    assert format_string == f'rgb8; {fmt} compressed bgr8'
    msg = bags.CompressedImage(header=bags.header(), format=format_string,
                               data=np.frombuffer(payload, np.uint8))
    ours = codec.compressed_to_rgb(msg)
    assert ours.dtype == np.uint8 and ours.shape == rgb.shape
    np.testing.assert_array_equal(ours, bags.compressed_to_cv(msg, 'rgb8'))
    if fmt == 'png':
        np.testing.assert_array_equal(ours, rgb)
    else:
        assert np.abs(ours.astype(int) - rgb).mean() < 3


def test_compressed_grayscale_png(bags: types.SimpleNamespace) -> None:
    import cv2

    gray = _smooth_rgb()[..., 0]
    ok, png = cv2.imencode('.png', gray)
    assert ok
    msg = bags.CompressedImage(header=bags.header(), format='mono8; png compressed mono8',
                               data=png.reshape(-1))
    reference = bags.compressed_to_cv(msg)  # IMREAD_ANYCOLOR: (H, W) for a grayscale png
    assert reference.shape == gray.shape
    np.testing.assert_array_equal(codec.compressed_to_rgb(msg), np.repeat(reference[..., None],
                                                                          3, axis=2))

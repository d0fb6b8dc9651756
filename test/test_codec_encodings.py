"""Camera encodings (issue 13): image_to_rgb / decode_rgb(msg, 'raw') on real sensor_msgs Images
in YUV 4:2:2 and 4:2:0, Bayer (8 and 16 bit), 16-bit colour and mono, and the generic 8UC1, 8UC3
and 16UC1, checked against OpenCV conversions applied here (independently of the codec) and
against images built by hand (Bayer pattern names, YUV byte order, 16-bit scaling)."""

from __future__ import annotations

import types
from typing import Any

import numpy as np
import pytest

from contrast_semask_ros import codec
from contrast_semask_ros.codec import CodecError

cv2 = pytest.importorskip('cv2')

ROS_REASON = 'needs the ROS 2 Jazzy wheels: pip install -r requirements/ros-jazzy.txt'
BAYER = ['rggb', 'bggr', 'gbrg', 'grbg']


@pytest.fixture(scope='module')
def ros() -> types.SimpleNamespace:
    msg = pytest.importorskip('sensor_msgs.msg', reason=ROS_REASON)
    serialization = pytest.importorskip('rclpy.serialization', reason=ROS_REASON)
    return types.SimpleNamespace(Image=msg.Image, serialize=serialization.serialize_message,
                                 deserialize=serialization.deserialize_message)


def _random(shape: tuple[int, ...], dtype: type, seed: int = 0) -> np.ndarray:
    info = np.iinfo(dtype)
    return np.random.default_rng(seed).integers(info.min, info.max, shape, dtype=dtype,
                                                endpoint=True)


def _image(ros: types.SimpleNamespace, rows: np.ndarray, encoding: str, width: int,
           height: int, pad: int = 0, bigendian: bool = False) -> Any:
    """A real sensor_msgs/Image whose data are `rows` (R, ...) with `pad` bytes after each row,
    serialized and deserialized as a subscriber gets it."""
    order = '>' if bigendian else '<'
    data = rows.astype(rows.dtype.newbyteorder(order))
    step = data[0].nbytes + pad
    payload = b''.join(row.tobytes() + b'\xee' * pad for row in data)
    msg = ros.Image(height=height, width=width, encoding=encoding, is_bigendian=int(bigendian),
                    step=step, data=payload)
    return ros.deserialize(ros.serialize(msg), ros.Image)


def _to8(values: np.ndarray) -> np.ndarray:
    """cv_bridge's 16 -> 8 bit scaling, computed independently: round(v * 255 / 65535)."""
    return np.round(values.astype(np.float64) * 255 / 65535).astype(np.uint8)


def _demosaic(code: int) -> Any:
    """Reference Bayer conversion: OpenCV's demosaicing at the source depth (cv_bridge's order),
    then the 16 -> 8 bit scaling."""
    def convert(mosaic: np.ndarray) -> np.ndarray:
        rgb = cv2.cvtColor(mosaic, code)
        return _to8(rgb) if rgb.dtype == np.uint16 else rgb

    return convert


# encoding -> (dtype, channels, reference conversion of the (H, W[, C]) pixels to RGB)
PACKED: dict[str, tuple[type, int, Any]] = {
    'rgb16': (np.uint16, 3, lambda p: _to8(p)),
    'bgr16': (np.uint16, 3, lambda p: _to8(p[..., ::-1])),
    'rgba16': (np.uint16, 4, lambda p: _to8(p[..., :3])),
    'bgra16': (np.uint16, 4, lambda p: _to8(p[..., 2::-1])),
    'mono16': (np.uint16, 1, lambda p: _to8(np.repeat(p[..., None], 3, axis=2))),
    '8UC1': (np.uint8, 1, lambda p: np.repeat(p[..., None], 3, axis=2)),
    '8UC3': (np.uint8, 3, lambda p: p[..., ::-1]),
    '16UC1': (np.uint16, 1, lambda p: _to8(np.repeat(p[..., None], 3, axis=2))),
    'yuv422': (np.uint8, 2, lambda p: cv2.cvtColor(p, cv2.COLOR_YUV2RGB_UYVY)),
    'uyvy': (np.uint8, 2, lambda p: cv2.cvtColor(p, cv2.COLOR_YUV2RGB_UYVY)),
    'yuv422_yuy2': (np.uint8, 2, lambda p: cv2.cvtColor(p, cv2.COLOR_YUV2RGB_YUY2)),
    'yuyv': (np.uint8, 2, lambda p: cv2.cvtColor(p, cv2.COLOR_YUV2RGB_YUY2)),
    # ROS names the 2x2 block at (0, 0), OpenCV the one at (1, 1) (checked by construction below)
    **{f'bayer_{pattern}{bits}': (dtype, 1, _demosaic(code))
       for pattern, code in zip(BAYER, [cv2.COLOR_BayerBG2RGB, cv2.COLOR_BayerRG2RGB,
                                        cv2.COLOR_BayerGR2RGB, cv2.COLOR_BayerGB2RGB],
                                strict=True)
       for bits, dtype in (('8', np.uint8), ('16', np.uint16))},
}


@pytest.mark.ros
@pytest.mark.parametrize('encoding', list(PACKED))
@pytest.mark.parametrize(('pad', 'bigendian'), [(0, False), (6, False), (3, True)])
def test_packed_encodings_match_reference(ros: types.SimpleNamespace, encoding: str, pad: int,
                                          bigendian: bool) -> None:
    dtype, channels, reference = PACKED[encoding]
    shape = (6, 8) if channels == 1 else (6, 8, channels)
    pixels = _random(shape, dtype, seed=len(encoding))
    msg = _image(ros, pixels, encoding, 8, 6, pad, bigendian)
    rgb = codec.image_to_rgb(msg)
    assert rgb.dtype == np.uint8 and rgb.shape == (6, 8, 3) and rgb.flags.c_contiguous
    np.testing.assert_array_equal(rgb, reference(pixels))
    np.testing.assert_array_equal(codec.decode_rgb(msg, 'raw'), rgb)


@pytest.mark.ros
@pytest.mark.parametrize('encoding', ['nv12', 'nv21'])
@pytest.mark.parametrize('pad', [0, 5])
def test_yuv420_matches_opencv(ros: types.SimpleNamespace, encoding: str, pad: int) -> None:
    y = _random((6, 8), np.uint8, seed=1)
    chroma = _random((3, 8), np.uint8, seed=2)  # interleaved U, V (nv12) or V, U (nv21)
    rows = np.concatenate([y, chroma])  # 9 rows of `step` bytes: Y rows, then chroma rows
    msg = _image(ros, rows, encoding, 8, 6, pad)
    code = cv2.COLOR_YUV2RGB_NV12 if encoding == 'nv12' else cv2.COLOR_YUV2RGB_NV21
    rgb = codec.decode_rgb(msg, 'raw')
    assert rgb.shape == (6, 8, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb, cv2.cvtColor(rows, code))


@pytest.mark.parametrize('pattern', BAYER)
@pytest.mark.parametrize('bits', [8, 16])
def test_bayer_pattern_names_by_construction(pattern: str, bits: int) -> None:
    """A flat colour sampled through the ROS-named colour filter (bayer_rggb: R at (0, 0), G at
    (0, 1), G at (1, 0), B at (1, 1)) must demosaic back to that colour."""
    colour = {'r': 200, 'g': 100, 'b': 50}
    scale = 257 if bits == 16 else 1  # 200 * 257 -> 200 after the 16 -> 8 bit scaling
    mosaic = np.zeros((6, 8), np.uint16 if bits == 16 else np.uint8)
    for (row, col), channel in zip([(0, 0), (0, 1), (1, 0), (1, 1)], pattern, strict=True):
        mosaic[row::2, col::2] = colour[channel] * scale
    msg = types.SimpleNamespace(height=6, width=8, encoding=f'bayer_{pattern}{bits}',
                                is_bigendian=0, step=8 * mosaic.itemsize, data=mosaic.tobytes())
    rgb = codec.image_to_rgb(msg)
    np.testing.assert_array_equal(rgb, np.broadcast_to(np.uint8([200, 100, 50]), (6, 8, 3)))


# BT.601 video range (what OpenCV's and cv_bridge's YUV conversions use): red and blue
RED_YUV, BLUE_YUV = (81, 90, 240), (41, 240, 110)


@pytest.mark.parametrize(('encoding', 'pack'), [
    ('yuv422', lambda y, u, v: [u, y, v, y]), ('uyvy', lambda y, u, v: [u, y, v, y]),
    ('yuv422_yuy2', lambda y, u, v: [y, u, y, v]), ('yuyv', lambda y, u, v: [y, u, y, v]),
])
@pytest.mark.parametrize(('yuv', 'rgb'), [(RED_YUV, (255, 0, 0)), (BLUE_YUV, (0, 0, 255))])
def test_yuv422_byte_order_by_construction(encoding: str, pack: Any, yuv: tuple[int, int, int],
                                           rgb: tuple[int, int, int]) -> None:
    """UYVY (yuv422) is U Y0 V Y1 per pixel pair, YUYV (yuv422_yuy2) Y0 U Y1 V."""
    data = bytes(pack(*yuv)) * (4 * 2)  # 4 x 4 pixels = 8 pairs
    msg = types.SimpleNamespace(height=4, width=4, encoding=encoding, is_bigendian=0, step=8,
                                data=data)
    decoded = codec.image_to_rgb(msg).astype(int)
    assert np.abs(decoded - np.array(rgb)).max() <= 3, decoded[0, 0]


@pytest.mark.parametrize(('encoding', 'chroma'), [
    ('nv12', lambda u, v: [u, v]), ('nv21', lambda u, v: [v, u]),
])
@pytest.mark.parametrize(('yuv', 'rgb'), [(RED_YUV, (255, 0, 0)), (BLUE_YUV, (0, 0, 255))])
def test_yuv420_plane_order_by_construction(encoding: str, chroma: Any,
                                            yuv: tuple[int, int, int],
                                            rgb: tuple[int, int, int]) -> None:
    """nv12: Y plane, then U V pairs; nv21: Y plane, then V U pairs."""
    y, u, v = yuv
    data = bytes([y]) * (4 * 4) + bytes(chroma(u, v)) * (2 * 2)
    msg = types.SimpleNamespace(height=4, width=4, encoding=encoding, is_bigendian=0, step=4,
                                data=data)
    decoded = codec.image_to_rgb(msg).astype(int)
    assert np.abs(decoded - np.array(rgb)).max() <= 3, decoded[0, 0]


@pytest.mark.parametrize(('encoding', 'channels'), [
    ('mono16', 1), ('16UC1', 1), ('rgb16', 3), ('bgra16', 4), ('bayer_rggb16', 1),
])
def test_16_bit_scaling_is_cv_bridges(encoding: str, channels: int) -> None:
    """round(v * 255 / 65535), not v >> 8: 129 -> 1 and 32767 -> 127 tell them apart."""
    cases = {0: 0, 128: 0, 129: 1, 257: 1, 32767: 127, 32896: 128, 65407: 255, 65535: 255}
    for value, expected in cases.items():
        pixels = np.full((4, 4, channels), value, np.uint16)  # flat: demosaicing keeps it
        msg = types.SimpleNamespace(height=4, width=4, encoding=encoding, is_bigendian=0,
                                    step=4 * channels * 2, data=pixels.tobytes())
        rgb = codec.image_to_rgb(msg)
        assert rgb.dtype == np.uint8 and (rgb == expected).all(), (value, rgb[0, 0])


@pytest.mark.parametrize(('encoding', 'width', 'height', 'message'), [
    ('yuv422', 5, 2, 'yuv422 Image is 5 pixels wide; YUV 4:2:2 needs an even width'),
    ('yuyv', 3, 2, 'yuyv Image is 3 pixels wide'),
    ('nv12', 5, 4, 'nv12 Image is 5x4; YUV 4:2:0 needs an even width and height'),
    ('nv21', 4, 3, 'nv21 Image is 4x3'),
])
def test_odd_yuv_sizes_are_refused(encoding: str, width: int, height: int,
                                   message: str) -> None:
    msg = types.SimpleNamespace(height=height, width=width, encoding=encoding, is_bigendian=0,
                                step=2 * width, data=bytes(4 * width * height))
    with pytest.raises(CodecError, match=message):
        codec.image_to_rgb(msg)


def test_yuv420_truncated_and_narrow_step() -> None:
    msg = types.SimpleNamespace(height=4, width=6, encoding='nv12', is_bigendian=0, step=6,
                                data=bytes(6 * 4))  # the Y plane only
    with pytest.raises(CodecError, match=r'nv12 Image data has 24 bytes, expected step \* height'
                                         r' \* 3 / 2 = 6 \* 4 \* 3 / 2 = 36'):
        codec.image_to_rgb(msg)
    msg.step, msg.data = 5, bytes(100)
    with pytest.raises(CodecError, match='step 5 is smaller than one nv12 row of 6 bytes'):
        codec.image_to_rgb(msg)


@pytest.mark.parametrize('encoding', ['nv24', 'bayer_rggb12', '32FC1', '16UC3', 'YUV422'])
def test_unknown_camera_encodings_list_the_supported_ones(encoding: str) -> None:
    msg = types.SimpleNamespace(height=2, width=2, encoding=encoding, is_bigendian=0, step=16,
                                data=bytes(64))
    with pytest.raises(CodecError, match=rf"encoding '{encoding}'; supported: rgb8, .*mono16, "
                                         r'8UC1, 8UC3, 16UC1, yuv422, .*yuv422_yuy2, .*'
                                         r'bayer_rggb8, bayer_rggb16, .*nv12, nv21\. Publish'):
        codec.decode_rgb(msg, 'raw')

"""Decoder limits: images with no pixels are refused (raw and compressed), and
decode_rgb(..., max_pixels) refuses larger images with ImageTooLarge before decoding them; for
png and jpeg the size comes from the header (compressed_image_size), checked here against real
encoder output and against a real 249 kB png that decodes to 16000 x 16000 pixels."""

from __future__ import annotations

import struct
import time
import types
import zlib
from typing import Any

import numpy as np
import pytest

from contrast_semask_ros import codec
from contrast_semask_ros.codec import CodecError, ImageTooLarge

cv2 = pytest.importorskip('cv2')

ROS_REASON = 'needs the ROS 2 Jazzy wheels: pip install -r requirements/ros-jazzy.txt'


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (struct.pack('>I', len(payload)) + kind + payload
            + struct.pack('>I', zlib.crc32(kind + payload)))


@pytest.fixture(scope='module')
def png_bomb() -> bytes:
    """A valid 16000 x 16000 grayscale png of zeros: 249 kB that OpenCV decodes (in about 3 s)
    into 768 MB of BGR. The deflate stream is one 1000-row block repeated (a full flush resets
    the compressor, so every block compresses alike), with its zlib header and adler32 added."""
    rows = bytes((1 + 16000) * 1000)  # per row: filter type 0, then the pixels
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate
    block = compressor.compress(rows) + compressor.flush(zlib.Z_FULL_FLUSH)
    adler = 1
    for _ in range(16):
        adler = zlib.adler32(rows, adler)
    idat = b'\x78\xda' + block * 16 + compressor.flush() + struct.pack('>I', adler)
    ihdr = struct.pack('>IIBBBBB', 16000, 16000, 8, 0, 0, 0, 0)  # 8-bit gray, no interlace
    return (b'\x89PNG\r\n\x1a\n' + _png_chunk(b'IHDR', ihdr) + _png_chunk(b'IDAT', idat)
            + _png_chunk(b'IEND', b''))


def _encode(ext: str, image: np.ndarray, params: tuple[int, ...] = ()) -> bytes:
    ok, encoded = cv2.imencode(ext, image, list(params))
    assert ok
    return encoded.tobytes()


def _with_png_size(png: bytes, width: int, height: int) -> bytes:
    """A real png with the IHDR size replaced (and its CRC recomputed)."""
    ihdr = struct.pack('>II', width, height) + png[24:29]
    return png[:8] + _png_chunk(b'IHDR', ihdr) + png[33:]


def _sof_offset(jpeg: bytes) -> int:
    """Offset of the SOF0/SOF2 segment's length field in OpenCV's jpeg output."""
    for marker in (b'\xff\xc0', b'\xff\xc2'):
        if (found := jpeg.find(marker)) > 0:
            return found + 2
    raise AssertionError('no SOF0/SOF2 marker')


def _with_jpeg_size(jpeg: bytes, width: int, height: int) -> bytes:
    """A real jpeg with the frame header size replaced."""
    at = _sof_offset(jpeg) + 3  # after the length and the precision
    return jpeg[:at] + struct.pack('>HH', height, width) + jpeg[at + 4:]


def _compressed(data: bytes, fmt: str = 'rgb8; png compressed bgr8') -> types.SimpleNamespace:
    return types.SimpleNamespace(format=fmt, data=data)


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError('cv2.imdecode was called for an image that must be refused first')

    monkeypatch.setattr(cv2, 'imdecode', refuse)


GRADIENT = np.add.outer(np.arange(24), np.arange(40)).astype(np.uint8)  # 24 x 40


@pytest.mark.parametrize(('name', 'data'), [
    ('png colour', _encode('.png', np.dstack([GRADIENT] * 3))),
    ('png gray', _encode('.png', GRADIENT)),
    ('png 16-bit', _encode('.png', GRADIENT.astype(np.uint16) * 257)),
    ('png rgba', _encode('.png', np.dstack([GRADIENT] * 4))),
    ('jpeg baseline', _encode('.jpg', np.dstack([GRADIENT] * 3))),
    ('jpeg gray', _encode('.jpg', GRADIENT)),
    ('jpeg progressive', _encode('.jpg', np.dstack([GRADIENT] * 3),
                                 (cv2.IMWRITE_JPEG_PROGRESSIVE, 1))),
    ('jpeg restart intervals', _encode('.jpg', np.dstack([GRADIENT] * 3),
                                       (cv2.IMWRITE_JPEG_RST_INTERVAL, 1))),
    ('jpeg optimized', _encode('.jpg', np.dstack([GRADIENT] * 3),
                               (cv2.IMWRITE_JPEG_OPTIMIZE, 1))),
])
def test_header_size_agrees_with_the_decoder(name: str, data: bytes) -> None:
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert codec.compressed_image_size(data) == (decoded.shape[1], decoded.shape[0]) == (40, 24)
    assert codec.compressed_image_size(np.frombuffer(data, np.uint8)) == (40, 24)


def test_jpeg_segments_are_skipped_by_their_length() -> None:
    """An APP1 segment whose payload holds FF C0 (a fake frame header 9999 x 9999) before the
    real one, fill bytes before a marker, and garbage libjpeg skips, as libjpeg reads them."""
    jpeg = _encode('.jpg', np.dstack([GRADIENT] * 3))
    fake = b'\xff\xc0\x00\x11\x08' + struct.pack('>HH', 9999, 9999) + bytes(8)
    app1 = b'\xff\xe1' + struct.pack('>H', 2 + len(fake)) + fake
    tricky = jpeg[:2] + app1 + b'\xff\xff\xff' + jpeg[2:]
    assert codec.compressed_image_size(tricky) == (40, 24)
    garbage = jpeg[:2] + b'\x12\x34\xff\x00' + jpeg[2:]
    assert codec.compressed_image_size(garbage) == (40, 24)


@pytest.mark.parametrize(('data', 'message'), [
    (b'\x89PNG\r\n\x1a\n' + bytes(10), r'PNG data of 18 bytes does not start with an IHDR'),
    (b'\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDX' + bytes(12), r"IHDR chunk \(got b'\\x00"),
    (b'\xff\xd8\xff\xda\x00\x08' + bytes(20), r'marker FFDA at byte 2 before any frame header'),
    (b'\xff\xd8\xff\xd9', r'marker FFD9 at byte 2 before any frame header'),
    (b'\xff\xd8\xff\xe0\x00\x10JFIF\x00', r'JPEG data of 11 bytes ends before a frame header'),
    (b'\xff\xd8\xff\xe0\x00\x01', r'segment FFE0 at byte 2 has a bad length 1'),
    (b'\xff\xd8\xff\xc0\x00\x05\x08\x00\x10\x00\x10', r'frame header FFC0 .* bad length 5'),
])
def test_malformed_headers(data: bytes, message: str, no_decoding: None) -> None:
    with pytest.raises(CodecError, match=message):
        codec.compressed_image_size(data)
    with pytest.raises(CodecError, match=r"cannot decode CompressedImage \(format 'rgb8; png "
                                         rf"compressed bgr8'\), {len(data)} bytes: .*{message}"):
        codec.compressed_to_rgb(_compressed(data))


def test_other_formats_have_no_header_size() -> None:
    assert codec.compressed_image_size(_encode('.bmp', GRADIENT)) is None
    assert codec.compressed_image_size(b'') is None


# ---- images with no pixels --------------------------------------------------------------------


@pytest.mark.parametrize('encoding', ['rgb8', 'mono8', 'bgr8', 'yuv422', 'nv12', 'bayer_rggb8',
                                      '16UC1'])
@pytest.mark.parametrize(('height', 'width'), [(0, 0), (0, 6), (4, 0)])
def test_raw_images_without_pixels_are_refused(encoding: str, height: int, width: int) -> None:
    msg = types.SimpleNamespace(height=height, width=width, encoding=encoding, is_bigendian=0,
                                step=width * 3, data=b'')
    with pytest.raises(CodecError, match=rf"Image \(encoding '{encoding}'\) is {width}x{height}: "
                                         'it has no pixels; the camera driver must publish'):
        codec.decode_rgb(msg, 'raw')


@pytest.mark.parametrize(('fmt', 'width', 'height'), [
    ('png', 0, 24), ('png', 40, 0), ('png', 0, 0), ('jpeg', 0, 24), ('jpeg', 40, 0),
])
def test_compressed_images_without_pixels_are_refused(fmt: str, width: int, height: int,
                                                      no_decoding: None) -> None:
    real = _encode('.png' if fmt == 'png' else '.jpg', np.dstack([GRADIENT] * 3))
    data = (_with_png_size if fmt == 'png' else _with_jpeg_size)(real, width, height)
    with pytest.raises(CodecError, match=rf"CompressedImage \(format '{fmt}'\) is "
                                         rf'{width}x{height}: it has no pixels'):
        codec.decode_rgb(_compressed(data, fmt), 'compressed')


# ---- max_pixels -------------------------------------------------------------------------------


def test_raw_limit() -> None:
    pixels = np.zeros((4, 5, 3), np.uint8)
    msg = types.SimpleNamespace(height=4, width=5, encoding='rgb8', is_bigendian=0, step=15,
                                data=pixels.tobytes())
    assert codec.decode_rgb(msg, 'raw', max_pixels=20).shape == (4, 5, 3)
    assert codec.decode_rgb(msg, 'raw', 0).shape == (4, 5, 3)  # 0 = no limit
    with pytest.raises(ImageTooLarge, match=r"Image \(encoding 'rgb8'\) is 5x4 = 20 pixels, more "
                                            r'than the limit of 19 .*max_image_pixels.*raise'):
        codec.decode_rgb(msg, 'raw', max_pixels=19)
    # refused from width and height alone, before the (here missing) data is looked at
    huge = types.SimpleNamespace(height=100_000, width=100_000, encoding='bayer_rggb16',
                                 is_bigendian=0, step=200_000, data=b'')
    with pytest.raises(ImageTooLarge) as caught:
        codec.image_to_rgb(huge, max_pixels=2_000_000)
    assert isinstance(caught.value, CodecError)
    assert (caught.value.width, caught.value.height, caught.value.max_pixels) == (
        100_000, 100_000, 2_000_000)


@pytest.mark.parametrize('fmt', ['png', 'jpeg'])
def test_compressed_limit(fmt: str) -> None:
    rgb = np.dstack([GRADIENT] * 3)
    _, data = codec.rgb_to_compressed_bytes(rgb, fmt)
    msg = _compressed(data, f'rgb8; {fmt} compressed bgr8')
    assert codec.decode_rgb(msg, 'compressed', max_pixels=960).shape == (24, 40, 3)
    with pytest.raises(ImageTooLarge, match=r'is 40x24 = 960 pixels, more than the limit of 959'):
        codec.decode_rgb(msg, 'compressed', max_pixels=959)


@pytest.mark.parametrize('fmt', ['png', 'jpeg', 'jpeg progressive'])
def test_claimed_16000_squared_is_refused_without_decoding(fmt: str, no_decoding: None) -> None:
    """Real encoder output whose header claims 16000 x 16000 (256 M pixels)."""
    image = np.dstack([GRADIENT] * 3)
    if fmt == 'png':
        data = _with_png_size(_encode('.png', image), 16000, 16000)
    else:
        params = (cv2.IMWRITE_JPEG_PROGRESSIVE, 1) if 'progressive' in fmt else ()
        data = _with_jpeg_size(_encode('.jpg', image, params), 16000, 16000)
    with pytest.raises(ImageTooLarge, match=r'is 16000x16000 = 256000000 pixels, more than the '
                                            'limit of 2000000'):
        codec.decode_rgb(_compressed(data, fmt), 'compressed', max_pixels=2_000_000)


def test_real_png_bomb_is_refused_fast(png_bomb: bytes, no_decoding: None) -> None:
    assert len(png_bomb) < 300_000 and codec.compressed_image_size(png_bomb) == (16000, 16000)
    start = time.perf_counter()
    with pytest.raises(ImageTooLarge, match='16000x16000'):
        codec.decode_rgb(_compressed(png_bomb), 'compressed', max_pixels=1920 * 1080)
    assert time.perf_counter() - start < 0.5


@pytest.mark.ros
def test_limit_on_real_messages(png_bomb: bytes, no_decoding: None) -> None:
    msgs = pytest.importorskip('sensor_msgs.msg', reason=ROS_REASON)
    compressed = msgs.CompressedImage(format='mono8; png compressed mono8', data=png_bomb)
    with pytest.raises(ImageTooLarge):
        codec.decode_rgb(compressed, 'compressed', max_pixels=10_000_000)
    raw = msgs.Image(height=3000, width=4000, encoding='yuv422', step=8000)  # no data needed
    with pytest.raises(ImageTooLarge, match=r"Image \(encoding 'yuv422'\) is 4000x3000"):
        codec.decode_rgb(raw, 'raw', max_pixels=10_000_000)


def test_with_a_limit_other_formats_are_refused(no_decoding: None) -> None:
    bmp = _compressed(_encode('.bmp', GRADIENT), 'bmp')
    with pytest.raises(CodecError, match=r"data starting b'BM.*is neither png nor jpeg, so its "
                                         'size cannot be checked against max_pixels'):
        codec.decode_rgb(bmp, 'compressed', max_pixels=10_000)


def test_without_a_limit_other_formats_decode_as_before() -> None:
    bmp = _compressed(_encode('.bmp', GRADIENT), 'bmp')
    np.testing.assert_array_equal(codec.decode_rgb(bmp, 'compressed', max_pixels=0),
                                  np.dstack([GRADIENT] * 3))


def test_negative_limit_is_a_caller_error() -> None:
    msg = _compressed(codec.rgb_to_compressed_bytes(np.dstack([GRADIENT] * 3), 'png')[1])
    with pytest.raises(ValueError, match=r'max_pixels must be >= 0 \(0 = no limit\), got -1'):
        codec.decode_rgb(msg, 'compressed', max_pixels=-1)

"""sensor_msgs/Image and CompressedImage <-> numpy, without ROS (no rclpy, no cv_bridge).

The functions read and write the *fields* of whatever message object they are given, so they
work with the real rclpy classes (node, tests), with rosbags typestore dataclasses (replay, bag
tests) and with any object that has the same attributes:

- Image: height, width, encoding, is_bigendian, step, data (and header).
- CompressedImage: format, data (and header).

`data` may be an `array.array('B')` (rclpy), an `np.uint8` array (rosbags), bytes or any other
buffer. Decoding honours `step` row padding and `is_bigendian`; encoding always writes
little-endian, unpadded rows (step = width * channels * itemsize).

Encodings: rgb8, bgr8, rgba8, bgra8, rgb16, bgr16, rgba16, bgra16, mono8, mono16 and the generic
<depth>C<n> with depth in 8U 8S 16U 16S 32S 32F 64F and n = 1..512 (OpenCV's CV_CN_MAX), as ROS 2
`sensor_msgs/image_encodings.hpp` and cv_bridge parse them. The embedding is published as 32FC<D>
(ordinary viewers will not display it; that is expected).

Camera images (image_to_rgb, decode_rgb) may also be yuv422/uyvy, yuv422_yuy2/yuyv, nv12, nv21
and bayer_{rggb,bggr,gbrg,grbg}{8,16}; 8UC1 is read as mono8, 8UC3 as bgr8 and 16UC1 as mono16.
16-bit images are reduced to 8 bits as cv_bridge does (see image_to_rgb). Decoders refuse images
with no pixels, and with `max_pixels` images larger than that (ImageTooLarge), a compressed one
from its PNG/JPEG header, before anything is decoded.

Writing `data`: rclpy messages get an `array.array('B')`. It is the fast path of the generated
setter in both modes: with ROS_PYTHON_CHECK_FIELDS=1 a bytes value is checked element by element
(about 0.13 s for 2 MB), an ndarray or memoryview is slow in either mode. rosbags messages get an
`np.uint8` array (its serializer calls `data.view`, so bytes fail there); anything else gets bytes.
"""

from __future__ import annotations

import array as pyarray
import re
import struct
from functools import lru_cache
from typing import Any, NamedTuple

import numpy as np


class CodecError(ValueError):
    """A message or array that cannot be converted; says what was expected and how to fix it."""


class ImageTooLarge(CodecError):  # noqa: N818 - a public name callers catch
    """An image with more pixels than the decoder's `max_pixels` limit (raised before decoding:
    a compressed image's size comes from its header)."""

    def __init__(self, what: str, width: int, height: int, max_pixels: int) -> None:
        self.width, self.height, self.max_pixels = width, height, max_pixels
        super().__init__(f'{what} is {width}x{height} = {width * height} pixels, more than the '
                         f'limit of {max_pixels} (max_pixels; the node\'s max_image_pixels); '
                         'raise the limit (0 = none) or publish smaller images')


class PixelFormat(NamedTuple):
    dtype: np.dtype  # element type, native byte order
    channels: int  # 1..512


class ImageFields(NamedTuple):
    """The sensor_msgs/Image fields for one array (data as bytes, little-endian, no padding).

    A rosbags typestore Image needs `data` as an np.uint8 array:
    `Image(header=h, **fields._replace(data=np.frombuffer(fields.data, np.uint8))._asdict())`.
    """

    height: int
    width: int
    encoding: str
    is_bigendian: int  # 0 or 1
    step: int  # bytes per row
    data: bytes  # step * height bytes


_NAMED: dict[str, tuple[type, int]] = {
    'rgb8': (np.uint8, 3), 'bgr8': (np.uint8, 3), 'rgba8': (np.uint8, 4), 'bgra8': (np.uint8, 4),
    'rgb16': (np.uint16, 3), 'bgr16': (np.uint16, 3), 'rgba16': (np.uint16, 4),
    'bgra16': (np.uint16, 4), 'mono8': (np.uint8, 1), 'mono16': (np.uint16, 1),
}
_DEPTHS: dict[str, type] = {
    '8U': np.uint8, '8S': np.int8, '16U': np.uint16, '16S': np.int16, '32S': np.int32,
    '32F': np.float32, '64F': np.float64,
}
_GENERIC = re.compile(r'(8U|8S|16U|16S|32S|32F|64F)C([0-9]+)')
MAX_CHANNELS = 512  # OpenCV's CV_CN_MAX, the most cv_bridge can represent
_SUPPORTED = (f"{', '.join(_NAMED)} and <depth>C<n> with depth in {' '.join(_DEPTHS)} and "
              f'n = 1..{MAX_CHANNELS} (e.g. 32FC1, 32FC64)')


class _ToRgb(NamedTuple):
    """How image_to_rgb reads one encoding."""

    layout: str  # the image_to_array encoding of the data (element type, channels)
    conversion: str | None  # name of the cv2 conversion to RGB at that depth; None: already RGB


_TO_RGB: dict[str, _ToRgb] = {
    'rgb8': _ToRgb('rgb8', None), 'bgr8': _ToRgb('bgr8', 'COLOR_BGR2RGB'),
    'rgba8': _ToRgb('rgba8', 'COLOR_RGBA2RGB'), 'bgra8': _ToRgb('bgra8', 'COLOR_BGRA2RGB'),
    'mono8': _ToRgb('mono8', 'COLOR_GRAY2RGB'),
    'rgb16': _ToRgb('rgb16', None), 'bgr16': _ToRgb('bgr16', 'COLOR_BGR2RGB'),
    'rgba16': _ToRgb('rgba16', 'COLOR_RGBA2RGB'), 'bgra16': _ToRgb('bgra16', 'COLOR_BGRA2RGB'),
    'mono16': _ToRgb('mono16', 'COLOR_GRAY2RGB'),
    # generic types as cv_bridge users publish them: 8UC3 is an OpenCV (BGR) image
    '8UC1': _ToRgb('8UC1', 'COLOR_GRAY2RGB'), '8UC3': _ToRgb('8UC3', 'COLOR_BGR2RGB'),
    '16UC1': _ToRgb('16UC1', 'COLOR_GRAY2RGB'),
    # packed YUV 4:2:2, two bytes per pixel (uyvy and yuyv are the names since ROS 2 Jazzy)
    'yuv422': _ToRgb('8UC2', 'COLOR_YUV2RGB_UYVY'), 'uyvy': _ToRgb('8UC2', 'COLOR_YUV2RGB_UYVY'),
    'yuv422_yuy2': _ToRgb('8UC2', 'COLOR_YUV2RGB_YUY2'),
    'yuyv': _ToRgb('8UC2', 'COLOR_YUV2RGB_YUY2'),
}
# OpenCV names a Bayer pattern by the 2x2 block that starts at pixel (1, 1), ROS by the one at
# (0, 0): ROS bayer_rggb (R at (0, 0)) is OpenCV's BayerBG. The same table as cv_bridge's.
_BAYER_CV = {'rggb': 'BG', 'bggr': 'RG', 'gbrg': 'GR', 'grbg': 'GB'}
_TO_RGB.update({f'bayer_{pattern}{bits}': _ToRgb(layout, f'COLOR_Bayer{cv_name}2RGB')
                for pattern, cv_name in _BAYER_CV.items()
                for bits, layout in (('8', '8UC1'), ('16', '16UC1'))})
# semi-planar YUV 4:2:0: `height` rows of Y, then height / 2 rows of interleaved chroma (U first
# in nv12, V first in nv21), every row `step` bytes
_YUV420 = {'nv12': 'COLOR_YUV2RGB_NV12', 'nv21': 'COLOR_YUV2RGB_NV21'}
_RGB_SUPPORTED = ', '.join([*_TO_RGB, *_YUV420])
_COMPRESSED_FORMATS = {'jpeg': '.jpg', 'jpg': '.jpg', 'png': '.png'}
_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
# JPEG markers: start of frame (SOF0..SOF15 without DHT C4, JPG C8, DAC CC), and the ones that
# carry no length (TEM, RST0..RST7)
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE = frozenset([0x01, *range(0xD0, 0xD8)])
_JPEG_MARKER = re.compile(rb'\xff+([^\xff])')  # fill bytes, then the marker code


@lru_cache(maxsize=64)
def parse_encoding(encoding: str) -> PixelFormat:
    """'32FC64' -> PixelFormat(float32, 64); 'rgb8' -> (uint8, 3). Unknown -> CodecError."""
    if encoding in _NAMED:
        dtype, channels = _NAMED[encoding]
        return PixelFormat(np.dtype(dtype), channels)
    match = _GENERIC.fullmatch(encoding) if isinstance(encoding, str) else None
    if match is None:
        raise CodecError(f'unknown image encoding {encoding!r}; supported: {_SUPPORTED}')
    channels = int(match.group(2))
    if not 1 <= channels <= MAX_CHANNELS:
        raise CodecError(f'image encoding {encoding!r} has {channels} channels; the channel '
                         f'count must be 1..{MAX_CHANNELS}')
    return PixelFormat(np.dtype(_DEPTHS[match.group(1)]), channels)


def generic_encoding(dtype: np.dtype | type, channels: int) -> str:
    """The <depth>C<n> encoding for an element type: (float32, 64) -> '32FC64'."""
    dtype = np.dtype(dtype).newbyteorder('=')
    for depth, candidate in _DEPTHS.items():
        if np.dtype(candidate) == dtype:
            encoding = f'{depth}C{channels}'
            parse_encoding(encoding)  # validates the channel count
            return encoding
    raise CodecError(f'no ROS image encoding holds {dtype} elements; supported element types: '
                     f"{', '.join(str(np.dtype(d)) for d in _DEPTHS.values())}")


def _byte_view(data: Any) -> np.ndarray:
    """msg.data (array.array, np.uint8 array, bytes, list, ...) as a flat uint8 array, no copy
    when it supports the buffer protocol."""
    try:
        return np.frombuffer(data, np.uint8)
    except (TypeError, ValueError, BufferError):  # a list, or a non-contiguous array
        return np.ascontiguousarray(data, dtype=np.uint8).reshape(-1)


def image_to_array(msg: Any) -> np.ndarray:
    """sensor_msgs/Image -> (H, W) for one channel or (H, W, C), in the encoding's dtype.

    The result is in native byte order. When the data is already little-endian (on a
    little-endian host) and aligned, the result is a zero-copy view of `msg.data` (row padding is
    skipped by strides) and is marked read-only; `.copy()` it to modify it or to keep it while the
    message's buffer is reused. Big-endian or misaligned data is converted into a contiguous copy.
    """
    out = _pixels(msg, parse_encoding(msg.encoding))
    return out[..., 0] if out.shape[2] == 1 else out


def _pixels(msg: Any, fmt: PixelFormat) -> np.ndarray:
    """An Image's data read as `fmt` -> (H, W, C), native order (see image_to_array)."""
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    itemsize = fmt.dtype.itemsize
    row_bytes = width * fmt.channels * itemsize
    if step < row_bytes:
        raise CodecError(f'Image step {step} is smaller than one row of {width} x {msg.encoding} '
                         f'pixels ({width} * {fmt.channels} * {itemsize} = {row_bytes} bytes); '
                         'the publisher must set step >= width * channels * bytes per channel')
    buffer = _byte_view(msg.data)
    if buffer.size < step * height:
        raise CodecError(f'Image data has {buffer.size} bytes, expected step * height = '
                         f'{step} * {height} = {step * height} for a {width}x{height} '
                         f'{msg.encoding} image; the message is truncated or its height/step '
                         'are wrong')
    dtype = fmt.dtype.newbyteorder('>' if msg.is_bigendian else '<')
    out = np.ndarray((height, width, fmt.channels), dtype, buffer=buffer,
                     strides=(step, fmt.channels * itemsize, itemsize))
    if not (dtype.isnative and out.flags.aligned):
        out = out.astype(fmt.dtype)  # HWC contiguous, native order, aligned
    else:
        out.flags.writeable = False
    return out


def _check_pixels(what: str, width: int, height: int, max_pixels: int) -> None:
    """Refuse an image with no pixels, or with more than `max_pixels` (0 = no limit)."""
    if max_pixels < 0:
        raise ValueError(f'max_pixels must be >= 0 (0 = no limit), got {max_pixels}')
    if width <= 0 or height <= 0:
        raise CodecError(f'{what} is {width}x{height}: it has no pixels; the camera driver '
                         'must publish a non-empty image')
    if max_pixels and width * height > max_pixels:
        raise ImageTooLarge(what, width, height, max_pixels)


def _yuv420_rows(msg: Any) -> np.ndarray:
    """An nv12/nv21 Image -> (H * 3 / 2, W) uint8: H rows of Y, then H / 2 rows of interleaved
    chroma, as cv2's YUV2RGB_NV12/NV21 take it (row padding skipped by strides, no copy)."""
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height % 2 or width % 2:
        raise CodecError(f'{msg.encoding} Image is {width}x{height}; YUV 4:2:0 needs an even '
                         'width and height (one chroma pair per 2x2 pixels)')
    if step < width:
        raise CodecError(f'Image step {step} is smaller than one {msg.encoding} row of {width} '
                         'bytes; the publisher must set step >= width')
    rows = height * 3 // 2
    buffer = _byte_view(msg.data)
    if buffer.size < step * rows:
        raise CodecError(f'{msg.encoding} Image data has {buffer.size} bytes, expected step * '
                         f'height * 3 / 2 = {step} * {height} * 3 / 2 = {step * rows} for a '
                         f'{width}x{height} image (Y rows, then half as many chroma rows); the '
                         'message is truncated or its height/step are wrong')
    return np.ndarray((rows, width), np.uint8, buffer=buffer, strides=(step, 1))


def _to_rgb8(pixels: np.ndarray, conversion: str | None, encoding: str) -> np.ndarray:
    """(H, W[, C]) uint8 or uint16 -> (H, W, 3) uint8 RGB via the named cv2 conversion; 16-bit
    values are scaled by 255 / 65535, as cv_bridge does: after demosaicing (which interpolates),
    before a conversion that only moves channels (the same result, on fewer values)."""
    import cv2  # lazy: keeps `import contrast_semask_ros.codec` cheap

    try:
        if pixels.dtype == np.uint16 and 'Bayer' not in (conversion or ''):
            pixels = cv2.convertScaleAbs(pixels, alpha=255.0 / 65535.0)  # round(v / 257)
        rgb = pixels if conversion is None else cv2.cvtColor(pixels, getattr(cv2, conversion))
        if rgb.dtype == np.uint16:
            rgb = cv2.convertScaleAbs(rgb, alpha=255.0 / 65535.0)
    except cv2.error as err:
        raise CodecError(f'OpenCV could not convert a {pixels.shape} {pixels.dtype} '
                         f'{encoding} image to RGB: {err}') from err
    return np.ascontiguousarray(rgb)


def image_to_rgb(msg: Any, max_pixels: int = 0) -> np.ndarray:
    """sensor_msgs/Image -> (H, W, 3) uint8 RGB.

    Encodings: rgb8, bgr8, rgba8, bgra8, mono8; rgb16, bgr16, rgba16, bgra16, mono16; 8UC1 (read
    as mono8), 8UC3 (as bgr8, OpenCV's order, as cv_bridge publishes it), 16UC1 (as mono16);
    yuv422 = uyvy and yuv422_yuy2 = yuyv (YUV 4:2:2, even width); nv12 and nv21 (YUV 4:2:0, even
    width and height, the chroma rows after the Y rows with the same step);
    bayer_rggb8, bayer_bggr8, bayer_gbrg8, bayer_grbg8 and their 16-bit forms (bilinear
    demosaicing). YUV is converted with OpenCV's BT.601 video-range formulas, as cv_bridge does.

    16-bit images are converted at 16 bits (channel order, demosaicing) and then scaled to 8 bits
    by 255 / 65535 with rounding, i.e. round(v / 257), which is what cv_bridge's conversion to
    rgb8 does (`convertTo(..., 255. / 65535.)`): 65535 -> 255, 32896 -> 128, 128 -> 0. A camera
    that fills only the low 10 or 12 bits therefore comes out dark, as in cv_bridge and rviz.

    `step` row padding and `is_bigendian` are honoured as in image_to_array. Images with no
    pixels raise CodecError, and with `max_pixels` > 0 an image of more pixels than that raises
    ImageTooLarge, before the data is read. rgb8 without row padding comes back as a read-only
    view of `msg.data` (see image_to_array); the other encodings are converted into a new array.
    """
    encoding = msg.encoding
    if encoding not in _TO_RGB and encoding not in _YUV420:
        raise CodecError(f'cannot make RGB from an Image with encoding {encoding!r}; '
                         f'supported: {_RGB_SUPPORTED}. Publish the camera image in one of '
                         'them (or convert it upstream)')
    _check_pixels(f'Image (encoding {encoding!r})', int(msg.width), int(msg.height), max_pixels)
    if encoding in _YUV420:
        return _to_rgb8(_yuv420_rows(msg), _YUV420[encoding], encoding)  # H * 3 / 2, W uint8
    layout, conversion = _TO_RGB[encoding]
    pixels = _pixels(msg, parse_encoding(layout))  # H, W, C uint8 or uint16
    if conversion is None and pixels.dtype == np.uint8:
        return np.ascontiguousarray(pixels)
    if layout == '8UC2' and pixels.shape[1] % 2:
        raise CodecError(f'{encoding} Image is {pixels.shape[1]} pixels wide; YUV 4:2:2 needs '
                         'an even width (one U, V pair per two pixels)')
    return _to_rgb8(pixels[..., 0] if pixels.shape[2] == 1 else pixels, conversion, encoding)


def compressed_image_size(data: Any) -> tuple[int, int] | None:
    """(width, height) from the header of PNG (IHDR) or JPEG (the first SOFn frame header)
    bytes, without decoding them; None when `data` is neither. CodecError for a PNG or JPEG whose
    header is truncated or malformed."""
    buffer = _byte_view(data)
    head = bytes(buffer[:24])
    if head.startswith(_PNG_SIGNATURE):
        if len(head) < 24 or head[12:16] != b'IHDR':
            raise CodecError(f'PNG data of {buffer.size} bytes does not start with an IHDR '
                             f'chunk (got {head[8:24]!r}); the image is truncated or corrupt')
        width, height = struct.unpack('>II', head[16:24])
        return int(width), int(height)
    if head.startswith(b'\xff\xd8'):
        return _jpeg_size(buffer)
    return None


def _jpeg_size(buffer: np.ndarray) -> tuple[int, int]:
    """(width, height) from the first SOFn segment of JPEG bytes (starting FF D8). Markers are
    found as libjpeg finds them: bytes other than FF are skipped, then FF fill bytes, and FF 00
    is stuffing; a segment with a length (APPn, DQT, DHT, COM, ...) is skipped by it."""
    data = buffer.tobytes()
    pos = 2
    while (found := _JPEG_MARKER.search(data, pos)) is not None:
        marker, pos = found.group(1)[0], found.end()  # pos: after the marker
        if marker == 0 or marker in _JPEG_STANDALONE:
            continue
        if marker in (0xD8, 0xD9, 0xDA):  # SOI again, EOI, SOS: no frame header before them
            raise CodecError(f'JPEG data has marker FF{marker:02X} at byte {pos - 2} before any '
                             'frame header (SOFn); the image is corrupt')
        if pos + 2 > len(data):
            break
        length = data[pos] << 8 | data[pos + 1]
        if marker in _JPEG_SOF:  # length, precision, height, width, components
            if pos + 7 > len(data):
                break
            if length < 8:
                raise CodecError(f'JPEG frame header FF{marker:02X} at byte {pos - 2} has a bad '
                                 f'length {length}; the image is corrupt')
            height, width = struct.unpack_from('>HH', data, pos + 3)
            return int(width), int(height)
        if length < 2:
            raise CodecError(f'JPEG segment FF{marker:02X} at byte {pos - 2} has a bad length '
                             f'{length}; the image is corrupt')
        pos += length
    raise CodecError(f'JPEG data of {len(data)} bytes ends before a frame header (SOFn) gives '
                     'its size; the image is truncated')


def compressed_to_rgb(msg: Any, max_pixels: int = 0) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg or png, colour or grayscale) -> (H, W, 3) uint8 RGB.

    Grayscale images are replicated into three channels, alpha is dropped, 16-bit png is reduced
    to 8 bits. EXIF orientation is ignored (ROS frames are in sensor orientation).

    The size is read from the PNG/JPEG header first: an image with no pixels raises CodecError,
    and with `max_pixels` > 0 one of more pixels than that raises ImageTooLarge without being
    decoded (a few kB of JPEG or PNG can claim gigabytes of pixels). With a limit, data that is
    neither PNG nor JPEG is refused (its size cannot be checked); without one, whatever OpenCV
    decodes is accepted, as before.
    """
    fmt = str(getattr(msg, 'format', ''))
    if 'compresseddepth' in fmt.lower():
        raise CodecError(f'CompressedImage format {fmt!r} is a compressedDepth image (a depth '
                         'header before the png); subscribe to the raw or the jpeg/png topic')
    buffer = _byte_view(msg.data)
    if buffer.size == 0:
        raise CodecError(f'CompressedImage (format {fmt!r}) has no data; expected jpeg or png '
                         'bytes')
    what = f'CompressedImage (format {fmt!r})'
    try:
        size = compressed_image_size(buffer)
    except CodecError as err:
        raise CodecError(f'cannot decode {what}, {buffer.size} bytes: {err}') from err
    if size is not None:
        _check_pixels(what, *size, max_pixels)
    elif max_pixels:
        raise CodecError(f'{what} data starting {bytes(buffer[:8])!r} is neither png nor jpeg, '
                         'so its size cannot be checked against max_pixels before decoding; '
                         'publish png or jpeg (or set the limit to 0)')
    import cv2

    try:
        bgr = cv2.imdecode(buffer, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    except cv2.error as err:
        raise CodecError(f'cannot decode CompressedImage (format {fmt!r}, {buffer.size} bytes) '
                         f'as jpeg or png: {err}') from err
    if bgr is None:
        raise CodecError(f'cannot decode CompressedImage (format {fmt!r}, {buffer.size} bytes, '
                         f'starting {bytes(buffer[:8])!r}) as jpeg or png; expected the output '
                         'of compressed_image_transport or rgb_to_compressed_bytes')
    _check_pixels(what, bgr.shape[1], bgr.shape[0], max_pixels)  # formats without a header parse
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def decode_rgb(msg: Any, transport: str, max_pixels: int = 0) -> np.ndarray:
    """An Image (transport 'raw') or CompressedImage ('compressed') -> (H, W, 3) uint8 RGB.

    `max_pixels` > 0 refuses larger images with ImageTooLarge (a CodecError) before decoding
    them (see image_to_rgb, compressed_to_rgb); 0 = no limit."""
    if transport == 'raw':
        return image_to_rgb(msg, max_pixels)
    if transport == 'compressed':
        return compressed_to_rgb(msg, max_pixels)
    raise CodecError(f"image transport must be 'raw' or 'compressed', got {transport!r}")


def _little_endian(array: np.ndarray, encoding: str) -> np.ndarray:
    """Validate `array` against `encoding`; return it as C-contiguous little-endian H, W[, C]."""
    fmt = parse_encoding(encoding)
    array = np.asarray(array)
    shape_ok = ((array.ndim == 3 and array.shape[2] == fmt.channels)
                or (array.ndim == 2 and fmt.channels == 1))
    dtype_ok = array.dtype.kind == fmt.dtype.kind and array.dtype.itemsize == fmt.dtype.itemsize
    if not (shape_ok and dtype_ok):
        want = ('(H, W) or (H, W, 1)' if fmt.channels == 1 else f'(H, W, {fmt.channels})')
        if shape_ok:
            hint = f'cast it with .astype(np.{fmt.dtype})'
        else:
            hint = 'use an encoding with the array\'s channel count'
            channels = 1 if array.ndim == 2 else array.shape[-1] if array.ndim == 3 else 0
            try:
                hint += f", e.g. {generic_encoding(array.dtype, channels)!r}"
            except CodecError:
                pass
        raise CodecError(f'encoding {encoding!r} needs a {fmt.dtype} array of shape {want}, '
                         f'got {array.dtype} {array.shape}; {hint}')
    return np.ascontiguousarray(array.astype(fmt.dtype.newbyteorder('<'), copy=False))


def array_to_fields(array: np.ndarray, encoding: str) -> ImageFields:
    """(H, W[, C]) array -> the Image fields for `encoding` (little-endian, unpadded rows).

    The dtype and channel count must match the encoding: float32 (H, W, 64) for '32FC64',
    float32 (H, W) for '32FC1', uint8 (H, W) for 'mono8', uint8 (H, W, 3) for 'rgb8'.
    """
    pixels = _little_endian(array, encoding)
    height, width = pixels.shape[:2]
    return ImageFields(int(height), int(width), encoding, 0,
                       int(width) * parse_encoding(encoding).channels * pixels.itemsize,
                       pixels.tobytes())


def _data_like(current: Any, payload: np.ndarray) -> Any:
    """`payload` (contiguous) as the container type the message holds in `current`."""
    flat = payload.reshape(-1).view(np.uint8)
    if isinstance(current, pyarray.array):  # rclpy
        data = pyarray.array('B')
        data.frombytes(flat)
        return data
    if isinstance(current, np.ndarray):  # rosbags typestore
        return flat.copy()
    return flat.tobytes()


def fill_image(msg: Any, array: np.ndarray, encoding: str, header: Any = None) -> Any:
    """Set the Image fields of an existing message from `array` (see array_to_fields); returns
    `msg`. `data` gets the message's own container type (module docstring); if `header` is given,
    `msg.header = header`."""
    pixels = _little_endian(array, encoding)
    height, width = pixels.shape[:2]
    msg.height = int(height)
    msg.width = int(width)
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(width) * parse_encoding(encoding).channels * pixels.itemsize
    msg.data = _data_like(getattr(msg, 'data', None), pixels)
    if header is not None:
        msg.header = header
    return msg


def rgb_to_compressed_bytes(rgb: np.ndarray, fmt: str = 'jpeg', quality: int = 90
                            ) -> tuple[str, bytes]:
    """(H, W, 3) uint8 RGB -> (format string, jpeg or png bytes) for a CompressedImage.

    The format string is what compressed_image_transport writes for an rgb8 source image:
    'rgb8; jpeg compressed bgr8' or 'rgb8; png compressed bgr8' (the image is stored as ordinary
    colour jpeg/png). `quality` (1..100) applies to jpeg only; png is lossless.
    """
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise CodecError(f'expected a uint8 (H, W, 3) RGB image, got {rgb.dtype} {rgb.shape}')
    if fmt not in _COMPRESSED_FORMATS:
        raise CodecError(f"unknown compressed format {fmt!r}; use 'jpeg' or 'png'")
    if not 1 <= quality <= 100:
        raise CodecError(f'jpeg quality must be 1..100, got {quality}')
    import cv2

    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if fmt != 'png' else []
    ok, encoded = cv2.imencode(_COMPRESSED_FORMATS[fmt], cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                               params)
    if not ok:
        raise CodecError(f'OpenCV could not encode a {rgb.shape} image as {fmt}')
    name = 'png' if fmt == 'png' else 'jpeg'
    return f'rgb8; {name} compressed bgr8', encoded.tobytes()


def fill_compressed(msg: Any, rgb: np.ndarray, fmt: str = 'jpeg', quality: int = 90,
                    header: Any = None) -> Any:
    """Set `format` and `data` of an existing CompressedImage from (H, W, 3) uint8 RGB; returns
    `msg` (see rgb_to_compressed_bytes)."""
    msg.format, payload = rgb_to_compressed_bytes(rgb, fmt, quality)
    msg.data = _data_like(getattr(msg, 'data', None), np.frombuffer(payload, np.uint8))
    if header is not None:
        msg.header = header
    return msg


class MessageBuffer:
    """A reusable message payload: `data`, an array.array('B') that an rclpy message takes as its
    `data` without a copy, and `array`, a writable numpy view of it of `shape` and `dtype`.

    Fill `array` in place each frame (np.copyto, OpenCV dst=...), then set `msg.data = data`:
    no allocation and no copy per frame. The message must be published before the next fill.
    """

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype | type) -> None:
        dtype = np.dtype(dtype)
        self.data = pyarray.array('B', bytes(int(np.prod(shape)) * dtype.itemsize))
        self.array = np.frombuffer(self.data, dtype).reshape(shape)


def set_image_fields(msg: Any, height: int, width: int, encoding: str, data: Any,
                     header: Any = None) -> Any:
    """Set an Image's fields around a ready payload (little-endian, unpadded rows) without
    copying it: `data` is an array.array('B') for rclpy messages (MessageBuffer.data), any buffer
    otherwise (converted to the message's container like fill_image). Returns `msg`."""
    fmt = parse_encoding(encoding)
    step = int(width) * fmt.channels * fmt.dtype.itemsize
    if len(memoryview(data).cast('B')) != step * height:
        raise CodecError(f'payload of {len(memoryview(data).cast("B"))} bytes does not hold a '
                         f'{width}x{height} {encoding} image ({step * height} bytes)')
    msg.height, msg.width, msg.encoding = int(height), int(width), encoding
    msg.is_bigendian, msg.step = 0, step
    current = getattr(msg, 'data', None)
    if isinstance(data, pyarray.array) and isinstance(current, pyarray.array) and (
            '_data' in getattr(type(msg), '__slots__', ())):
        # rclpy's generated setter copies with array.array('B', value) unless the process runs
        # with ROS_PYTHON_CHECK_FIELDS=1: store the buffer itself (what that setter stores too)
        msg._data = data
    else:
        msg.data = _data_like(current, np.frombuffer(data, np.uint8))
    if header is not None:
        msg.header = header
    return msg


def header_stamp_ns(header: Any) -> int:
    """A std_msgs/Header's stamp (sec, nanosec) as integer nanoseconds."""
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def embedding_to_hwc(embedding: np.ndarray) -> np.ndarray:
    """(D, h, w) or (1, D, h, w) float32 -> contiguous (h, w, D) float32, to publish as 32FC<D>."""
    embedding = np.asarray(embedding)
    if embedding.ndim == 4 and embedding.shape[0] == 1:
        embedding = embedding[0]
    if embedding.ndim != 3 or embedding.dtype != np.float32:
        raise CodecError(f'expected a float32 (D, h, w) or (1, D, h, w) embedding, got '
                         f'{embedding.dtype} {embedding.shape}')
    D, h, w = embedding.shape
    if embedding.flags.c_contiguous and D <= 512:
        import cv2

        # reason: OpenCV's blocked transpose is ~1.7x faster than numpy's for (D, h*w) float32
        return cv2.transpose(embedding.reshape(D, h * w)).reshape(h, w, D)
    return np.ascontiguousarray(embedding.transpose(1, 2, 0))


def hwc_to_embedding(hwc: np.ndarray) -> np.ndarray:
    """(h, w, D) or (h, w) (D = 1) -> contiguous (D, h, w), same dtype; inverse of
    embedding_to_hwc (e.g. on image_to_array of a 32FC<D> Image)."""
    hwc = np.asarray(hwc)
    if hwc.ndim == 2:
        hwc = hwc[:, :, None]
    if hwc.ndim != 3:
        raise CodecError(f'expected an (h, w, D) or (h, w) array, got {hwc.dtype} {hwc.shape}')
    return np.ascontiguousarray(hwc.transpose(2, 0, 1))

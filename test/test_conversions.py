"""Message <-> numpy conversions (no ROS context needed, no engine)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CompressedImage, Image, PointCloud2, PointField
from std_msgs.msg import Header

from tinygpt_ros.ros import conversions as conv
from tinygpt_ros.spec.types import EVENT_DTYPE

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)


def _image(arr: np.ndarray, encoding: str, step: int | None = None, bigendian: bool = False):
    arr = np.ascontiguousarray(arr)
    h, w = arr.shape[:2]
    row = arr.reshape(h, -1).view(np.uint8).reshape(h, -1)
    step = step or row.shape[1]
    padded = np.zeros((h, step), np.uint8)
    padded[:, : row.shape[1]] = row
    return Image(height=h, width=w, encoding=encoding, is_bigendian=bigendian, step=step,
                 data=padded.tobytes())


def test_rgb8_roundtrip():
    assert np.array_equal(conv.image_to_rgb(_image(RGB, "rgb8")), RGB)
    assert np.array_equal(conv.image_to_rgb(conv.rgb_to_image(RGB)), RGB)


def test_rgb8_is_a_read_only_view_of_the_message():
    """No copy of a camera frame the engine only reads; nobody can write into the message."""
    msg = conv.rgb_to_image(RGB)
    out = conv.image_to_rgb(msg)
    assert np.shares_memory(out, conv._buffer(msg.data))
    assert not out.flags.writeable
    with pytest.raises(ValueError):
        out[0, 0, 0] = 1
    bgr = conv.image_to_rgb(conv.rgb_to_image(RGB, encoding="bgr8"))
    assert bgr.flags.writeable and not np.shares_memory(bgr, RGB)  # converted: a new array


def test_bgr8_channel_order():
    out = conv.image_to_rgb(_image(RGB[:, :, ::-1], "bgr8"))
    assert np.array_equal(out, RGB)
    red_bgr = np.zeros((2, 2, 3), np.uint8)
    red_bgr[..., 2] = 255  # red is the last channel in bgr8
    assert conv.image_to_rgb(_image(red_bgr, "bgr8"))[0, 0].tolist() == [255, 0, 0]
    assert np.array_equal(conv.image_to_rgb(conv.rgb_to_image(RGB, encoding="bgr8")), RGB)


def test_rgba8_and_bgra8_drop_alpha():
    alpha = np.full((5, 7, 1), 17, np.uint8)
    assert np.array_equal(conv.image_to_rgb(_image(np.concatenate([RGB, alpha], 2), "rgba8")), RGB)
    bgra = np.concatenate([RGB[:, :, ::-1], alpha], 2)
    assert np.array_equal(conv.image_to_rgb(_image(bgra, "bgra8")), RGB)


def test_mono8_replicated():
    mono = RGB[:, :, 0]
    out = conv.image_to_rgb(_image(mono, "mono8"))
    assert out.shape == (5, 7, 3)
    assert all(np.array_equal(out[:, :, c], mono) for c in range(3))


def test_mono16_scaling_little_and_big_endian():
    mono = np.array([[0, 255, 256, 0x1234], [0x8000, 0xFF00, 0xFFFF, 1]], np.uint16)
    expect = (mono >> 8).astype(np.uint8)
    little = conv.image_to_rgb(_image(mono.astype("<u2"), "mono16"))
    assert np.array_equal(little[:, :, 0], expect)
    big = conv.image_to_rgb(_image(mono.astype(">u2"), "mono16", bigendian=True))
    assert np.array_equal(big[:, :, 0], expect)
    assert big[0, 3].tolist() == [0x12] * 3


def test_rgb16_and_bgr16_keep_the_high_bytes():
    wide = RGB.astype(np.uint16) * 257 + 3  # high byte = the 8-bit value
    assert np.array_equal(conv.image_to_rgb(_image(wide, "rgb16")), RGB)
    assert np.array_equal(conv.image_to_rgb(_image(wide[:, :, ::-1], "bgr16")), RGB)
    alpha = np.full((5, 7, 1), 65535, np.uint16)
    bgra = np.concatenate([wide[:, :, ::-1], alpha], 2).astype(">u2")
    assert np.array_equal(conv.image_to_rgb(_image(bgra, "bgra16", bigendian=True)), RGB)


def _mosaic(rgb: np.ndarray, pattern: str) -> np.ndarray:
    """A Bayer sensor's raw frame of `rgb`: `pattern` names the 2x2 block's colours in row
    order, from the image's first pixel (ROS's naming)."""
    out = np.zeros(rgb.shape[:2], rgb.dtype)
    for k, colour in enumerate(pattern):
        dy, dx = divmod(k, 2)
        out[dy::2, dx::2] = rgb[dy::2, dx::2, "rgb".index(colour)]
    return out


@pytest.mark.parametrize("pattern", ["rggb", "bggr", "gbrg", "grbg"])
def test_bayer_mosaics_demosaic_to_their_colour(pattern):
    """A flat colour survives demosaicing only when the pattern is read the right way round:
    each of the four wrong readings swaps or mixes the channels of (200, 100, 30)."""
    colour = (200, 100, 30)
    rgb = np.empty((8, 10, 3), np.uint8)
    rgb[...] = colour
    out = conv.image_to_rgb(_image(_mosaic(rgb, pattern), f"bayer_{pattern}8"))
    assert out.shape == (8, 10, 3)
    assert np.abs(out[2:-2, 2:-2].astype(int) - colour).max() <= 2
    wide = _mosaic(rgb.astype(np.uint16) * 256, pattern)
    out16 = conv.image_to_rgb(_image(wide, f"bayer_{pattern}16"))
    assert np.abs(out16[2:-2, 2:-2].astype(int) - colour).max() <= 2


@pytest.mark.parametrize(("names", "layout"), [
    (("yuv422", "uyvy"), "UYVY"),  # U Y0 V Y1
    (("yuv422_yuy2", "yuyv"), "YUYV"),  # Y0 U Y1 V
])
def test_yuv422_byte_orders(names, layout):
    """Bytes written by hand: luma 200 with neutral chroma (128) is grey, in either order;
    read in the other order the same bytes would be luma 128 with chroma 200, a colour."""
    y, c = 200, 128
    pair = [c, y, c, y] if layout == "UYVY" else [y, c, y, c]
    raw = np.array(pair * 3, np.uint8).reshape(1, 6, 2).repeat(4, axis=0)  # 4 x 6 pixels
    for name in names:
        out = conv.image_to_rgb(_image(raw, name))
        assert out.shape == (4, 6, 3)
        assert np.ptp(out.astype(int), axis=2).max() <= 1  # grey: R = G = B
        assert abs(int(out[0, 0, 0]) - 211) <= 15  # luma 200 (video range) is light grey
    other = "yuyv" if layout == "UYVY" else "uyvy"
    assert np.ptp(conv.image_to_rgb(_image(raw, other)).astype(int), axis=2).max() > 20


def test_yuv422_of_a_colour_frame():
    """OpenCV's own encoder makes the bytes here; what is checked is that each ROS name reads
    them in its byte order."""
    rgb = np.empty((6, 8, 3), np.uint8)
    rgb[...] = (200, 100, 30)
    for code, names in ((cv2.COLOR_RGB2YUV_UYVY, ("yuv422", "uyvy")),
                        (cv2.COLOR_RGB2YUV_YUYV, ("yuv422_yuy2", "yuyv"))):
        raw = cv2.cvtColor(rgb, code)
        for name in names:
            out = conv.image_to_rgb(_image(raw, name))
            assert np.abs(out.astype(int) - (200, 100, 30)).max() <= 3


def test_step_padding_larger_than_row():
    msg = _image(RGB, "rgb8", step=7 * 3 + 11)
    assert np.array_equal(conv.image_to_rgb(msg), RGB)
    mono = np.arange(12, dtype=np.uint16).reshape(3, 4) * 1000
    padded = _image(mono, "mono16", step=4 * 2 + 6)
    assert np.array_equal(conv.image_to_rgb(padded)[:, :, 0], (mono >> 8).astype(np.uint8))


@pytest.mark.parametrize(
    ("mutate", "kind"),
    [
        (lambda m: setattr(m, "encoding", "32FC1"), "encoding"),
        (lambda m: (setattr(m, "encoding", "yuv422"), setattr(m, "step", 8)), "size"),
        (lambda m: setattr(m, "data", bytes(m.data)[:-1]), "size"),
        (lambda m: setattr(m, "step", 5), "size"),  # smaller than width*3
        (lambda m: (setattr(m, "height", 0), setattr(m, "data", b"")), "size"),
        (lambda m: setattr(m, "width", 0), "size"),
    ],
)
def test_bad_images_raise_with_kind(mutate, kind):
    msg = _image(RGB, "rgb8")
    mutate(msg)
    with pytest.raises(conv.ConversionError) as err:
        conv.image_to_rgb(msg)
    assert err.value.kind == kind
    assert isinstance(err.value, ValueError)
    assert "Image." in str(err.value)


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_compressed_roundtrip(fmt):
    smooth = np.zeros((16, 24, 3), np.uint8)
    smooth[..., 0], smooth[..., 2] = 200, 40  # red-ish, flat: survives jpeg
    out = conv.compressed_to_rgb(conv.rgb_to_compressed(smooth, fmt=fmt))
    assert out.shape == smooth.shape
    assert np.abs(out.astype(int) - smooth).max() <= (0 if fmt == "png" else 8)


@pytest.mark.parametrize(("size", "fmt", "scale"), [
    ((640, 480), "jpeg", 2), ((1920, 1080), "jpeg", 4), ((3840, 2160), "jpeg", 8),
    ((400, 300), "jpeg", 1), ((640, 480), "png", 1),
])
def test_large_jpeg_is_decoded_smaller_for_the_engine(size, fmt, scale):
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 127 // (w + h)], -1)
    msg = conv.rgb_to_compressed(rgb.astype(np.uint8), fmt=fmt)
    out, got = conv.decode_compressed(msg, conv.NO_LIMITS_GIVEN, 224)
    assert got == scale and out.shape == (-(-h // scale), -(-w // scale), 3)
    assert min(out.shape[:2]) >= 224
    full = conv.compressed_to_rgb(msg)  # everyone else still gets the full frame
    assert full.shape == (h, w, 3)
    # the same picture: the full frame shrunk by the same factor is within a few levels
    small = cv2.resize(full, (out.shape[1], out.shape[0]), interpolation=cv2.INTER_AREA)
    assert np.abs(small.astype(int) - out).mean() < 2.0
    assert conv.decode_compressed(msg)[1] == 1  # no min_side: full size


def test_compressed_image_transport_format_string():
    _, enc = cv2.imencode(".png", cv2.cvtColor(RGB, cv2.COLOR_RGB2BGR))
    msg = CompressedImage(format="rgb8; png compressed bgr8", data=enc.tobytes())
    assert np.array_equal(conv.compressed_to_rgb(msg), RGB)


def test_compressed_errors():
    good = conv.rgb_to_compressed(RGB)
    corrupt = CompressedImage(format="jpeg", data=bytes(good.data)[:20] + b"\x00" * 50)
    with pytest.raises(conv.ConversionError) as err:
        conv.compressed_to_rgb(corrupt)
    assert err.value.kind == "decode"
    with pytest.raises(conv.ConversionError) as err:
        conv.compressed_to_rgb(CompressedImage(format="jpeg", data=b""))
    assert err.value.kind == "size"
    with pytest.raises(conv.ConversionError) as err:
        conv.compressed_to_rgb(CompressedImage(format="h264", data=bytes(good.data)))
    assert err.value.kind == "encoding"


def test_token_mask_image():
    mask = np.zeros((14, 14), bool)
    mask[0, 1] = True
    img = conv.token_mask_to_image(mask, Header(frame_id="cam"))
    assert (img.height, img.width, img.encoding, img.step) == (224, 224, "mono8", 224)
    arr = np.frombuffer(bytes(img.data), np.uint8).reshape(224, 224)
    assert arr[0:16, 16:32].min() == 255 and arr[0:16, 0:16].max() == 0
    assert img.header.frame_id == "cam"


# ------------------------------------------------------------------------------------- events

STAMP = Time(sec=100, nanosec=500_000)  # 100 000 500 us


def _events(n: int = 6) -> np.ndarray:
    ev = np.zeros(n, EVENT_DTYPE)
    ev["x"] = np.arange(n) * 3
    ev["y"] = 127 - np.arange(n)
    ev["t"] = 100_000_500 + np.arange(n) * 10
    ev["p"] = np.arange(n) % 2
    return ev


def _cloud(columns: dict[str, np.ndarray], types: dict[str, int], bigendian: bool = False,
           pad: int = 0, row_pad: int = 0) -> PointCloud2:
    order = ">" if bigendian else "<"
    codes = {PointField.INT8: "i1", PointField.UINT8: "u1", PointField.INT16: "i2",
             PointField.UINT16: "u2", PointField.INT32: "i4", PointField.UINT32: "u4",
             PointField.FLOAT32: "f4", PointField.FLOAT64: "f8"}
    names = list(columns)
    dtype = np.dtype([(n, order + codes[types[n]]) for n in names] + [("_pad", f"V{pad}")]
                     if pad else [(n, order + codes[types[n]]) for n in names])
    n = len(next(iter(columns.values())))
    arr = np.zeros(n, dtype)
    for name in names:
        arr[name] = columns[name]
    row = arr.tobytes() + b"\x00" * row_pad
    fields = [PointField(name=nm, offset=dtype.fields[nm][1], datatype=types[nm], count=1)
              for nm in names]
    return PointCloud2(header=Header(stamp=STAMP, frame_id="dvs"), height=1, width=n,
                       fields=fields, is_bigendian=bigendian, point_step=dtype.itemsize,
                       row_step=len(row), data=row, is_dense=True)


def test_pointcloud2_roundtrip_relative_time():
    ev = _events()
    msg = conv.events_to_pointcloud2(ev, Header(stamp=STAMP))
    assert [f.name for f in msg.fields] == ["x", "y", "t", "p"]
    out = conv.pointcloud2_to_events(msg)
    assert out.dtype == EVENT_DTYPE
    assert np.array_equal(out, ev)


@pytest.mark.parametrize("bigendian", [False, True])
def test_pointcloud2_any_numeric_types(bigendian):
    ev = _events()
    cols = {"p": ev["p"].astype(np.int8), "t": (ev["t"] - 100_000_500).astype(np.float64),
            "y": ev["y"].astype(np.float32), "x": ev["x"].astype(np.int32)}
    types = {"p": PointField.INT8, "t": PointField.FLOAT64, "y": PointField.FLOAT32,
             "x": PointField.INT32}
    out = conv.pointcloud2_to_events(_cloud(cols, types, bigendian, pad=3, row_pad=5))
    assert np.array_equal(out, ev)


def test_pointcloud2_absolute_time_and_sorting():
    ev = _events()
    cols = {"x": ev["x"][::-1], "y": ev["y"][::-1], "t": ev["t"][::-1].astype(np.float64),
            "p": ev["p"][::-1]}
    types = {"x": PointField.UINT16, "y": PointField.UINT16, "t": PointField.FLOAT64,
             "p": PointField.UINT8}
    out = conv.pointcloud2_to_events(_cloud(cols, types), time_reference="absolute")
    assert np.array_equal(out, ev)  # re-sorted by t


def test_pointcloud2_polarity_nonzero_is_on():
    ev = _events(4)
    cols = {"x": ev["x"], "y": ev["y"], "t": np.zeros(4), "p": np.array([-1, 0, 1, 7])}
    types = {"x": PointField.UINT16, "y": PointField.UINT16, "t": PointField.FLOAT32,
             "p": PointField.INT16}
    assert conv.pointcloud2_to_events(_cloud(cols, types))["p"].tolist() == [0, 0, 1, 1]


def test_pointcloud2_errors():
    ev = _events()
    types = {"x": PointField.UINT16, "y": PointField.UINT16, "t": PointField.FLOAT32,
             "p": PointField.UINT8}
    cols = {"x": ev["x"], "y": ev["y"], "t": np.zeros(len(ev)), "p": ev["p"]}
    no_p = _cloud({k: v for k, v in cols.items() if k != "p"}, types)
    with pytest.raises(conv.ConversionError) as err:
        conv.pointcloud2_to_events(no_p)
    assert err.value.kind == "fields" and "'p'" in str(err.value)

    nan_t = dict(cols, t=np.array([0, 1, np.nan, 3, 4, 5], np.float32))
    with pytest.raises(conv.ConversionError) as err:
        conv.pointcloud2_to_events(_cloud(nan_t, types))
    assert err.value.kind == "values" and "'t'" in str(err.value)

    neg_x = dict(cols, x=np.array([-1, 0, 1, 2, 3, 4]))
    with pytest.raises(conv.ConversionError) as err:
        conv.pointcloud2_to_events(_cloud(neg_x, dict(types, x=PointField.INT16)))
    assert err.value.kind == "values"

    short = _cloud(cols, types)
    short.data = bytes(short.data)[:-2]
    with pytest.raises(conv.ConversionError) as err:
        conv.pointcloud2_to_events(short)
    assert err.value.kind == "size"

    bad_type = _cloud(cols, types)
    bad_type.fields[0].datatype = 42
    with pytest.raises(conv.ConversionError) as err:
        conv.pointcloud2_to_events(bad_type)
    assert err.value.kind == "fields"

    with pytest.raises(ValueError):
        conv.pointcloud2_to_events(_cloud(cols, types), time_reference="sometimes")


def test_pointcloud2_empty_is_empty_window():
    msg = conv.events_to_pointcloud2(np.zeros(0, EVENT_DTYPE), Header(stamp=STAMP))
    assert conv.pointcloud2_to_events(msg).size == 0


class _Packet:
    """Duck-typed event_camera_msgs/EventPacket: the conversions take any class with its fields
    (the generated type is tested in test_event_packet_node.py; the Jazzy leg lacks it).
    Sensor size 0 x 0: unknown, so coordinates are not checked against it."""

    def __init__(self, events: bytes, bigendian: bool = False, encoding: str = "mono") -> None:
        self.header = Header(stamp=STAMP, frame_id="dvs")
        self.height, self.width, self.seq = 0, 0, 0
        self.time_base = 5_000_000_000
        self.encoding, self.is_bigendian, self.events = encoding, bigendian, events


def _pack_mono(x, y, dt_ns, p, bigendian=False) -> bytes:
    u = np.uint64
    words = ((np.asarray(p, u) << u(63)) | (np.asarray(y, u) << u(48))
             | (np.asarray(x, u) << u(32)) | np.asarray(dt_ns, u))
    return words.astype(">u8" if bigendian else "<u8").tobytes()


@pytest.mark.parametrize("bigendian", [False, True])
def test_event_packet_mono_decoding(bigendian):
    x, y, p = [0, 127, 65535], [5, 32767, 0], [1, 0, 1]
    dt_ns = [0, 1_500, 4_000_000_000]
    pkt = _Packet(_pack_mono(x, y, dt_ns, p, bigendian), bigendian)
    rel = conv.event_packet_to_events(pkt)
    assert rel["x"].tolist() == x and rel["y"].tolist() == y and rel["p"].tolist() == p
    base_us = 100_000_500
    assert rel["t"].tolist() == [base_us, base_us + 1, base_us + 4_000_000]
    ab = conv.event_packet_to_events(pkt, time_reference="absolute")
    assert ab["t"].tolist() == [5_000_000, 5_000_001, 9_000_000]


def test_event_packet_errors():
    with pytest.raises(conv.ConversionError) as err:
        conv.event_packet_to_events(_Packet(b"\x00" * 12))
    assert err.value.kind == "size"
    with pytest.raises(conv.ConversionError) as err:
        conv.event_packet_to_events(_Packet(b"\x00" * 8, encoding="evt21"))
    assert err.value.kind == "encoding"
    with pytest.raises(conv.ConversionError, match="undefined type") as err:
        conv.event_packet_to_events(_Packet(b"\x00\x90", encoding="evt3"))
    assert err.value.kind == "decode"


# ------------------------------------------------------------------------ input limits


def test_image_header_size_of_jpeg_and_png_without_decoding():
    from bombs import bomb_jpeg, bomb_png

    from tinygpt_ros.ros.image_header import image_size

    for fmt in ("jpeg", "png"):
        msg = conv.rgb_to_compressed(np.zeros((48, 80, 3), np.uint8), fmt=fmt)
        size = image_size(msg.data)
        assert (size.format, size.width, size.height) == (fmt, 80, 48)
    ok, prog = cv2.imencode(".jpg", np.zeros((33, 17, 3), np.uint8),
                            [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    assert ok and (image_size(prog.tobytes()).width, image_size(prog.tobytes()).height) == (17, 33)
    assert image_size(bomb_jpeg(16000, 15000)).pixels == 240_000_000
    assert image_size(bomb_jpeg(16000, 16000, progressive=True)).pixels == 256_000_000
    assert (image_size(bomb_png(16000, 9000)).width, image_size(bomb_png(16000, 9000)).height) == (
        16000, 9000)


@pytest.mark.parametrize("data", [
    b"BM" + b"\x00" * 60,  # BMP: cv2.imdecode would read it, the node accepts jpeg/png only
    b"\xff\xd8\xff\xe0\x00\x10JFIF",  # truncated before the frame header
    b"\xff\xd8\xff\xda\x00\x08" + b"\x00" * 8,  # scan before any frame header
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIDAT",  # first chunk is not IHDR
])
def test_image_header_refuses_other_or_broken_data(data):
    from tinygpt_ros.ros.image_header import ImageHeaderError, image_size

    with pytest.raises(ImageHeaderError):
        image_size(data)
    with pytest.raises(conv.ConversionError) as err:
        conv.compressed_to_rgb(CompressedImage(format="jpeg", data=data))
    assert err.value.kind == "decode"


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_compressed_bomb_is_refused_from_its_header(fmt):
    from bombs import bomb_jpeg, bomb_png

    data = bomb_jpeg() if fmt == "jpeg" else bomb_png()
    assert len(data) < 1_000_000  # vs 768 MB decoded
    with pytest.raises(conv.ConversionError) as err:
        conv.compressed_to_rgb(CompressedImage(format=fmt, data=data))
    assert err.value.kind == "limit"
    assert "16000x16000" in str(err.value) and "max_image_pixels=8294400" in str(err.value)
    assert dict(err.value.details) == {
        "limit": "max_image_pixels", "limit_value": 8294400, "value": 256_000_000}


def test_limits_on_raw_images_bytes_and_events():
    small = conv.InputLimits(max_image_pixels=7 * 5, max_message_bytes=7 * 5 * 3,
                             max_events_per_message=3)
    assert np.array_equal(conv.image_to_rgb(_image(RGB, "rgb8"), small), RGB)  # at the limits
    big = _image(np.zeros((6, 7, 3), np.uint8), "rgb8")
    with pytest.raises(conv.ConversionError) as err:
        conv.image_to_rgb(big, conv.InputLimits(max_image_pixels=41))
    assert err.value.kind == "limit" and dict(err.value.details)["limit"] == "max_image_pixels"
    with pytest.raises(conv.ConversionError) as err:
        conv.image_to_rgb(big, small)
    assert dict(err.value.details) == {
        "limit": "max_message_bytes", "limit_value": 105, "value": 126}
    # A header that lies about its size is refused by the limit before anything is sized.
    liar = Image(height=16000, width=16000, encoding="rgb8", step=48000, data=b"\x00" * 10)
    with pytest.raises(conv.ConversionError) as err:
        conv.image_to_rgb(liar)
    assert err.value.kind == "limit"
    jpeg = conv.rgb_to_compressed(RGB)
    with pytest.raises(conv.ConversionError) as err:
        conv.compressed_to_rgb(jpeg, conv.InputLimits(max_message_bytes=len(jpeg.data) - 1))
    assert dict(err.value.details)["limit"] == "max_message_bytes"

    ev = np.zeros(4, EVENT_DTYPE)
    ev["t"] = conv.stamp_to_us(Time(sec=5)) + np.arange(4)
    cloud = conv.events_to_pointcloud2(ev, Header(stamp=Time(sec=5)))
    assert conv.pointcloud2_to_events(cloud, limits=conv.InputLimits(
        max_events_per_message=4)).size == 4
    with pytest.raises(conv.ConversionError) as err:
        conv.pointcloud2_to_events(cloud, limits=small)
    assert dict(err.value.details) == {
        "limit": "max_events_per_message", "limit_value": 3, "value": 4}
    with pytest.raises(conv.ConversionError) as err:
        conv.event_packet_to_events(_Packet(_pack_mono([1] * 4, [1] * 4, [0] * 4, [0] * 4)),
                                    limits=small)
    assert dict(err.value.details)["limit"] == "max_events_per_message"

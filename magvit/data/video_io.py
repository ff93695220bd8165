"""Video files <-> uint8 frames ``[T, H, W, 3]`` with PyAV (the I/O edge of the library).

Reading decodes every frame of the first video stream, optionally resizing the short side to ``size``
(inside FFmpeg's swscale, so a long high-resolution video never sits in memory at full size) and
centre-cropping to ``size x size``. Writing picks the codec from the extension:

==========  ===============  ==========================================================
extension   codec            notes
==========  ===============  ==========================================================
.mp4 .mov   libx264 yuv420p  lossy (``crf``); width and height must be even
.avi        mpeg4 yuv420p    lossy (fixed high bit rate); width and height must be even
.webm       libvpx-vp9       lossy (``crf``); width and height must be even
.mkv        ffv1 (lossless)  exact round trip; for tests and archival
.gif        gif pal8         256-colour palette per video (median cut), no dithering
==========  ===============  ==========================================================

Writes are atomic (temporary file, then rename). Also the two conversions between the I/O layout and
the library's video tensors: :func:`frames_to_video` and :func:`video_to_frames`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import attrs
import av
import numpy as np
import torch
from av.video.reformatter import Interpolation
from PIL import Image
from torch import Tensor

from magvit.data.atomic import atomic_path
from magvit.errors import InputError, MagvitError

__all__ = [
    "READ_EXTENSIONS",
    "WRITE_EXTENSIONS",
    "DecodedVideo",
    "VideoReadError",
    "decode_video",
    "frames_to_video",
    "read_video",
    "video_to_frames",
    "write_video",
]

#: Extensions treated as video files when ingesting a folder (compared case-insensitively).
READ_EXTENSIONS: tuple[str, ...] = (".mp4", ".avi", ".webm", ".mkv", ".gif", ".mov", ".m4v", ".mpg", ".mpeg")


@attrs.frozen
class _Codec:
    name: str
    pix_fmt: str
    options: dict[str, str]
    even_size: bool


def _codec_for(suffix: str, quality: int) -> _Codec:
    """The encoder for an output extension; ``quality`` is the crf of H.264/VP9 (lower is better)."""
    table = {
        ".mp4": _Codec("libx264", "yuv420p", {"crf": str(quality), "preset": "medium"}, True),
        ".mov": _Codec("libx264", "yuv420p", {"crf": str(quality), "preset": "medium"}, True),
        ".avi": _Codec("mpeg4", "yuv420p", {}, True),
        ".webm": _Codec("libvpx-vp9", "yuv420p", {"crf": str(quality), "b": "0"}, True),
        ".mkv": _Codec("ffv1", "bgr0", {}, False),
        ".gif": _Codec("gif", "pal8", {}, False),
    }
    if suffix not in table:
        raise InputError(f"cannot write video with extension {suffix!r}; use one of {', '.join(table)}")
    return table[suffix]


#: Extensions :func:`write_video` can write.
WRITE_EXTENSIONS: tuple[str, ...] = (".mp4", ".mov", ".avi", ".webm", ".mkv", ".gif")


class VideoReadError(MagvitError):
    """A file that exists but cannot be decoded as a video (corrupt, truncated, not a video, no frames)."""


# -- reading ----------------------------------------------------------------------------------------


def _resize_plan(width: int, height: int, size: int) -> tuple[int, int, int, int]:
    """Short side -> ``size`` (aspect kept), then the offsets of the central ``size x size`` crop."""
    scale = size / min(width, height)
    new_w = max(size, round(width * scale))
    new_h = max(size, round(height * scale))
    return new_w, new_h, (new_h - size) // 2, (new_w - size) // 2


@attrs.frozen
class DecodedVideo:
    """The frames of a video file and the frame count its container header states.

    Attributes:
        frames: uint8 ``[T, H, W, 3]``.
        header_frames: frames the header promises (``nb_frames``); None when the container does not say
            (gif, webm, mkv).
    """

    frames: np.ndarray
    header_frames: int | None

    @property
    def short(self) -> bool:
        """Fewer frames decoded than the header promises: a truncated or damaged file."""
        return self.header_frames is not None and len(self.frames) < self.header_frames


def _decoded_frames(path: Path, size: int | None, header: list[int | None]) -> Iterator[np.ndarray]:
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise VideoReadError(f"{path}: no video stream")
        stream = container.streams.video[0]
        header.append(int(stream.frames) or None)  # 0: not recorded
        stream.thread_type = "AUTO"  # frame/slice threads: decoding is the cost of ingestion
        for frame in container.decode(stream):
            if size is None:
                yield frame.to_ndarray(format="rgb24")
                continue
            new_w, new_h, top, left = _resize_plan(frame.width, frame.height, size)
            # AREA averages when shrinking (no aliasing); bicubic when a small video is enlarged.
            interp = Interpolation.AREA if new_w <= frame.width else Interpolation.BICUBIC
            rgb = frame.reformat(width=new_w, height=new_h, format="rgb24", interpolation=interp).to_ndarray()
            yield rgb[top : top + size, left : left + size]


def decode_video(path: str | os.PathLike[str], *, size: int | None = None) -> DecodedVideo:
    """:func:`read_video`, with the frame count the file's header states (to notice a truncated file).

    A file cut short often still decodes up to the cut (an mp4 whose index is at its start, an avi): its
    frames are returned, and :attr:`DecodedVideo.short` tells the caller.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video file {path} does not exist")
    if size is not None and size < 1:
        raise InputError(f"size must be a positive number of pixels, got {size}")
    header: list[int | None] = []
    try:
        frames = list(_decoded_frames(path, size, header))
    except VideoReadError:
        raise
    except (av.FFmpegError, OSError, ValueError, EOFError, IndexError) as exc:
        raise VideoReadError(f"{path}: cannot decode ({type(exc).__name__}: {exc})") from exc
    if not frames:
        raise VideoReadError(f"{path}: the video stream holds no decodable frames")
    return DecodedVideo(np.stack(frames), header[0])


def read_video(path: str | os.PathLike[str], *, size: int | None = None) -> np.ndarray:
    """Decode the first video stream of ``path`` to uint8 frames ``[T, H, W, 3]`` (RGB).

    Args:
        path: a video file (any container/codec FFmpeg decodes: mp4, avi, webm, mkv, gif, ...).
        size: if given, resize the short side to ``size`` and centre-crop to ``size x size``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        VideoReadError: the file cannot be decoded (corrupt, truncated, not a video) or has no frames.
    """
    return decode_video(path, size=size).frames


# -- writing ----------------------------------------------------------------------------------------


def _as_frames(frames: np.ndarray | Tensor) -> np.ndarray:
    array = frames.detach().cpu().numpy() if isinstance(frames, Tensor) else np.asarray(frames)
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] != 3 or array.shape[0] < 1:
        raise InputError(
            f"write_video expects uint8 frames [T, H, W, 3] with T >= 1, got {array.dtype} {tuple(array.shape)}; "
            "convert a float video [3, T, H, W] in [0, 1] with magvit.data.video_to_frames first"
        )
    return np.ascontiguousarray(array)


def _palette_frames(frames: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """One median-cut palette for the whole clip (stable colours over time) and each frame's indices."""
    t, h, w, _ = frames.shape
    montage = Image.fromarray(frames.reshape(t * h, w, 3))
    paletted = montage.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    indices = np.asarray(paletted, dtype=np.uint8).reshape(t, h, w)
    rgb = np.zeros((256, 3), dtype=np.uint8)
    used = np.asarray(paletted.getpalette()[: 3 * 256], dtype=np.uint8).reshape(-1, 3)
    rgb[: len(used)] = used
    argb = np.concatenate([np.full((256, 1), 255, dtype=np.uint8), rgb], axis=1)
    return list(indices), argb


def _encode(tmp: Path, frames: np.ndarray, codec: _Codec, fps: float, fmt: str) -> None:
    _, h, w, _ = frames.shape
    with av.open(str(tmp), mode="w", format=fmt) as container:
        stream = container.add_stream(codec.name, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = w, h, codec.pix_fmt
        stream.options = codec.options
        if codec.name == "mpeg4":
            # FFmpeg's mpeg4 ignores crf/qscale passed as options; 4 bits per pixel is near-lossless.
            stream.bit_rate = max(1_000_000, int(4 * w * h * fps))
        if codec.pix_fmt == "pal8":
            indices, palette = _palette_frames(frames)
            video_frames = (av.VideoFrame.from_ndarray((idx, palette), format="pal8") for idx in indices)
        else:
            video_frames = (av.VideoFrame.from_ndarray(f, format="rgb24") for f in frames)
        for frame in video_frames:
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def write_video(
    path: str | os.PathLike[str], frames: np.ndarray | Tensor, *, fps: float = 8.0, quality: int = 18
) -> Path:
    """Write uint8 frames ``[T, H, W, 3]`` to ``path`` atomically; the extension picks the codec.

    Args:
        path: output file; ``.mp4``/``.mov`` (H.264), ``.avi`` (MPEG-4), ``.webm`` (VP9), ``.mkv``
            (lossless FFV1) or ``.gif``.
        frames: uint8 RGB frames (numpy array or tensor).
        fps: frame rate.
        quality: crf for H.264/VP9 (0 best, 18 visually lossless, 51 worst). Ignored for MPEG-4 (.avi,
            written at a fixed high bit rate) and the lossless/palette formats.

    Returns:
        the path written.
    """
    path = Path(path)
    codec = _codec_for(path.suffix.lower(), quality)
    array = _as_frames(frames)
    _, h, w, _ = array.shape
    if codec.even_size and (h % 2 or w % 2):
        raise InputError(
            f"{path.suffix} ({codec.name}, {codec.pix_fmt}) needs even width and height, got {w}x{h}; "
            "crop or pad the frames, or write .mkv (lossless) or .gif"
        )
    if fps <= 0:
        raise InputError(f"fps must be positive, got {fps}")
    fmt = {".mkv": "matroska", ".mov": "mov", ".webm": "webm"}.get(path.suffix.lower(), path.suffix.lower()[1:])
    with atomic_path(path) as tmp:
        _encode(tmp, array, codec, fps, fmt)
    return path


# -- layout conversions -----------------------------------------------------------------------------


def frames_to_video(frames: Tensor) -> Tensor:
    """uint8 ``[..., T, H, W, C]`` -> contiguous float ``[..., C, T, H, W]`` in [0, 1] (value / 255).

    One pass converts dtype and layout together; works for a single clip or a batch.
    """
    if frames.dtype != torch.uint8 or frames.dim() < 4:
        raise InputError(f"frames must be uint8 [..., T, H, W, C], got {frames.dtype} {tuple(frames.shape)}")
    moved = frames.movedim(-1, -4)
    video = torch.empty(moved.shape, dtype=torch.float32)
    video.copy_(moved)
    return video.div_(255.0)


def video_to_frames(video: Tensor) -> Tensor:
    """Float ``[..., C, T, H, W]`` in [0, 1] -> uint8 ``[..., T, H, W, C]`` (clamped, rounded to nearest)."""
    if not video.is_floating_point() or video.dim() < 4:
        raise InputError(f"video must be float [..., C, T, H, W], got {video.dtype} {tuple(video.shape)}")
    scaled = video.detach().float().clamp(0.0, 1.0).mul(255.0).round_()
    return scaled.to(torch.uint8).movedim(-4, -1).contiguous().cpu()

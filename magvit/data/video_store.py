"""Stored videos in shards (``store: video``): segments of a source video as H.264 mp4 members, and a clip
cut from one at a start drawn anew every epoch.

The ``frames`` store fixes every clip at ingestion; here a sample keeps a whole segment of its source video,
so each epoch sees other clips of it (temporal augmentation across epochs), in a small fraction of the raw
bytes (measured in ``benchmarks/README.md``). Encoding and decoding are PyAV (FFmpeg):

* **Encoding** (:func:`encode_segment`): libx264, yuv420p (so width and height must be even), crf 18 -- what
  x264 calls visually lossless. The sources are themselves lossy (UCF-101, Kinetics and SSv2 come as
  compressed video), so this is a second generation; at crf 18 the loss it adds stays well below a video
  tokenizer's own reconstruction error, whose targets these clips are. A keyframe every 32 frames (two
  16-frame clips) bounds what the reader decodes before a clip's first frame.
* **Decoding** (:func:`read_clip`): seek to the keyframe at or before the clip's start, decode forward to the
  clip's last frame, convert to RGB through one shared ``VideoReformatter`` (one swscale context per clip
  rather than one per frame, which costs more than the decoding at 128x128). One decoder thread: the reader's
  parallelism is its DataLoader workers, one core each.
* **Where a clip starts** (:func:`clip_start`): training draws it uniformly from a generator seeded by
  ``(data seed, epoch, sample key)``, so an epoch gives the same clips whatever the number of ranks or
  workers, and a resumed epoch replays them exactly; evaluation takes the first frames of the segment.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from fractions import Fraction

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from magvit.data.clips import clip_span
from magvit.data.shard_format import VideoStore
from magvit.errors import InputError

__all__ = ["CLIP_STARTS", "clip_start", "encode_segment", "read_clip", "segment_bounds"]

#: How the reader picks a clip in a stored video: a per-epoch random start (training) or the first frames.
CLIP_STARTS: tuple[str, ...] = ("random", "first")


def segment_bounds(num_frames: int, span: int, max_segment_frames: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of the segments a ``num_frames``-frame video is stored as (empty if shorter than ``span``).

    The video is split into ``ceil(num_frames / max_segment_frames)`` near-equal consecutive segments, but never
    into more than ``num_frames // span``, so that every segment holds at least one clip of ``span`` frames (a
    segment is then up to ``span - 1`` frames longer than ``max_segment_frames``).
    """
    if max_segment_frames < span:
        raise InputError(f"max_segment_frames must be at least one clip ({span} frames), got {max_segment_frames}")
    if num_frames < span:
        return []
    count = min(-(-num_frames // max_segment_frames), num_frames // span)
    edges = [i * num_frames // count for i in range(count + 1)]
    return list(zip(edges[:-1], edges[1:], strict=True))


def encode_segment(frames: np.ndarray, store: VideoStore) -> bytes:
    """uint8 frames ``[T, H, W, 3]`` (even H and W) -> the bytes of an mp4 file encoded as ``store`` says."""
    t, h, w, _ = frames.shape
    if h % 2 or w % 2:
        raise InputError(f"{store.pix_fmt} video needs an even width and height, got {w}x{h}")
    out = io.BytesIO()
    with av.open(out, mode="w", format="mp4") as container:
        stream = container.add_stream(store.codec, rate=Fraction(store.fps))
        stream.width, stream.height, stream.pix_fmt = w, h, store.pix_fmt
        stream.options = {"crf": str(store.crf), "preset": "medium", "g": str(store.keyframe_interval),
                          "keyint_min": str(store.keyframe_interval)}
        for index in range(t):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frames[index]), format="rgb24")
            frame.pts = index  # in 1/fps: the reader finds frame i at time i / fps
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return out.getvalue()


def clip_start(seed: int, epoch: int, key: str, num_starts: int) -> int:
    """The start frame, in ``[0, num_starts)``, of sample ``key``'s clip in ``epoch``: a pure function of its
    arguments (the key is hashed with BLAKE2, not ``hash()``, which differs between processes)."""
    digest = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")
    rng = np.random.default_rng([seed % 2**64, epoch % 2**64, digest])
    return int(rng.integers(num_starts))


def read_clip(data: bytes, *, frames: int, stride: int, start_of: Callable[[int], int]) -> np.ndarray:
    """The clip of ``frames`` frames, every ``stride``-th, of the mp4 ``data``, as uint8 ``[frames, H, W, 3]``.

    ``start_of(num_starts)`` picks its first frame among the ``num_starts`` that fit (the header's frame count).

    Raises:
        ValueError: the video is shorter than one clip, or decodes fewer frames than its header states.
        av.FFmpegError: the bytes are not a decodable video.
    """
    span = clip_span(frames, stride)
    with av.open(io.BytesIO(data), mode="r") as container:
        if not container.streams.video:
            raise ValueError("the member holds no video stream")
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        num_frames = stream.frames
        if num_frames < span:
            raise ValueError(f"the video has {num_frames} frames, a clip needs {span}")
        start = start_of(num_frames - span + 1)
        ticks = 1 / (stream.time_base * stream.average_rate)  # time_base units per frame
        first_pts = stream.start_time or 0
        if start > 0:
            container.seek(first_pts + round(start * ticks), stream=stream, backward=True, any_frame=False)
        reformatter = VideoReformatter()
        clip: list[np.ndarray] = []
        for frame in container.decode(stream):
            if frame.pts is None:
                raise ValueError("a decoded frame has no timestamp")
            index = round((frame.pts - first_pts) / ticks)
            if index < start or (index - start) % stride:
                continue
            clip.append(reformatter.reformat(frame, format="rgb24").to_ndarray())
            if len(clip) == frames:
                return np.stack(clip)
    raise ValueError(f"the video decoded {len(clip)} of the {frames} frames of the clip at frame {start}")

"""Videos in and out, with PyAV (FFmpeg's libraries): upright RGB frames in batches, and mask and RGBA videos
with the input's frame count, size and timestamps.

- :func:`open_video` reads a video's frames as (n, H, W, 3) uint8 RGB batches with their timestamps. Phone videos
  are turned upright (their rotation is only visible on decoded frames, so the first frame is decoded on
  opening, which also fails early on an undecodable stream). Every failure, on opening or mid-stream, is a
  :class:`~pdfnet.errors.VideoReadError` naming the file in one line.
- :class:`MaskVideoWriter`: ``<stem>_mask.mp4``, the mask as grey H.264 (libx264, yuv420p, High profile, no
  B-frames), which plays everywhere; odd sizes, which 4:2:0 cannot code, as 4:0:0 H.264 tagged full range.
- :class:`RgbaVideoWriter`: ``<stem>_rgba.webm``, VP9 with an alpha plane (yuva420p), BT.709, and the input's
  audio (Opus and Vorbis copied, others transcoded to Opus), interleaved with the video as it is written.

Both writers write to a hidden temporary file beside the target and rename it on :meth:`close`; an exception
inside their ``with`` block deletes it, so an interrupted run never leaves a partial video.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from .errors import OutputError, VideoReadError
from .io import VIDEO_SUFFIXES, atomic_path

__all__ = [
    "VIDEO_SUFFIXES",
    "FrameBatch",
    "MaskVideoWriter",
    "RgbaVideoWriter",
    "VideoInfo",
    "VideoReader",
    "decode_alpha_video",
    "open_video",
]

# Above this size an unknown frame total (Matroska and WebM headers hold none) is estimated from the duration
# rather than counted by a demux pass (which reads the whole file but decodes nothing).
COUNT_PASS_MAX_BYTES = 2 * 1024**3
MASK_ENCODERS = ("libx264", "mpeg4")  # best first; mpeg4 (part 2) is in every FFmpeg build, browsers don't play it
_BT709 = 1  # the AVCOL_* value of BT.709 for the matrix, primaries and transfer tags
_LIMITED_RANGE, _FULL_RANGE = 1, 2


@dataclass
class VideoInfo:
    """What a reader knows about its video before decoding it all."""

    path: str
    width: int  # the display size, after the rotation is applied
    height: int
    rotation: int  # counter-clockwise degrees from the display matrix; frames are turned upright
    fps: Fraction  # average frame rate
    time_base: Fraction  # of the timestamps (``FrameBatch.pts``)
    frame_count: int  # for a progress bar: exact from the header or a count, else estimated (0: unknown)
    frame_count_exact: bool
    vfr: bool  # variable frame rate: the average rate differs from the base rate
    sample_aspect_ratio: Fraction | None
    has_audio: bool
    warnings: list[str] = field(default_factory=list)


@dataclass
class FrameBatch:
    """Consecutive frames: ``frames`` (n, H, W, 3) uint8 RGB upright; ``pts`` strictly increasing and
    ``durations``, in the video's time base; ``start`` the index of the first frame."""

    frames: np.ndarray
    pts: list[int]
    durations: list[int]
    start: int

    def __len__(self) -> int:
        return len(self.frames)


def open_video(path: str | os.PathLike) -> VideoReader:
    """A reader of the video at ``path`` (use it as a context manager).

    Raises:
        VideoReadError: naming the file, when it is missing, empty, not a video, or has no decodable frame.
    """
    return VideoReader(path)


class VideoReader:
    """One pass over a video's frames, in batches (:func:`open_video`). Corrupt or truncated data raises
    :class:`VideoReadError` where it is met, naming the frame it is near."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        self.frames_read = 0
        self._packets_read = 0
        self._container = None
        if os.path.isdir(self.path):
            raise VideoReadError(f"cannot read video {self.path}: it is a folder")
        if not os.path.exists(self.path):
            raise VideoReadError(f"no such video: {self.path}")
        if os.path.getsize(self.path) == 0:
            raise VideoReadError(f"cannot read video {self.path}: empty file (0 bytes)")
        try:
            self._container = av.open(self.path, "r")
            self._open_stream()
        except VideoReadError:
            self.close()
            raise
        except Exception as e:  # FFmpeg raises many types; each becomes one line naming the file
            self.close()
            raise self._error(_reason(e)) from None

    def _open_stream(self) -> None:
        container = self._container
        if "_pipe" in container.format.name or "image2" in container.format.name:
            # FFmpeg opens a PNG named .mp4 as a one-frame video
            raise self._error(f"an image file, not a video (FFmpeg format {container.format.name!r})")
        streams = [
            s for s in container.streams.video if not int(s.disposition) & int(av.stream.Disposition.attached_pic)
        ]
        if not streams:  # cover art (attached_pic) is a "video" stream of audio files
            raise self._error("no video stream" + (" (audio only)" if container.streams.audio else ""))
        stream = self._stream = streams[0]
        stream.thread_type = "AUTO"  # frame threads: 2-3x faster decoding of 1080p H.264
        # mp4/mov and avi index every packet, so a file cut between two frames is noticed; Matroska's cues list
        # keyframes only
        indexed = "mp4" in container.format.name or container.format.name == "avi"
        self._indexed_packets = len(stream.index_entries) if indexed else 0
        time_base = stream.time_base or Fraction(1, 90000)
        fps = stream.average_rate or stream.guessed_rate or stream.base_rate or Fraction(25)
        self._frame_step = max(round(1 / (fps * time_base)), 1)  # pts units per frame
        self._last_pts: int | None = None
        self._decoded = self._decode()
        self._pending = next(self._decoded, None)
        if self._pending is None:
            raise self._error("the video stream has no decodable frames")
        rotation = round(self._pending.rotation or 0)
        self._quarter_turns = round(rotation / 90) % 4
        self._coded_size = (self._pending.width, self._pending.height)
        width, height = self._coded_size[::-1] if self._quarter_turns % 2 else self._coded_size
        self.info = VideoInfo(
            path=self.path,
            width=width,
            height=height,
            rotation=rotation,
            fps=fps,
            time_base=time_base,
            frame_count=0,
            frame_count_exact=False,
            vfr=bool(stream.base_rate and stream.average_rate and stream.base_rate != stream.average_rate),
            sample_aspect_ratio=stream.sample_aspect_ratio,
            has_audio=bool(container.streams.audio),
        )
        if rotation % 90:
            self.info.warnings.append(f"rotation of {rotation} degrees rounded to {self._quarter_turns * 90}")
        self.info.frame_count, self.info.frame_count_exact = self._frame_total(fps, time_base)

    def _frame_total(self, fps: Fraction, time_base: Fraction) -> tuple[int, bool]:
        stream = self._stream
        if stream.frames > 0:  # mp4, mov, avi headers
            return stream.frames, True
        if os.path.getsize(self.path) <= COUNT_PASS_MAX_BYTES:
            counted = _count_packets(self.path, stream.index)
            if counted:
                return counted, True
        seconds = float(stream.duration * time_base) if stream.duration else (self._container.duration or 0) / 1e6
        return max(round(seconds * fps), 0), False

    def _decode(self) -> Iterator[av.VideoFrame]:
        demuxer = self._container.demux(self._stream)
        while True:
            try:
                packet = next(demuxer)
            except StopIteration:
                return
            except Exception as e:
                raise self._error(
                    f"truncated or corrupt: reading failed near frame {self._near()} ({_reason(e)})"
                ) from None
            if packet.size:
                self._packets_read += 1
                if packet.is_corrupt:  # a short read: the file ends inside this packet (the decoder stays silent)
                    raise self._error(f"truncated: frame data cut short near frame {self._near()}")
            elif self._packets_read < self._indexed_packets:  # the flush packet comes before the index's last
                listed = self._indexed_packets
                raise self._error(f"truncated: the file ends after {self._packets_read} of {listed} frames")
            try:
                frames = packet.decode()  # the final, empty packet flushes the decoder
            except Exception as e:
                raise self._error(
                    f"corrupt video data: decoding failed near frame {self._near()} ({_reason(e)})"
                ) from None
            yield from frames

    def _near(self) -> str:
        total = getattr(self, "info", None) and self.info.frame_count
        return f"{self._packets_read} of {total}" if total else str(self._packets_read)

    def _error(self, reason: str) -> VideoReadError:
        return VideoReadError(f"cannot read video {self.path}: {reason}")

    def frames(self) -> Iterator[tuple[np.ndarray, int, int]]:
        """``(rgb (H, W, 3) uint8, pts, duration)`` one frame at a time (iterable once)."""
        while True:
            frame, self._pending = self._pending, None
            if frame is None:
                frame = next(self._decoded, None)
            if frame is None:
                return
            if (frame.width, frame.height) != self._coded_size:  # a size change mid-stream: the first one's
                rgb = frame.to_ndarray(format="rgb24", width=self._coded_size[0], height=self._coded_size[1])
            else:
                rgb = frame.to_ndarray(format="rgb24")  # converted with the frame's own matrix and range tags
            self.frames_read += 1
            duration = frame.duration if frame.duration and frame.duration > 0 else self._frame_step
            yield np.rot90(rgb, self._quarter_turns), self._next_pts(frame), int(duration)

    def _next_pts(self, frame: av.VideoFrame) -> int:
        pts = frame.pts if frame.pts is not None else frame.dts
        if pts is None:
            pts = 0 if self._last_pts is None else self._last_pts + self._frame_step
        if self._last_pts is not None and pts <= self._last_pts:  # keep them strictly increasing
            pts = self._last_pts + 1
        self._last_pts = int(pts)
        return self._last_pts

    def batches(self, size: int) -> Iterator[FrameBatch]:
        """:class:`FrameBatch` es of ``size`` frames (the last one shorter), each a fresh array."""
        batch, pts, durations, start = [], [], [], 0
        for rgb, p, d in self.frames():
            batch.append(rgb)
            pts.append(p)
            durations.append(d)
            if len(batch) == size:
                yield FrameBatch(np.stack(batch), pts, durations, start)
                start += size
                batch, pts, durations = [], [], []
        if batch:
            yield FrameBatch(np.stack(batch), pts, durations, start)

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _reason(error: BaseException) -> str:
    """A short reason for an FFmpeg error, without its log."""
    if isinstance(error, av.error.InvalidDataError):
        return "not a video file, or truncated or corrupt (FFmpeg: invalid data)"
    if isinstance(error, av.error.DecoderNotFoundError):
        return "no decoder for its codec in this FFmpeg"
    if isinstance(error, av.error.PermissionError | PermissionError):
        return "permission denied"
    if isinstance(error, av.error.FFmpegError):
        return f"FFmpeg: {error.strerror or error}"
    return f"{type(error).__name__}: {error}"


def _count_packets(path: str, index: int) -> int:
    """The number of video packets by a demux pass (nothing decoded); 0 if it fails (it is only a total)."""
    try:
        with av.open(path, "r") as container:
            return sum(1 for packet in container.demux(container.streams[index]) if packet.size)
    except Exception:
        return 0


# ----------------------------------------------------------------------------------------------------- writing


@functools.cache
def encoder_works(name: str, pix_fmt: str = "yuv420p", width: int = 64, height: int = 64) -> bool:
    """Whether this FFmpeg has the video encoder ``name`` and it opens (h264_nvenc is listed in PyAV's wheel,
    but opens only with an NVIDIA driver)."""
    try:
        codec = av.CodecContext.create(name, "w")
        codec.width, codec.height, codec.pix_fmt = width, height, pix_fmt
        codec.time_base, codec.framerate = Fraction(1, 25), Fraction(25)
        codec.open()
        return True
    except Exception:
        return False


def _as_uint8(masks: np.ndarray) -> np.ndarray:
    """uint8 0..255 from uint8, bool or float 0..1 masks."""
    masks = np.asarray(masks)
    if masks.dtype == bool:
        return masks.astype(np.uint8) * 255
    if np.issubdtype(masks.dtype, np.floating):
        return (np.clip(masks, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return masks.astype(np.uint8, copy=False)


class _VideoWriter:
    """What both writers share: the temporary file, timestamps and the muxing of packets. ``metadata`` is written
    as the container's tags (what made the video: :mod:`pdfnet.provenance`)."""

    container_format = "mp4"

    def __init__(self, path: str | os.PathLike, info: VideoInfo, metadata: dict[str, str] | None = None) -> None:
        self.path = Path(path)
        self.width, self.height, self.fps = info.width, info.height, info.fps
        self.in_time_base = self.time_base = info.time_base
        self.frames_written = 0
        self.warnings: list[str] = []
        # When the input's ticks cannot express the frame rate (30000/1001 fps in Matroska's 1 ms ticks), write
        # in 1 / lcm ticks and snap frames within a tick of the rate's grid onto it: otherwise an mp4 reads back
        # as 29.985 fps.
        self._snap = False
        step = 1 / (self.fps * self.in_time_base)
        if not info.vfr and step.denominator != 1 and self.in_time_base.numerator == 1:
            lcm = math.lcm(self.fps.numerator, self.in_time_base.denominator)
            if lcm <= 1_000_000:
                self._snap, self.time_base = True, Fraction(1, lcm)
        self._last_pts: int | None = None
        self._durations: dict[int, int] = {}
        self._audio: _AudioCopy | None = None
        # atomic_path driven by hand: entered here, left on close (renamed) or abort (deleted)
        self._atomic = atomic_path(self.path)
        self._output = None
        self._closed = False
        tmp = self._atomic.__enter__()
        try:
            # mp4 keeps a tag of its own name only when told to
            options = {"movflags": "use_metadata_tags"} if self.container_format == "mp4" else {}
            self._output = av.open(os.fspath(tmp), "w", format=self.container_format, options=options)
            self._output.metadata.update(metadata or {})  # what made the video (pdfnet.provenance)
            self._add_streams(info)
        except Exception as e:
            self.abort()
            raise OutputError(f"cannot write {self.path}: {_reason(e)}") from None

    def _add_streams(self, info: VideoInfo) -> None:
        raise NotImplementedError

    def _add_stream(self, codec: str, pix_fmt: str, options: dict[str, str], sar: Fraction | None):
        stream = self._output.add_stream(codec, rate=self.fps)
        stream.width, stream.height, stream.pix_fmt = self.width, self.height, pix_fmt
        stream.codec_context.time_base = stream.time_base = self.time_base  # mp4 keeps it as the track's timescale
        if sar and sar != 1:
            stream.codec_context.sample_aspect_ratio = sar
        stream.options = options
        self._stream = stream
        return stream

    def _encode(self, frame: av.VideoFrame, pts: int, duration: int | None) -> None:
        pts, duration = self._retime(pts, duration)
        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1
        self._last_pts = frame.pts = pts
        frame.time_base = self.time_base
        # Encoders (libx264 too) leave packet durations at 0; the mp4 muxer would then guess the last one and
        # the frame rate read back would drift: carry the input's over.
        self._durations[pts] = duration if duration and duration > 0 else self._frame_ticks()
        try:
            for packet in self._stream.encode(frame):
                self._mux(packet)
        except Exception as e:
            raise OutputError(f"cannot write {self.path}: {_reason(e)}") from None
        self.frames_written += 1

    def _frame_ticks(self) -> int:
        return max(round(1 / (self.fps * self.time_base)), 1)

    def _retime(self, pts: int, duration: int | None) -> tuple[int, int | None]:
        """Input pts and duration (input time base) -> the output's."""
        if self.time_base == self.in_time_base:
            return pts, duration
        t = pts * self.in_time_base
        grid = round(t * self.fps) / self.fps
        if self._snap and abs(grid - t) <= self.in_time_base:
            t = grid
            if duration:
                duration = max(round(duration * self.in_time_base * self.fps), 1) / self.fps / self.time_base
        elif duration:
            duration = duration * self.in_time_base / self.time_base
        return round(t / self.time_base), (round(duration) if duration else None)

    def _mux(self, packet) -> None:
        duration = self._durations.pop(packet.pts, None)
        if duration:
            packet.duration = duration
        self._output.mux(packet)

    def _check(self, count: int, pts: Sequence[int], durations: Sequence[int] | None) -> Sequence[int | None]:
        if len(pts) != count or (durations is not None and len(durations) != count):
            raise ValueError(f"{count} frames but {len(pts)} timestamps")
        return durations if durations is not None else [None] * count

    def _copy_audio(self, seconds: float) -> None:
        """Mux the audio up to ``seconds``; an audio error costs the audio, not the video."""
        if self._audio is None:
            return
        try:
            self._audio.copy_until(self._output, seconds)
        except Exception as e:
            self.warnings.append(f"audio dropped after an error: {_reason(e)}")
            self._audio.close()
            self._audio = None

    def close(self) -> None:
        """Finish the file and rename it into place."""
        if self._closed:
            return
        try:
            for packet in self._stream.encode(None):
                self._mux(packet)
            self._copy_audio(math.inf)
            self._output.close()
        except Exception as e:
            self.abort()
            raise OutputError(f"cannot write {self.path}: {_reason(e)}") from None
        self._closed = True
        self._atomic.__exit__(None, None, None)

    def abort(self) -> None:
        """Stop and delete the temporary file."""
        if self._closed:
            return
        self._closed = True
        for closable in (self._output, self._audio):
            try:
                if closable is not None:
                    closable.close()
            except Exception:  # the file is deleted anyway
                pass
        aborted = OutputError(f"writing {self.path} was stopped")
        self._atomic.__exit__(OutputError, aborted, None)  # atomic_path deletes the file on an exception

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class MaskVideoWriter(_VideoWriter):
    """A grey mask video (mp4) with ``info``'s size, frame rate and timestamps.

    libx264, yuv420p, High profile, crf 18, veryfast, no B-frames (with them the mp4 muxer takes the stream's end
    from the last packet in decode order and the frame rate read back drifts). 4:2:0 cannot code an odd width
    or height: there the mask is 4:0:0 H.264 (``gray``) tagged full range (untagged, players stretch its levels),
    which FFmpeg-based players read but some hardware decoders refuse. Without libx264, MPEG-4 part 2.
    """

    container_format = "mp4"

    def __init__(
        self,
        path: str | os.PathLike,
        info: VideoInfo,
        crf: int = 18,
        encoder: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        self.crf, self.encoder = crf, encoder
        super().__init__(path, info, metadata)

    def _add_streams(self, info: VideoInfo) -> None:
        odd = self.width % 2 or self.height % 2
        self.pix_fmt = "gray" if odd else "yuv420p"
        codec = self.encoder or next((e for e in MASK_ENCODERS if encoder_works(e)), "mpeg4")
        if codec == "libx264":
            options = {"preset": "veryfast", "crf": str(self.crf), "bf": "0"}
        else:
            options, self.pix_fmt = {"qscale": "2"}, "yuv420p"
            if self.time_base.denominator > 65535:  # MPEG-4 part 2's limit
                self.time_base = Fraction(1, 60000)
        stream = self._add_stream(codec, self.pix_fmt, options, info.sample_aspect_ratio)
        if self.pix_fmt == "gray":
            stream.codec_context.color_range = _FULL_RANGE

    def write(self, masks: np.ndarray, pts: Sequence[int], durations: Sequence[int] | None = None) -> None:
        """``masks``: (n, H, W) uint8 0..255, float 0..1 or bool; ``pts`` and ``durations`` in the input's time
        base (a :class:`FrameBatch`'s)."""
        masks = _as_uint8(masks)
        if masks.shape[1:] != (self.height, self.width):
            raise ValueError(f"masks of {masks.shape[1:]} for a {self.width}x{self.height} video")
        for mask, p, d in zip(masks, pts, self._check(len(masks), pts, durations)):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(mask), format="gray")
            if self.pix_fmt == "gray":
                frame.color_range = _FULL_RANGE
            self._encode(frame, p, d)


class RgbaVideoWriter(_VideoWriter):
    """A VP9 video with alpha (WebM, yuva420p) with ``info``'s size, frame rate and timestamps, and the audio
    of ``info.path`` unless ``audio`` is False.

    libvpx-vp9, crf 32, realtime, cpu-used 8 (``good`` with cpu-used 4 is 2.5-4x slower for ~10% smaller files);
    straight alpha, as browsers expect; colours converted and tagged BT.709, limited range. Read it back with
    :func:`decode_alpha_video`: FFmpeg's native ``vp9`` decoder drops the alpha. Chrome, Edge and Firefox show
    it transparent; Safari does not (it wants HEVC with alpha).
    """

    container_format = "webm"

    def __init__(
        self,
        path: str | os.PathLike,
        info: VideoInfo,
        crf: int = 32,
        audio: bool = True,
        metadata: dict[str, str] | None = None,
    ) -> None:
        self.crf, self.with_audio = crf, audio
        super().__init__(path, info, metadata)

    def _add_streams(self, info: VideoInfo) -> None:
        options = {"crf": str(self.crf), "b": "0", "deadline": "realtime", "cpu-used": "8", "row-mt": "1"}
        options["tile-columns"] = "2"
        codec = self._add_stream("libvpx-vp9", "yuva420p", options, info.sample_aspect_ratio).codec_context
        codec.colorspace = codec.color_primaries = codec.color_trc = _BT709
        codec.color_range = _LIMITED_RANGE
        if self.with_audio and info.has_audio:
            try:
                self._audio = _AudioCopy(info.path, self._output)
            except Exception as e:  # the video is still worth having
                self.warnings.append(f"audio not copied: {_reason(e)}")

    def write(
        self, rgb: np.ndarray, alpha: np.ndarray, pts: Sequence[int], durations: Sequence[int] | None = None
    ) -> None:
        """``rgb``: (n, H, W, 3) uint8; ``alpha``: (n, H, W) uint8, float 0..1 or bool; ``pts`` and ``durations``
        in the input's time base."""
        alpha = _as_uint8(alpha)
        if rgb.shape[1:] != (self.height, self.width, 3) or alpha.shape != rgb.shape[:3]:
            raise ValueError(f"frames {rgb.shape} and alpha {alpha.shape} for a {self.width}x{self.height} video")
        for colour, a, p, d in zip(rgb, alpha, pts, self._check(len(rgb), pts, durations)):
            self._encode(_yuva_frame(colour, a), p, d)
        if self._last_pts is not None:  # interleaved: a WebM with all its audio at the end plays badly
            self._copy_audio(float(self._last_pts * self.time_base))


def _yuva_frame(rgb: np.ndarray, alpha: np.ndarray) -> av.VideoFrame:
    """A yuva420p frame: RGB converted by swscale (BT.709, limited range), the alpha plane copied in (3x faster
    than converting an RGBA array)."""
    h, w = alpha.shape
    yuv = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
    yuv = yuv.reformat(format="yuv420p", dst_colorspace="ITU709", dst_color_range="MPEG")
    frame = av.VideoFrame(w, h, "yuva420p")
    for source, target in zip(yuv.planes, frame.planes[:3]):
        columns = min(source.line_size, target.line_size)
        src = np.frombuffer(source, np.uint8).reshape(source.height, source.line_size)
        np.frombuffer(target, np.uint8).reshape(target.height, target.line_size)[:, :columns] = src[:, :columns]
    plane = frame.planes[3]
    np.frombuffer(plane, np.uint8).reshape(h, plane.line_size)[:, :w] = alpha
    frame.colorspace, frame.color_range = _BT709, _LIMITED_RANGE
    return frame


class _AudioCopy:
    """The first audio stream of ``source`` into a WebM, up to a time at each call: Opus and Vorbis copied,
    others transcoded to Opus (48 kHz, mono or stereo, 128 kb/s; the encoder resamples and re-chunks)."""

    def __init__(self, source: str, output) -> None:
        self._input = av.open(source, "r")
        stream = self._input.streams.audio[0]
        self._copy = stream.codec_context.codec.canonical_name in ("opus", "vorbis")
        if self._copy:
            self._stream = output.add_stream_from_template(stream)
        else:
            self._stream = output.add_stream("libopus", rate=48000)  # libopus takes 48, 24, 16, 12 or 8 kHz
            self._stream.layout = "mono" if stream.codec_context.channels == 1 else "stereo"
            self._stream.bit_rate = 128_000
        self._packets = self._input.demux(stream)
        self._held = None  # a packet read past the time asked for

    def copy_until(self, output, seconds: float) -> None:
        while self._input is not None:
            packet = self._held if self._held is not None else next(self._packets, None)
            self._held = None
            if packet is None:
                if not self._copy:
                    for encoded in self._stream.encode(None):
                        output.mux(encoded)
                self.close()
                return
            if packet.pts is not None and packet.time_base and float(packet.pts * packet.time_base) > seconds:
                self._held = packet
                return
            if self._copy and packet.size:
                packet.stream = self._stream
                output.mux(packet)
            elif not self._copy:
                for frame in packet.decode():  # keeps its timestamp: an audio track starting late stays late
                    for encoded in self._stream.encode(frame):
                        output.mux(encoded)

    def close(self) -> None:
        if self._input is not None:
            self._input.close()
            self._input = None


def decode_alpha_video(path: str | os.PathLike) -> Iterator[tuple[np.ndarray, int]]:
    """``(rgba (H, W, 4) uint8, pts)`` of each frame of a VP9-with-alpha WebM, decoded by libvpx-vp9 (the
    native ``vp9`` decoder that PyAV picks by default ignores the alpha)."""
    with av.open(os.fspath(path), "r") as container:
        stream = container.streams.video[0]
        decoder = av.CodecContext.create("libvpx-vp9", "r")
        for packet in container.demux(stream):
            for frame in decoder.decode(packet if packet.size else None):
                yield frame.to_ndarray(format="rgba"), frame.pts if frame.pts is not None else packet.pts

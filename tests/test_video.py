"""Videos: reading frames upright with their timestamps, the mask and RGBA writers, bad files named in one line,
and ``pdfnet predict`` on videos beside images. Clips are made here with PyAV: a few tiny frames each."""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from pdfnet.cli import main
from pdfnet.errors import OutputError, VideoReadError
from pdfnet.video import MaskVideoWriter, RgbaVideoWriter, decode_alpha_video, encoder_works, open_video

BITS, BLOCK = 4, 8  # each frame shows its index as 4 black or white 8x8 blocks along the top


def draw_frame(i: int, width: int, height: int) -> np.ndarray:
    """Frame ``i``: a gradient, a white disc moving right, and the index code."""
    yy, xx = np.mgrid[0:height, 0:width]
    frame = np.stack([xx * 255 // max(width - 1, 1), yy * 255 // max(height - 1, 1), np.full_like(xx, 96)], -1)
    frame[(xx - 8 - 4 * i) ** 2 + (yy - height // 2) ** 2 <= (min(width, height) // 5) ** 2] = 255
    for b in range(BITS):
        frame[:BLOCK, b * BLOCK : (b + 1) * BLOCK] = 255 if (i >> b) & 1 else 0
    return frame.astype(np.uint8)


def frame_index(frame: np.ndarray) -> int:
    grey = frame if frame.ndim == 2 else frame.mean(axis=2)
    return sum(1 << b for b in range(BITS) if grey[2 : BLOCK - 2, b * BLOCK + 2 : (b + 1) * BLOCK - 2].mean() > 128)


def make_clip(
    path: Path,
    frames: int = 5,
    width: int = 64,
    height: int = 48,
    fps: Fraction = Fraction(25),
    durations: list[int] | None = None,  # per frame, in ms (then the time base is 1/1000)
    codec: str = "libx264",
    audio: str | None = None,  # "aac" or "libopus"
    rotation: float = 0,  # counter-clockwise degrees, as a phone's display matrix
    options: dict | None = None,
) -> Path:
    """A clip of ``draw_frame``s, with a 440 Hz tone as long as the video when ``audio`` is given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    out = av.open(str(path), "w", options=options or {})
    video = out.add_stream(codec, rate=fps)
    video.width, video.height, video.pix_fmt = width, height, "yuv420p"
    video.codec_context.time_base = Fraction(1, 1000) if durations else 1 / fps
    video.options = {"preset": "ultrafast"} if codec == "libx264" else {"deadline": "realtime", "cpu-used": "8"}
    if rotation:
        video.set_display_rotation(rotation)
    steps = [durations[i % len(durations)] for i in range(frames)] if durations else [1] * frames
    seconds = float(sum(steps) * video.codec_context.time_base)
    if audio:
        rate = 48000 if audio == "libopus" else 44100
        sound = out.add_stream(audio, rate=rate)
        sound.layout = "stereo"
        samples = np.tile(0.3 * np.sin(2 * np.pi * 440 * np.arange(round(seconds * rate)) / rate), (2, 1))
        for start in range(0, samples.shape[1], 1024):
            chunk = av.AudioFrame.from_ndarray(samples[:, start : start + 1024].astype(np.float32), format="fltp")
            chunk.sample_rate, chunk.pts, chunk.time_base = rate, start, Fraction(1, rate)
            for packet in sound.encode(chunk):
                out.mux(packet)
        for packet in sound.encode(None):
            out.mux(packet)
    pts = 0
    for i in range(frames):
        frame = av.VideoFrame.from_ndarray(draw_frame(i, width, height), format="rgb24")
        frame.pts, frame.time_base = pts, video.codec_context.time_base
        pts += steps[i]
        for packet in video.encode(frame):
            out.mux(packet)
    for packet in video.encode(None):
        out.mux(packet)
    out.close()
    return path


def read_back(path: Path) -> tuple[list[np.ndarray], list[float], av.video.stream.VideoStream]:
    """(grey frames, times in s, stream) by FFmpeg's default decoder."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
        return [f.to_ndarray(format="gray") for f in frames], [float(f.pts * f.time_base) for f in frames], stream


def audio_codec(path: Path) -> str | None:
    with av.open(str(path)) as container:
        return container.streams.audio[0].codec_context.codec.canonical_name if container.streams.audio else None


def white(frames: np.ndarray) -> np.ndarray:
    """A stand-in model: the white disc (and white code blocks)."""
    return ((frames.min(axis=-1) > 200) * 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------------- reading


def test_frames_timestamps_and_totals(tmp_path):
    clip = make_clip(tmp_path / "vfr.mp4", frames=6, durations=[40, 40, 80, 20, 60])
    with open_video(clip) as reader:
        assert (reader.info.width, reader.info.height, reader.info.frame_count) == (64, 48, 6)
        assert reader.info.frame_count_exact and reader.info.vfr
        batches = list(reader.batches(4))
    assert [len(b) for b in batches] == [4, 2] and [b.start for b in batches] == [0, 4]
    frames = np.concatenate([b.frames for b in batches])
    assert frames.shape == (6, 48, 64, 3) and [frame_index(f) for f in frames] == list(range(6))
    times = np.concatenate([b.pts for b in batches]) * float(reader.info.time_base)
    assert np.round(np.diff(times) * 1000).astype(int).tolist() == [40, 40, 80, 20, 60]
    # Matroska headers hold no frame count: counted by a demux pass
    with open_video(make_clip(tmp_path / "ntsc.mkv", fps=Fraction(30000, 1001))) as reader:
        assert reader.info.frame_count == 5 and reader.info.frame_count_exact


def test_phone_rotation_is_applied(tmp_path):
    clip = make_clip(tmp_path / "phone.mov", rotation=-90)  # a phone's "rotate=90": a quarter turn clockwise
    with open_video(clip) as reader:
        assert (reader.info.width, reader.info.height, reader.info.rotation) == (48, 64, -90)
        frame = next(reader.batches(1)).frames[0]
    assert np.abs(np.rot90(frame, 1).astype(int) - draw_frame(0, 64, 48)).mean() < 3  # upright: turned back


def _truncated_between_frames(tmp_path: Path) -> Path:
    clip = make_clip(tmp_path / "fast.mp4", frames=8, options={"movflags": "faststart"})
    with av.open(str(clip)) as container:
        ends = [p.pos + p.size for p in container.demux(video=0) if p.size]
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(clip.read_bytes()[: ends[3]])
    return cut


def _png_named_mp4(tmp_path: Path) -> Path:
    buffer = io.BytesIO()
    Image.fromarray(draw_frame(0, 16, 16)).save(buffer, format="PNG")
    (tmp_path / "image.mp4").write_bytes(buffer.getvalue())
    return tmp_path / "image.mp4"


def _written(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _cut_short(tmp_path: Path) -> Path:
    """The first 60% of an mp4 whose index (moov) is at the end, as a camera writes it."""
    data = make_clip(tmp_path / "whole.mp4").read_bytes()
    return _written(tmp_path / "cut.mp4", data[: len(data) * 6 // 10])


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "missing.mp4", "no such video"),
        (lambda d: _written(d / "empty.mp4", b""), "empty file"),
        (lambda d: _written(d / "text.mp4", b"not a video\n" * 40), "not a video file"),
        (_png_named_mp4, "an image file, not a video"),
        (_truncated_between_frames, "truncated: the file ends after 4 of 8 frames"),
        (_cut_short, "not a video file, or truncated or corrupt"),
    ],
)
def test_bad_videos_are_named_in_one_line(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(VideoReadError) as caught:
        with open_video(path) as reader:
            for _ in reader.batches(2):
                pass
    assert str(path) in str(caught.value) and message in str(caught.value) and "\n" not in str(caught.value)


# ----------------------------------------------------------------------------------------------------- writing


@pytest.mark.parametrize(
    "name, size, fps, codec",
    [("cfr.mp4", (64, 48), Fraction(25), "libx264"), ("odd.mkv", (63, 45), Fraction(30000, 1001), "libvpx-vp9")],
)
def test_mask_video_keeps_count_size_rate_and_times(tmp_path, name, size, fps, codec):
    clip = make_clip(tmp_path / name, frames=6, width=size[0], height=size[1], fps=fps, codec=codec)
    expected, times = [], []
    with open_video(clip) as reader, MaskVideoWriter(tmp_path / "mask.mp4", reader.info) as writer:
        for batch in reader.batches(4):
            expected += list(white(batch.frames))
            times += [p * float(reader.info.time_base) for p in batch.pts]
            writer.write(white(batch.frames), batch.pts, batch.durations)
    masks, got_times, stream = read_back(tmp_path / "mask.mp4")
    assert len(masks) == 6 and (stream.width, stream.height) == size and stream.average_rate == fps
    np.testing.assert_allclose(got_times, times, atol=0.0015)  # Matroska's 1 ms ticks snap to the rate's grid
    assert np.mean([np.abs(m.astype(int) - e).mean() for m, e in zip(masks, expected)]) < 1.5
    assert writer.pix_fmt == ("gray" if size[0] % 2 else "yuv420p")  # 4:2:0 cannot code odd sizes
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, "mask.mp4"])  # no temporary left


def test_rgba_webm_has_alpha_and_the_audio(tmp_path):
    assert encoder_works("libvpx-vp9", "yuva420p")
    clip = make_clip(tmp_path / "talk.mp4", frames=6, audio="aac")
    frames, alphas = [], []
    with open_video(clip) as reader, RgbaVideoWriter(tmp_path / "cut.webm", reader.info) as writer:
        for batch in reader.batches(4):
            frames.append(batch.frames)
            alphas.append(white(batch.frames))
            writer.write(batch.frames, alphas[-1], batch.pts, batch.durations)
    rgba = np.stack([f for f, _ in decode_alpha_video(tmp_path / "cut.webm")])
    assert rgba.shape == (6, 48, 64, 4)
    assert np.abs(rgba[..., 3].astype(int) - np.concatenate(alphas)).mean() < 2
    assert np.abs(rgba[..., :3].astype(int) - np.concatenate(frames)).mean() < 4
    assert audio_codec(tmp_path / "cut.webm") == "opus"  # AAC transcoded; Opus would be copied
    assert not writer.warnings


def test_an_interrupted_write_leaves_nothing(tmp_path):
    with open_video(make_clip(tmp_path / "a.mp4")) as reader:
        with pytest.raises(RuntimeError), MaskVideoWriter(tmp_path / "out" / "a_mask.mp4", reader.info) as writer:
            writer.write(np.zeros((2, 48, 64), np.uint8), [0, 1])
            raise RuntimeError("the model failed")
    assert list((tmp_path / "out").iterdir()) == []
    with pytest.raises(OutputError, match="cannot write"):
        MaskVideoWriter(tmp_path / "a.mp4" / "x.mp4", reader.info)  # a file where a folder should be


# ----------------------------------------------------------------------------------------------- pdfnet predict


def _predict(args: list[str], checkpoint: str, depth_model: str) -> int:
    extra = ["--weights", checkpoint, "--depth-model", depth_model, "--input-size", "256", "--device", "cpu"]
    return main(["predict", *args, *extra])


def test_predict_writes_mask_and_rgba_videos(tiny_official_checkpoint, tiny_depth_model, tmp_path, capsys):
    clip = make_clip(tmp_path / "in" / "clip.mp4", frames=4, audio="aac", fps=Fraction(24))
    Image.fromarray(draw_frame(0, 40, 30)).save(tmp_path / "in" / "photo.png")
    out = tmp_path / "out"
    args = [str(tmp_path / "in"), "--out", str(out), "--format", "both", "--batch-size", "3"]
    assert _predict(args, tiny_official_checkpoint, tiny_depth_model) == 0
    names = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert names == ["clip_mask.mp4", "clip_rgba.webm", "photo_mask.png", "photo_rgba.png"]
    masks, _, stream = read_back(out / "clip_mask.mp4")
    assert len(masks) == 4 and (stream.width, stream.height) == (64, 48) and stream.average_rate == 24
    rgba = [f for f, _ in decode_alpha_video(out / "clip_rgba.webm")]
    assert len(rgba) == 4 and rgba[0].shape == (48, 64, 4)
    assert np.abs(rgba[0][..., 3].astype(int) - masks[0]).mean() < 3  # the same mask in both
    assert audio_codec(out / "clip_rgba.webm") == "opus" and audio_codec(out / "clip_mask.mp4") is None
    assert "frame" in capsys.readouterr().err  # the progress bar counts frames
    # each video records what made it; a rerun skips what was made with the same options
    from pdfnet.provenance import read_options

    assert read_options(out / "clip_mask.mp4")["output"] == "mask"
    assert read_options(out / "clip_rgba.webm")["refine"] == "on"
    stamp = (out / "clip_mask.mp4").stat().st_mtime_ns
    assert _predict([str(clip), "--out", str(out), "--format", "mask"], tiny_official_checkpoint, tiny_depth_model) == 0
    assert "nothing to do" in capsys.readouterr().out and (out / "clip_mask.mp4").stat().st_mtime_ns == stamp
    # and names what other options made
    args = [str(clip), "--out", str(out), "--format", "mask", "--tta"]
    assert _predict(args, tiny_official_checkpoint, tiny_depth_model) == 0
    assert "tta=off (now on)" in capsys.readouterr().err and (out / "clip_mask.mp4").stat().st_mtime_ns == stamp
    args = [str(clip), "--out", str(out), "--format", "mask", "--overwrite"]
    assert _predict(args, tiny_official_checkpoint, tiny_depth_model) == 0
    assert (out / "clip_mask.mp4").stat().st_mtime_ns != stamp and len(read_back(out / "clip_mask.mp4")[0]) == 4


def test_predict_never_replaces_a_video_and_wants_the_depth_model_for_it(tiny_official_checkpoint, tmp_path, capsys):
    clip = make_clip(tmp_path / "in" / "clip.mp4", frames=2)
    before = clip.read_bytes()
    command = ["predict", str(clip), "--weights", tiny_official_checkpoint, "--input-size", "256", "--device", "cpu"]
    assert main([*command, "--out", str(tmp_path / "in")]) == 1
    assert "folder of inputs" in capsys.readouterr().err and clip.read_bytes() == before
    (tmp_path / "depth").mkdir()
    assert main([*command, "--out", str(tmp_path / "out"), "--depth", str(tmp_path / "depth")]) == 1
    err = capsys.readouterr().err
    assert f"{clip} is a video" in err and "Traceback" not in err and not (tmp_path / "out").exists()


def test_predict_names_a_corrupt_video_and_goes_on(tiny_official_checkpoint, tiny_depth_model, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    broken = _written(tmp_path / "in" / "broken.mp4", _cut_short(tmp_path).read_bytes())
    Image.fromarray(draw_frame(0, 40, 30)).save(tmp_path / "in" / "photo.png")
    out = tmp_path / "out"
    args = [str(tmp_path / "in"), "--out", str(out), "--format", "mask"]
    assert _predict(args, tiny_official_checkpoint, tiny_depth_model) == 1
    err = capsys.readouterr().err
    assert str(broken) in err and "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == ["photo.png"]  # no partial video, no temporary

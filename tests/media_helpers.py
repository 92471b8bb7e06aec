"""Broken media files of the kinds web video data holds, written for real by the tests."""

from pathlib import Path

import av
import numpy as np


def write_audio_only(path) -> Path:
    """A container holding one AAC audio stream (a sine) and no video stream."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        t = np.arange(16000) / 16000
        frame = av.AudioFrame.from_ndarray(
            (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None], format="flt", layout="mono"
        )
        frame.sample_rate = 16000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return Path(path)


def write_broken_inputs(folder, good_clip) -> dict[str, Path]:
    """The five broken inputs every video path must survive: zero bytes, a truncated mp4 (its index at
    the end is cut off), a text file named .mp4, a missing path, and an audio-only file."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "zero.mp4").write_bytes(b"")
    data = Path(good_clip).read_bytes()
    (folder / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (folder / "text.mp4").write_text("this is not a video\n")
    write_audio_only(folder / "audio.mp4")
    names = ["zero.mp4", "truncated.mp4", "text.mp4", "missing.mp4", "audio.mp4"]
    return {name: folder / name for name in names}

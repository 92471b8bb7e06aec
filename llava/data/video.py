"""Decode a fixed number of uniformly spread RGB frames from a video file.

``read_video_frames(path, num_frames=8)`` returns a ``(num_frames, H, W, 3)`` uint8 array. Frame ``i``
is the centre of the ``i``-th of ``num_frames`` equal segments of the clip,
``floor((i + 0.5) * n_total / num_frames)``, so a clip shorter than ``num_frames`` repeats its frames
evenly. decord is used first (fast seeking); PyAV decodes where decord fails, is not installed, or lacks
the codec (AV1). Both backends are given the same frame count, hence the same indices. Any unreadable
input raises ``VideoReadError`` (a ``ValueError``) naming the file and the reason, so that the dataset
can skip, log and count it.

Guards, because this runs inside DataLoader workers (daemonic forked processes, which may not start
child processes) during long training runs:

1. Cheap validation before decord is touched. The path must be an existing, non-empty regular file
   (a FIFO or a directory would block or confuse the demuxer). PyAV then opens the container, finds a
   video stream and demuxes it once without decoding, counting packets: this rejects text files, cut
   files without an index, audio-only files and streams with no frames, and it catches files cut after
   a valid index (fewer packets than the container declares). Those are the inputs on which decord is
   known to raise obscure errors, abort the process or hang, so it never sees them.
2. decord runs in this process (no subprocess: workers cannot fork one), one reader per call, created
   here and deleted here, so no reader is shared across a fork. ``num_threads=1`` keeps N workers from
   each starting a decoder thread pool (oversubscription, and hangs seen with decord's threads in
   workers). Any decord exception, or a frame count that disagrees with the probe, falls back to PyAV
   (in "auto" mode) with a warning.
3. A time bound, ``timeout_s`` for the whole call: ``av.open`` gets it as its I/O timeout, and the probe
   and PyAV decoding check the elapsed time at every packet/frame, raising ``VideoReadError`` on overrun.
   The decord call itself cannot be interrupted from inside its process: if it ever hangs on a file that
   passed the probe, the outer bound is the DataLoader's own ``timeout=`` argument (it raises in the
   main process), and ``LLAVA_VIDEO_BACKEND=pyav`` takes decord out of the picture.
4. No leaks: containers are opened in ``with`` blocks, decord readers are deleted in ``finally``, and
   only the selected frames are converted to RGB and kept.

``LLAVA_VIDEO_BACKEND`` (``auto`` | ``decord`` | ``pyav``, default ``auto``) or the ``backend`` argument
selects the backend; a forced backend raises ``VideoReadError`` instead of falling back.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

import av
import numpy as np

from ..errors import InputError
from ..modeling.frame_sampling import sample_indices

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "decord", "pyav")
# Codecs that decord 0.6's bundled FFmpeg cannot decode: go straight to PyAV instead of failing first.
_DECORD_UNSUPPORTED = {"av1"}
# What PyAV raises on bad input (FFmpegError covers InvalidDataError, ExitError, ...); other exceptions
# are bugs and propagate.
_PYAV_ERRORS = (av.FFmpegError, OSError, EOFError)


class VideoReadError(InputError):
    """A video file that cannot be decoded; the message names the file and the reason."""


@dataclass
class _Probe:
    num_frames: int  # frames the decoder will yield (non-discarded video packets)
    codec: str


def _decord():
    try:
        import decord
    except ImportError:
        return None
    return decord


def _check_deadline(path: str, deadline: float, timeout_s: float) -> None:
    if time.monotonic() > deadline:
        raise VideoReadError(f"{path}: decoding took longer than timeout_s={timeout_s}s")


def _pyav_error(path: str, what: str, e: Exception, timeout_s: float) -> VideoReadError:
    if isinstance(e, av.ExitError):  # av.open's I/O timeout interrupts FFmpeg as "immediate exit requested"
        return VideoReadError(f"{path}: {what} took longer than timeout_s={timeout_s}s")
    return VideoReadError(f"{path}: {what} failed ({type(e).__name__}: {e})")


def _probe(path: str, deadline: float, timeout_s: float) -> _Probe:
    """Validate ``path`` cheaply (no decoding) and count the frames of its first video stream."""
    if not os.path.exists(path):
        raise VideoReadError(f"{path}: file does not exist")
    if not os.path.isfile(path):
        raise VideoReadError(f"{path}: not a regular file")
    if os.path.getsize(path) == 0:
        raise VideoReadError(f"{path}: file is empty (0 bytes)")
    try:
        with av.open(path, timeout=timeout_s) as container:
            if not container.streams.video:
                raise VideoReadError(f"{path}: no video stream in the container")
            stream = container.streams.video[0]
            declared = stream.frames  # 0 where the container does not say (mkv, webm)
            codec = stream.codec_context.codec.canonical_name
            packets = kept = 0
            for packet in container.demux(stream):
                _check_deadline(path, deadline, timeout_s)
                if packet.size == 0:  # the flush packet PyAV appends at the end
                    continue
                packets += 1
                # Packets outside an edit list are flagged discard; decoders drop their frames.
                kept += not packet.is_discard
    except VideoReadError:
        raise
    except _PYAV_ERRORS as e:
        raise _pyav_error(path, "opening/demuxing", e, timeout_s) from e
    if kept == 0:
        raise VideoReadError(f"{path}: video stream ({codec}) has no frames")
    if 0 < packets < declared:
        raise VideoReadError(f"{path}: truncated, {declared} frames declared but only {packets} present")
    return _Probe(num_frames=kept, codec=codec)


def _read_decord(decord, path: str, probe: _Probe, indices: list[int]) -> np.ndarray:
    reader = decord.VideoReader(path, num_threads=1)
    try:
        if len(reader) != probe.num_frames:
            raise RuntimeError(f"decord counts {len(reader)} frames, the container {probe.num_frames}")
        # Fetch each frame once, in order; repeats (short clips) are expanded afterwards.
        unique, inverse = np.unique(indices, return_inverse=True)
        frames = reader.get_batch(unique.tolist()).asnumpy()
    finally:
        del reader  # closes the file now, not at some later garbage collection
    return frames[inverse]


def _read_pyav(path: str, probe: _Probe, indices: list[int], deadline: float, timeout_s: float) -> np.ndarray:
    # Decode sequentially (exact indices, no seeking subtleties); convert only the frames we keep and stop
    # after the last one.
    wanted = set(indices)
    last = max(indices)
    kept: dict[int, np.ndarray] = {}
    try:
        with av.open(path, timeout=timeout_s) as container:
            for i, frame in enumerate(container.decode(container.streams.video[0])):
                _check_deadline(path, deadline, timeout_s)
                if i in wanted:
                    kept[i] = frame.to_ndarray(format="rgb24")
                if i >= last:
                    break
    except VideoReadError:
        raise
    except _PYAV_ERRORS as e:
        raise _pyav_error(path, "decoding", e, timeout_s) from e
    missing = wanted - kept.keys()
    if missing:
        raise VideoReadError(
            f"{path}: stream yielded fewer frames than its {probe.num_frames} packets (frame {min(missing)} missing)"
        )
    return np.stack([kept[i] for i in indices])


def read_video_frames(
    path: str | os.PathLike,
    num_frames: int = 8,
    *,
    timeout_s: float = 60.0,
    backend: str | None = None,
) -> np.ndarray:
    """Return ``num_frames`` RGB frames, uniformly sampled over the clip, as ``(num_frames, H, W, 3)`` uint8.

    ``backend`` overrides ``LLAVA_VIDEO_BACKEND``; raises ``VideoReadError`` for unreadable input.
    """
    path = os.fspath(path)
    if not isinstance(num_frames, (int, np.integer)) or num_frames < 1:
        raise ValueError(f"num_frames must be a positive int, got {num_frames!r}")
    num_frames = int(num_frames)
    backend = (backend or os.environ.get("LLAVA_VIDEO_BACKEND") or "auto").lower()
    if backend not in BACKENDS:
        raise ValueError(f"video backend must be one of {BACKENDS}, got {backend!r} (LLAVA_VIDEO_BACKEND)")
    deadline = time.monotonic() + timeout_s

    probe = _probe(path, deadline, timeout_s)
    indices = sample_indices(probe.num_frames, num_frames)

    if backend in ("auto", "decord"):
        decord = _decord()
        if decord is None:
            if backend == "decord":
                raise RuntimeError("LLAVA_VIDEO_BACKEND=decord but decord is not installed")
        elif probe.codec in _DECORD_UNSUPPORTED and backend == "auto":
            logger.debug("%s: codec %s, decoding with PyAV", path, probe.codec)
        else:
            _check_deadline(path, deadline, timeout_s)
            try:
                return _read_decord(decord, path, probe, indices)
            except Exception as e:  # decord raises DECORDError, RuntimeError, ... : any failure falls back
                if backend == "decord":
                    raise VideoReadError(f"{path}: decord failed ({type(e).__name__}: {e})") from e
                logger.warning("%s: decord failed (%s: %s); decoding with PyAV", path, type(e).__name__, e)

    return _read_pyav(path, probe, indices, deadline, timeout_s)

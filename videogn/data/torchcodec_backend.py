"""The torchcodec reader behind ``VideoReader(backend="torchcodec")`` (CPU, or NVDEC with
``device="cuda"``): exact seeks (``seek_mode="exact"``), frame ``i`` as PyAV's full decode counts it,
and refusals where torchcodec cannot index frames exactly (containers without per-frame pts).

Availability: ``import torchcodec`` succeeds without FFmpeg; its native library, which links
FFmpeg's shared libraries, is loaded at first use and fails there ("Could not load
libtorchcodec"). So the backend counts as available only when that load succeeds, probed once per
process (:func:`torchcodec_unavailable_reason`).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

from videogn.data.video_backends import (
    BACKENDS, VideoBackend, VideoDecodeError, Window, _demux, short_error, window_slices,
)

__all__ = ["TorchCodecBackend", "torchcodec_unavailable_reason"]

FFMPEG_HINT = ("install FFmpeg's shared libraries (e.g. `apt-get install ffmpeg`, or "
               "`conda install -c conda-forge ffmpeg`; versions 4 to 9)")


def _load_library() -> None:
    """Load torchcodec's FFmpeg-dependent native library: what its ``VideoDecoder`` does first.
    Raises whatever the load raises (RuntimeError "Could not load libtorchcodec ..." without FFmpeg)."""
    import torchcodec

    try:
        # private, but it is the very call VideoDecoder makes; memoised by torchcodec on success
        from torchcodec._internally_replaced_utils import load_core_libraries
    except ImportError:  # another torchcodec layout: it reports at import whether FFmpeg loaded
        if getattr(torchcodec, "ffmpeg_major_version", 0) is None:
            raise RuntimeError("torchcodec found no FFmpeg libraries it can load") from None
        return
    load_core_libraries()


def _first_lines(e: BaseException) -> str:
    """The error's first line, plus the first underlying OS error when it lists one (torchcodec's
    message gives one traceback per FFmpeg version; the missing ``.so`` is the useful part)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    first = f"{type(e).__name__}: {lines[0] if lines else ''}"
    cause = next((ln for ln in lines[1:] if ln.startswith("OSError: ")), None)
    return f"{first} ... {cause}" if cause else first


@functools.lru_cache(maxsize=1)
def torchcodec_unavailable_reason() -> str | None:
    """Why torchcodec cannot decode here, with the fix (None when it can): not installed, or its
    native library does not load (FFmpeg's shared libraries missing). Probed once per process."""
    try:
        import torchcodec.decoders  # noqa: F401
    except Exception as e:
        return f"torchcodec does not import ({_first_lines(e)}); pip install 'videogn[torchcodec]'"
    try:
        _load_library()
    except Exception as e:
        return f"torchcodec cannot load its native library ({_first_lines(e)}); {FFMPEG_HINT}"
    return None


class TorchCodecBackend(VideoBackend):
    name = "torchcodec"
    devices = ("cpu", "cuda")

    @classmethod
    def unavailable_reason(cls) -> str | None:
        return torchcodec_unavailable_reason()

    def __init__(self, path: Path, num_threads: int, device: str = "cpu") -> None:
        from torchcodec.decoders import VideoDecoder

        self.path = path
        self.device = device
        try:
            order, _, timestamped = _demux(path)  # PyAV's count is the definition of frame i
        except VideoDecodeError as e:
            raise VideoDecodeError(path, e.cause, self.name) from e
        if not timestamped:
            # torchcodec orders frames by pts; without one per frame (AVI, raw streams) it returned
            # wrong frames (MPEG-4 with B-frames in AVI: 29 of 36 wrong, the last 3 missing)
            raise VideoDecodeError(path, "no per-frame timestamps (container without pts, e.g. AVI): "
                                   "torchcodec cannot index its frames exactly", self.name)
        in_order, demuxed = order.in_order and order.num_frames > 0, order.num_frames
        try:
            # exact: a scan at open indexes every frame by pts (approximate mode trusts the header)
            self.dec = VideoDecoder(str(path), seek_mode="exact", dimension_order="NHWC",
                                    num_ffmpeg_threads=num_threads, device=device)
            meta = self.dec.metadata
        except Exception as e:  # torchcodec raises RuntimeError/ValueError for unreadable input
            raise VideoDecodeError(path, f"cannot open ({short_error(e)})", self.name) from e
        self.num_frames = len(self.dec)
        if self.num_frames <= 0:
            raise VideoDecodeError(path, "video stream has zero frames", self.name)
        if self.num_frames != demuxed:
            raise VideoDecodeError(
                path, f"torchcodec counts {self.num_frames} frames, the PyAV demux {demuxed}", self.name
            )
        self.reordered = not in_order
        fps = meta.average_fps
        if not fps:
            raise VideoDecodeError(path, "frame rate unknown", self.name)
        self.fps = float(fps)
        self.frame_shape = (meta.height, meta.width, 3)

    def get(self, idx: np.ndarray, window: Window | None = None) -> torch.Tensor:
        """(T, H, W, 3) uint8 on the decoder's device (only ``window`` of each frame, when given)."""
        rows, cols = window_slices(window)
        if len(idx) == 0:
            return torch.empty((0, *self.frame_shape), dtype=torch.uint8, device=self.device)[:, rows, cols]
        # each frame once, ascending: torchcodec then decodes forward instead of seeking back
        uniq = np.unique(idx)
        try:
            frames = self.dec.get_frames_at(uniq.tolist()).data  # (len(uniq), H, W, 3)
        except Exception:
            # Seen with torchcodec 0.17 on an open-GOP H.264 mkv: a seek straight to the last
            # keyframe ("no more frames left to decode"); reached by decoding forward it reads.
            try:
                frames = self._get_forward(uniq)
            except Exception as e:
                raise VideoDecodeError(self.path, f"decoding failed ({short_error(e)})", self.name) from e
        # the gather copies only the window
        return frames[:, rows, cols][torch.from_numpy(np.searchsorted(uniq, idx)).to(frames.device)]

    def _get_forward(self, uniq: np.ndarray) -> torch.Tensor:
        """The frames ``uniq`` (sorted, unique) with each reached by decoding forward from its predecessor."""
        with_prev = np.unique(np.concatenate([uniq, np.maximum(uniq - 1, 0)]))
        frames = self.dec.get_frames_at(with_prev.tolist()).data
        return frames[torch.from_numpy(np.searchsorted(with_prev, uniq)).to(frames.device)]

    def close(self) -> None:
        self.dec = None


BACKENDS.register(TorchCodecBackend.name, TorchCodecBackend)

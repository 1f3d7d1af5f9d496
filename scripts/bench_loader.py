"""Clip-loading throughput: videogn's KineticsDataset against the raw decode rate and pytorchvideo.

Every pipeline loads the same clip spec (default: 32 frames at stride 2, from 256p H.264 video)
from the same files through a ``torch.utils.data.DataLoader`` with 1 and 2 workers, on two sets of
synthetic videos (``--sets``):

    nob       H.264 without B-frames, 32-frame GOPs: what ``datasets/kinetics/resize.py`` writes;
              no frame reordering, so videogn's decord backend takes its random-access fast path
    bframes   H.264 with 3 B-frames and x264's default 250-frame GOP (like many source files);
              videogn's decord backend has to decode sequentially from frame 0

Pipelines:

    raw-<backend>          the backend library called directly for the clip's frames, uint8 out,
                           no transforms (decord: ``get_batch``; PyAV: in-order decode up to the
                           last needed frame, RGB conversion of the needed frames on one thread,
                           as VideoReader does; torchcodec: ``VideoDecoder(seek_mode="exact")
                           .get_frames_at``) -- the reference rate (raw PyAV does not
                           seek, so a seeking reader can beat it)
    reader-<backend>       videogn's VideoReader(path, backend).get_frames(indices), uint8 out, no
                           transforms: the decode path alone, against the raw library; with
                           ``--clips-per-decode K``, the union of K clips' frames from one span
                           (the toolkit's sampler, what the dataset decodes for an item) counted
                           as K clips: the ceiling clips per decode could reach if every per-clip
                           step were free
    videogn-<backend>      KineticsDataset (train mode): VideoReader + sampling + scale jitter
                           [256, 320], random 224 crop, flip -> uint8 (3, T, 224, 224), what the
                           trainer loads (``--dtype float32``: normalised on the worker instead);
                           ``--clips-per-decode 1 2`` measures it at each K (data.clips_per_decode:
                           K clips, each with its own crop and offset, from one decoded span of
                           1.5 clip spans), counting clips, not videos
    pytorchvideo-<backend> pytorchvideo's EncodedVideo.get_clip (decodes the clip's time range to
                           float) + temporal subsampling + the same transforms (its own
                           ``transforms`` package does not import with current torchvision)

``% raw`` compares with raw decoding by the same backend; ``% best`` with the fastest raw
decoding that returns the right frames on that set (raw-decord only counts on ``nob``, where its
seeks are exact). Each configuration runs in a fresh process. Reported: clips/s and frames/s in steady state (after
the first batch, which pays worker start-up), clips/s per worker, clips per CPU-second of the loading
processes (the workers' user + system time over the same interval, from /proc: on a shared machine
it leaves out the time a worker waited for a core), peak RSS (VmHWM) of the main process and of the
largest worker (a forked worker's RSS includes pages it shares with the main process). ``raw`` with 0 workers is the in-process decode rate.
With several ``--clips-per-decode`` values, each K > 1 is also given as a multiple of K = 1's clips/s
(same set, backend and workers); ``--batch-size`` and ``--clips`` count clips (multiples of each K).
The machine's speed drifts between configurations (a VM's share of its host), so one such ratio
says little: ``--repeats N`` runs everything N times, the K order reversed every other time, pairs
each K > 1 with K = 1 of its own repeat and reports the median [min, max] of the N ratios.

Note: decord's ``get_batch`` returns wrong frames on streams with frame reordering (see
videogn/data/decode.py), so on the ``bframes`` set raw-decord is a ceiling on speed, not a correct
loader; on the ``nob`` set it is exact.

Sizing the loader: ``--workers 1 2 4`` measures each worker count; ``--target-clips-per-s 150``
then prints, per pipeline, how many workers that training rate needs (the smallest measured count
that reaches it, else extrapolated from the best clips/s per worker, marked ``~``).

``--item-ratio``: per encoding (set), the KineticsDataset item (uint8 out) against the decode it
does (VideoReader.get_frames of the same frames: each clip -- video and seed, which fixes the start
frame -- is timed both ways back to back, A/B order alternating), in process, in rounds of
``--per-round`` clips; reports the median per-round ratio of clips/s (1.0 = the item costs nothing
beyond decoding), from wall time and from CPU time (everything runs on one thread; on a shared
machine the CPU-time ratio leaves out the time the process waited for a core).

Usage:
    python scripts/bench_loader.py --quick --out bench_loader_quick.json
    python scripts/bench_loader.py --sets nob --backends pyav --pipelines videogn --workers 1 2 --target-clips-per-s 150
    python scripts/bench_loader.py --item-ratio --backends pyav,torchcodec --rounds 7
    python scripts/bench_loader.py --clips 96 --out bench_loader.json
    python scripts/bench_loader.py --sets nob --backends decord,pyav --pipelines raw,videogn --quick
    python scripts/bench_loader.py --pipelines videogn --backends pyav --workers 1 --clips-per-decode 1 2 --clips 96
    python scripts/bench_loader.py --pipelines reader,videogn --backends pyav --workers 1 --clips-per-decode 1 2 --repeats 6
    python scripts/bench_loader.py --videos /data/kinetics/videos_256 --out k400.json  # real files
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v")


# ------------------------------------------------------------------------------------------------
# test material


# name -> (B-frames, GOP; None = x264's default 250), description
VIDEO_SETS = {
    "nob": (0, 32, "H.264 without B-frames, GOP 32 (as datasets/kinetics/resize.py writes)"),
    "bframes": (3, None, "H.264 with 3 B-frames, x264's default GOP 250"),
}


def make_videos(folder: Path, num_videos: int, num_frames: int, height: int, width: int, fps: int = 30,
                bframes: int = 3, gop: int | None = None) -> list[Path]:
    """Synthetic but codec-realistic clips: moving gradients, drifting blocks and grain, H.264
    yuv420p with ``bframes`` B-frames and keyframes every ``gop`` frames (None: x264's 250)."""
    from videogn.data.encode import write_video

    paths = []
    for v in range(num_videos):
        path = folder / f"class{v % 4}" / f"video{v:03d}.mp4"
        paths.append(path)
        if path.exists():
            continue
        rng = np.random.default_rng(v)
        t = np.arange(num_frames)[:, None, None]
        y = np.arange(height)[None, :, None]
        x = np.arange(width)[None, None, :]
        r = (x * 2 + t * (3 + v)) % 256
        g = (y * 2 + t * 2 + 0 * x) % 256
        b = ((x + y + 0 * t) // 3 + 40 * ((x // 40 + y // 40 + t // 15) % 2)) % 256
        frames = np.stack(np.broadcast_arrays(r, g, b), -1).astype(np.int16)
        frames += rng.integers(-8, 9, frames.shape, dtype=np.int16)
        write_video(path, frames.clip(0, 255).astype(np.uint8), fps=fps, bframes=bframes, gop=gop)
    return paths


# ------------------------------------------------------------------------------------------------
# pipelines (module level so DataLoader workers can use them)


class _ClipSpecs:
    """Random (video, start) draws shared by the baseline datasets (same distribution as
    KineticsDataset's train sampling)."""

    def __init__(self, paths: list[str], num_frames: int, stride: int) -> None:
        self.paths, self.num_frames, self.stride = paths, num_frames, stride
        self.span = (num_frames - 1) * stride + 1
        self.lengths: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.paths)

    def indices(self, n: int) -> np.ndarray:
        start = random.randint(0, max(n - self.span, 0))
        return (start + np.arange(self.num_frames) * self.stride) % n


class RawDecode(_ClipSpecs):
    def __init__(self, paths: list[str], num_frames: int, stride: int, backend: str) -> None:
        super().__init__(paths, num_frames, stride)
        self.backend = backend

    def __getitem__(self, i: int):
        import torch

        path = self.paths[i]
        if self.backend == "decord":
            import decord

            vr = decord.VideoReader(path, num_threads=1)
            out = vr.get_batch(self.indices(len(vr)).tolist()).asnumpy()
            del vr
        elif self.backend == "torchcodec":
            from torchcodec.decoders import VideoDecoder

            dec = VideoDecoder(path, seek_mode="exact", dimension_order="NHWC", num_ffmpeg_threads=1)
            idx = self.indices(len(dec))
            uniq = np.unique(idx)
            out = dec.get_frames_at(uniq.tolist()).data.numpy()[np.searchsorted(uniq, idx)]
        else:
            import av

            with av.open(path) as c:
                s = c.streams.video[0]
                s.codec_context.thread_count = 1
                n = s.frames or int(float(s.duration * s.time_base) * float(s.average_rate))
                idx = self.indices(n)
                want = {int(k) for k in idx}
                frames = {}
                for j, f in enumerate(c.decode(s)):
                    if j in want:
                        frames[j] = f.to_ndarray(format="rgb24", threads=1)
                    if j >= idx.max():
                        break
                out = np.stack([frames[int(k)] for k in idx])
        return torch.from_numpy(out)


class ReaderDecode(_ClipSpecs):
    """VideoReader.get_frames of one clip's frames; with ``k`` > 1, of the union of k clips' frames
    drawn from one span by the toolkit's own sampler (what KineticsDataset(clips_per_decode=k)
    decodes for an item), counted as k clips: the rate clips per decode could reach if every
    per-clip step (RGB views, resize, flip, collate) were free."""

    def __init__(self, paths: list[str], num_frames: int, stride: int, backend: str, k: int = 1) -> None:
        super().__init__(paths, num_frames, stride)
        self.backend, self.k = backend, k

    def __getitem__(self, i: int):
        from videogn.data import VideoReader
        from videogn.data.sampling import clip_step, train_clips_indices

        with VideoReader(self.paths[i], backend=self.backend) as vr:
            if self.k == 1:
                return vr.get_frames(self.indices(len(vr)))
            idx = train_clips_indices(len(vr), self.num_frames, clip_step(self.stride, vr.fps), self.k)
            return vr.get_frames(np.unique(idx))  # (distinct frames, H, W, 3), as the dataset reads them


class CountClips:
    """Collate for ReaderDecode with k > 1: the items' frames, each item counted as k clips."""

    def __init__(self, k: int) -> None:
        self.k = k

    def __call__(self, items: list[Any]) -> list[Any]:
        return [frames for frames in items for _ in range(self.k)]


class PyTorchVideoClips(_ClipSpecs):
    def __init__(self, paths: list[str], num_frames: int, stride: int, backend: str, fps: float) -> None:
        super().__init__(paths, num_frames, stride)
        self.backend, self.fps = backend, fps

    def __getitem__(self, i: int):
        import torch
        from pytorchvideo.data.encoded_video import EncodedVideo

        from videogn.data.transforms import train_transform

        video = EncodedVideo.from_path(self.paths[i], decode_audio=False, decoder=self.backend)
        n = int(round(float(video.duration) * self.fps))
        start = random.randint(0, max(n - self.span, 0)) / self.fps
        clip = video.get_clip(start, start + self.span / self.fps)["video"]  # float (3, T', H, W)
        video.close()
        t = clip.shape[1]
        idx = torch.linspace(0, t - 1, self.num_frames).round().long()  # UniformTemporalSubsample
        frames = clip.index_select(1, idx).permute(1, 2, 3, 0).clamp_(0, 255).to(torch.uint8)  # (T, H, W, 3)
        return train_transform(frames)


# ------------------------------------------------------------------------------------------------
# one configuration (child process)


def _vm_hwm_mb(pid: int | str = "self") -> float:
    """Peak resident set (VmHWM) of a process in MiB; 0 when it is gone. Unlike getrusage's
    ru_maxrss it is per address space, so it does not inherit the parent's peak across exec."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _children() -> list[int]:
    pids = []
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/children") as f:
                pids += [int(p) for p in f.read().split()]
        except OSError:
            pass
    return pids


def _cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds used so far by ``pids`` (from ``/proc/<pid>/stat``)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()  # after "pid (comm)": field 3 is fields[0]
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
        except (OSError, IndexError, ValueError):
            pass
    return total / os.sysconf("SC_CLK_TCK")


class _WorkerRSS:
    """Samples the VmHWM of this process's children (the DataLoader workers) every 50 ms."""

    def __init__(self) -> None:
        import threading

        self.peak, self._stop = 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.sample()

    def sample(self) -> None:
        for pid in _children():
            self.peak = max(self.peak, _vm_hwm_mb(pid))

    def stop(self) -> float:
        self.sample()
        self._stop.set()
        self._thread.join()
        return self.peak


def run_config(cfg: dict[str, Any]) -> dict[str, Any]:
    import torch
    from torch.utils.data import DataLoader, RandomSampler

    from videogn.data import KineticsDataset, collate_clips, make_worker_init_fn

    torch.set_num_threads(1)
    paths = cfg["paths"]
    kind, backend, workers = cfg["pipeline"], cfg["backend"], cfg["workers"]
    k = cfg.get("clips_per_decode", 1)  # clips per dataset item: the loader draws clips / k videos
    if kind == "videogn":
        ds = KineticsDataset(cfg["root"], num_frames=cfg["num_frames"], stride=cfg["stride"], backend=backend,
                             dtype=cfg.get("dtype", "uint8"), clips_per_decode=k)
        collate = collate_clips
    elif kind == "raw":
        ds, collate = RawDecode(paths, cfg["num_frames"], cfg["stride"], backend), torch.stack
    elif kind == "reader":
        ds = ReaderDecode(paths, cfg["num_frames"], cfg["stride"], backend, k)
        collate = torch.stack if k == 1 else CountClips(k)
    else:
        ds, collate = PyTorchVideoClips(paths, cfg["num_frames"], cfg["stride"], backend, cfg["fps"]), torch.stack
    sampler = RandomSampler(ds, replacement=True, num_samples=cfg["clips"] // k, generator=torch.Generator().manual_seed(0))
    loader = DataLoader(ds, batch_size=cfg["batch_size"] // k, sampler=sampler, num_workers=workers, collate_fn=collate,
                        worker_init_fn=make_worker_init_fn(0) if workers else None)
    random.seed(0)
    rss = _WorkerRSS()
    t0 = time.perf_counter()
    it = iter(loader)
    first = next(it)
    t_first = time.perf_counter()
    # the loading processes' CPU time over the timed part: the workers', or this process's with none
    pids = _children() if workers else [os.getpid()]
    cpu0 = cpu1 = _cpu_s(pids)
    n = 0
    for batch in it:
        n += len(batch["video"]) if isinstance(batch, dict) else len(batch)
        cpu1 = _cpu_s(pids)  # read at every batch: the workers exit after the last one
    t_end = time.perf_counter()
    cpu = cpu1 - cpu0
    child = rss.stop()
    del it, loader
    own = _vm_hwm_mb()
    first_n = len(first["video"]) if isinstance(first, dict) else len(first)
    dt = t_end - t_first
    clips_s = n / dt if n else float("nan")
    return {
        "pipeline": kind, "backend": backend, "workers": workers, "clips_per_decode": k, "clips_timed": n,
        "seconds": dt, "clips_per_s": clips_s, "clips_per_s_per_worker": clips_s / max(workers, 1),
        "loader_cpu_s": cpu, "clips_per_cpu_s": n / cpu if cpu > 0 else float("nan"),
        "frames_per_s": clips_s * cfg["num_frames"],
        "first_batch_s": t_first - t0, "first_batch_clips": first_n,
        "peak_rss_main_mb": own, "peak_rss_worker_mb": child if workers else 0.0,
    }


def item_ratio(cfg: dict[str, Any]) -> dict[str, Any]:
    """KineticsDataset item (uint8) vs the VideoReader decode of the same clip. Each clip is timed
    both ways back to back (order alternating), so the two sides see the same clips (a clip's cost
    depends on its start: frames decoded from the keyframe) and the same machine load (on a shared
    machine it changes within seconds); a round's ratio is its decode time over its item time."""
    import torch

    from videogn.data import KineticsDataset, VideoReader, train_clip_indices

    torch.set_num_threads(1)
    backend, n, t, stride = cfg["backend"], cfg["per_round"], cfg["num_frames"], cfg["stride"]
    ds = KineticsDataset(cfg["root"], num_frames=t, stride=stride, backend=backend, dtype="uint8")
    rng = random.Random(0)

    def item(i: int, seed: int) -> None:
        torch.manual_seed(seed)
        ds[i]

    def decode(i: int, seed: int) -> None:
        torch.manual_seed(seed)  # the item's first draw is its start frame: the same frames
        with VideoReader(ds.records[i].path, backend=backend) as vr:
            vr.get_frames(train_clip_indices(len(vr), t, float(stride)))

    def timed(fn: Any, i: int, seed: int) -> np.ndarray:
        t0, c0 = time.perf_counter(), time.process_time()
        fn(i, seed)
        return np.array([time.perf_counter() - t0, time.process_time() - c0])

    item(0, 0), decode(0, 0)  # warm-up: imports, first open
    items, decodes, ratios, cpu_ratios = [], [], [], []
    for r in range(cfg["rounds"]):
        a, b = np.zeros(2), np.zeros(2)  # (wall, CPU) seconds of the round's items, decodes
        for k in range(n):
            i, seed = rng.randrange(len(ds)), rng.randrange(2**31)
            if (r * n + k) % 2:
                b += timed(decode, i, seed)
                a += timed(item, i, seed)
            else:
                a += timed(item, i, seed)
                b += timed(decode, i, seed)
        items.append(n / a[0])
        decodes.append(n / b[0])
        ratios.append(b[0] / a[0])
        cpu_ratios.append(b[1] / a[1])
    return {"backend": backend, "rounds": cfg["rounds"], "clips_per_round": n,
            "item_clips_per_s": float(np.median(items)), "decode_clips_per_s": float(np.median(decodes)),
            "median_ratio": float(np.median(ratios)), "ratios": ratios,
            "median_cpu_ratio": float(np.median(cpu_ratios)), "cpu_ratios": cpu_ratios}


def workers_needed(rates: dict[int, float], target: float) -> str:
    """The smallest measured worker count whose clips/s reaches ``target``; else an estimate
    (``~N``) from the best clips/s per worker measured."""
    for w in sorted(rates):
        if w > 0 and rates[w] >= target:
            return str(w)
    per_worker = max((r / w for w, r in rates.items() if w > 0), default=0.0)
    if per_worker <= 0:
        return "-"
    return f"~{int(np.ceil(target / per_worker))}"


# ------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="few short videos and clips (a smoke run, ~1-2 min)")
    ap.add_argument("--videos", default=None, help="folder of real videos (searched recursively) instead of synthetic ones")
    ap.add_argument("--cache", default="/tmp/videogn_bench_loader", help="where synthetic videos are kept")
    ap.add_argument("--num-videos", type=int, default=8)
    ap.add_argument("--video-frames", type=int, default=300, help="frames per synthetic video (30 fps)")
    ap.add_argument("--height", type=int, default=256)
    ap.add_argument("--width", type=int, default=340)
    ap.add_argument("--num-frames", type=int, default=32)
    ap.add_argument("--stride", type=int, default=2)
    ap.add_argument("--clips", type=int, default=64, help="clips per configuration")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--workers", nargs="+", default=["1", "2"], help="worker counts, e.g. --workers 1 2 4")
    ap.add_argument("--target-clips-per-s", type=float, default=None,
                    help="print the workers each pipeline needs to load this many clips/s")
    ap.add_argument("--dtype", default="uint8", choices=["uint8", "float32"], help="KineticsDataset output")
    ap.add_argument("--clips-per-decode", nargs="+", type=int, default=[1], metavar="K",
                    help="videogn and reader pipelines: K training clips from each decoded span (data.clips_per_decode); "
                         "several values measure each, e.g. --clips-per-decode 1 2")
    ap.add_argument("--repeats", type=int, default=1,
                    help="run every configuration this many times, the K values' order reversed every other "
                         "time; each K > 1 is compared with K = 1 of the same repeat (the machine's speed drifts "
                         "between configurations) and summarised as median [min, max] over repeats")
    ap.add_argument("--item-ratio", action="store_true", help="only the item/decode ratio per set (see above)")
    ap.add_argument("--rounds", type=int, default=7, help="--item-ratio: rounds (a ratio each)")
    ap.add_argument("--per-round", type=int, default=8,
                    help="--item-ratio: clips per round, each timed as item and as decode")
    ap.add_argument("--backends", default="decord,pyav", help="comma-separated: decord, pyav, torchcodec")
    ap.add_argument("--pipelines", default="raw,reader,videogn,pytorchvideo")
    ap.add_argument("--sets", default="nob,bframes", help=f"synthetic video sets, from {list(VIDEO_SETS)}")
    ap.add_argument("--out", default=None, help="write results as JSON here")
    ap.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args._child:
        child = json.loads(args._child)
        print(json.dumps(item_ratio(child) if child.get("item_ratio") else run_config(child)))
        return 0

    if args.quick:
        args.num_videos, args.video_frames, args.clips = 4, 120, 16
    if args.repeats < 1:
        ap.error(f"--repeats must be at least 1, got {args.repeats}")
    ks = list(dict.fromkeys(args.clips_per_decode))
    for k in ks:
        if k < 1 or args.batch_size % k or args.clips % k:
            ap.error(f"--clips-per-decode {k}: K must be >= 1 and divide --batch-size={args.batch_size} and "
                     f"--clips={args.clips} (both count clips)")
    fps = 30.0
    sets: dict[str, tuple[Path, list[str]]] = {}  # set name -> (root, paths)
    if args.videos:
        root = Path(args.videos)
        paths = sorted(str(p) for p in root.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS)
        if not paths:
            ap.error(f"no videos found under {args.videos}")
        sets["real"] = (root, paths)
    else:
        for name in args.sets.split(","):
            if name not in VIDEO_SETS:
                ap.error(f"--sets: unknown set {name!r}, choose from {list(VIDEO_SETS)}")
            bframes, gop, _ = VIDEO_SETS[name]
            root = Path(args.cache) / f"{name}_{args.num_videos}x{args.video_frames}_{args.height}x{args.width}"
            sets[name] = (root, [str(p) for p in make_videos(root, args.num_videos, args.video_frames, args.height,
                                                             args.width, bframes=bframes, gop=gop)])
    real = bool(args.videos)

    have_ptv = subprocess.run([sys.executable, "-c", "import pytorchvideo.data.encoded_video"], capture_output=True).returncode == 0
    workers = [int(w) for arg in args.workers for w in str(arg).split(",") if w]
    if args.item_ratio:
        return _run_item_ratio(args, sets)
    groups: list[list[dict[str, Any]]] = []
    if "pytorchvideo" in args.pipelines.split(",") and not have_ptv:
        print("pytorchvideo's EncodedVideo does not import: skipped", file=sys.stderr)
    for set_name, (root, paths) in sets.items():
        for pipeline in args.pipelines.split(","):
            if pipeline == "pytorchvideo" and not have_ptv:
                continue
            for backend in args.backends.split(","):
                ws = ([0] if pipeline in ("raw", "reader") else []) + workers
                for w in ws:
                    group = []  # the K values of one (set, pipeline, backend, workers): adjacent
                    for k in ks if pipeline in ("videogn", "reader") else [1]:
                        group.append({"set": set_name, "pipeline": pipeline, "backend": backend, "workers": w,
                                        "paths": paths, "root": str(root), "num_frames": args.num_frames,
                                        "stride": args.stride, "clips": args.clips, "batch_size": args.batch_size,
                                        "fps": fps, "real": real, "dtype": args.dtype, "clips_per_decode": k})
                    groups.append(group)
    # each repeat runs every group, its K order reversed every other repeat, so that drift in the
    # machine's speed over a repeat falls on K = 1 and K > 1 alike
    configs = [{**cfg, "repeat": rep} for rep in range(args.repeats)
               for group in groups for cfg in (group if rep % 2 == 0 else group[::-1])]
    loadavg_start = os.getloadavg()
    results = []
    header = (f"{'set':<9}{'pipeline':<14}{'backend':<8}{'workers':>8}{'K':>3}{'clips/s':>10}{'clips/s/wkr':>12}{'clips/CPU-s':>12}"
              f"{'frames/s':>10}{'% raw':>8}{'% best':>8}{'RSS main':>10}{'RSS wkr':>9}")
    print(header)
    print("-" * len(header))
    for cfg in configs:
        proc = subprocess.run([sys.executable, __file__, "--_child", json.dumps(cfg)], capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{cfg['set']:<9}{cfg['pipeline']:<14}{cfg['backend']:<8}{cfg['workers']:>8}  FAILED: {proc.stderr.strip()[-300:]}")
            continue
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        res["set"], res["repeat"] = cfg["set"], cfg["repeat"]
        raw = next((r for r in results if r["set"] == res["set"] and r["pipeline"] == "raw" and r["repeat"] == res["repeat"]
                    and r["backend"] == res["backend"] and r["workers"] == res["workers"]), None)
        res["fraction_of_raw"] = res["clips_per_s"] / raw["clips_per_s"] if raw and res["pipeline"] != "raw" else None
        # raw decord's seeks return wrong frames on reordered streams: a ceiling only where exact
        exact = [r for r in results if r["set"] == res["set"] and r["pipeline"] == "raw" and r["workers"] == res["workers"]
                 and r["repeat"] == res["repeat"]
                 and (r["backend"] == "pyav" or res["set"] == "nob")]
        best = max((r["clips_per_s"] for r in exact), default=None)
        res["fraction_of_best_raw"] = res["clips_per_s"] / best if best and res["pipeline"] != "raw" else None
        results.append(res)
        frac = f"{100 * res['fraction_of_raw']:.0f}%" if res["fraction_of_raw"] else "-"
        frac_best = f"{100 * res['fraction_of_best_raw']:.0f}%" if res["fraction_of_best_raw"] else "-"
        print(f"{res['set']:<9}{res['pipeline']:<14}{res['backend']:<8}{res['workers']:>8}{res['clips_per_decode']:>3}"
              f"{res['clips_per_s']:>10.2f}{res['clips_per_s_per_worker']:>12.2f}{res['clips_per_cpu_s']:>12.2f}"
              f"{res['frames_per_s']:>10.1f}{frac:>8}{frac_best:>8}{res['peak_rss_main_mb']:>9.0f}M{res['peak_rss_worker_mb']:>8.0f}M",
              flush=True)
    for r in results:
        if r["pipeline"] in ("videogn", "reader") and r["clips_per_decode"] > 1:
            one = next((p for p in results if p["pipeline"] == r["pipeline"] and p["clips_per_decode"] == 1
                        and (p["set"], p["backend"], p["workers"], p["repeat"])
                        == (r["set"], r["backend"], r["workers"], r["repeat"])), None)
            r["speedup_vs_one_clip_per_decode"] = r["clips_per_s"] / one["clips_per_s"] if one else None
            r["cpu_speedup_vs_one_clip_per_decode"] = r["clips_per_cpu_s"] / one["clips_per_cpu_s"] if one else None
            if one:
                print(f"[{r['set']}] {r['pipeline']}-{r['backend']}, {r['workers']} worker(s): clips_per_decode={r['clips_per_decode']} "
                      f"{r['clips_per_s_per_worker']:.2f} clips/s per worker = {r['speedup_vs_one_clip_per_decode']:.2f}x "
                      f"K=1's {one['clips_per_s_per_worker']:.2f}; per CPU-second "
                      f"{r['cpu_speedup_vs_one_clip_per_decode']:.2f}x")
    k_summary = summarize_clips_per_decode(results)
    for row in k_summary:
        print(f"[{row['set']}] {row['pipeline']}-{row['backend']}, {row['workers']} worker(s), K={row['clips_per_decode']} "
              f"/ K=1 over {row['repeats']} repeat(s): clips/s per worker {row['median']:.2f}x "
              f"[{row['min']:.2f}, {row['max']:.2f}], per CPU-second {row['cpu_median']:.2f}x "
              f"[{row['cpu_min']:.2f}, {row['cpu_max']:.2f}]")
    for r in results:
        if r["pipeline"] == "videogn" and r["clips_per_decode"] == 1:  # one clip per video, as pytorchvideo
            ptv = [p for p in results if p["set"] == r["set"] and p["pipeline"] == "pytorchvideo"
                   and p["workers"] == r["workers"] and p["repeat"] == r["repeat"]]
            same = next((p for p in ptv if p["backend"] == r["backend"]), None)
            best = max(ptv, key=lambda p: p["clips_per_s"], default=None)
            r["speedup_vs_pytorchvideo"] = r["clips_per_s"] / same["clips_per_s"] if same else None
            r["speedup_vs_best_pytorchvideo"] = r["clips_per_s"] / best["clips_per_s"] if best else None
            if same and best:
                print(f"[{r['set']}] videogn-{r['backend']}, {r['workers']} worker(s): "
                      f"{r['speedup_vs_pytorchvideo']:.2f}x pytorchvideo-{r['backend']}, "
                      f"{r['speedup_vs_best_pytorchvideo']:.2f}x the fastest pytorchvideo ({best['backend']})")
    if args.target_clips_per_s:
        print(f"\nworkers for {args.target_clips_per_s:g} clips/s ({args.num_frames} frames, stride {args.stride}, "
              f"{args.height}x{args.width} source):")
        def key_of(r: dict[str, Any]) -> tuple[str, str, str, int]:
            return r["set"], r["pipeline"], r["backend"], r["clips_per_decode"]

        for key in dict.fromkeys(key_of(r) for r in results):
            by_workers: dict[int, list[float]] = {}
            for r in results:
                if key_of(r) == key:
                    by_workers.setdefault(r["workers"], []).append(r["clips_per_s"])
            rates = {w: float(np.median(v)) for w, v in by_workers.items()}  # over --repeats
            need = workers_needed(rates, args.target_clips_per_s)
            per = ", ".join(f"{w}: {c:.1f}" for w, c in sorted(rates.items()))
            name = f"{key[1]}-{key[2]}" + (f" K={key[3]}" if key[3] > 1 else "")
            print(f"  {key[0]:<9}{name:<20} needs {need:>5} worker(s)   (clips/s by workers: {per})")
            for r in results:
                if key_of(r) == key:
                    r["workers_for_target"] = need
    import torch

    from videogn.data import decode_span

    meta = {
        "machine": _machine(),
        "loadavg_start": loadavg_start, "loadavg_end": os.getloadavg(), "torch": torch.__version__, "python": platform.python_version(),
        "videos": {name: len(paths) for name, (_, paths) in sets.items()},
        "video_source": str(args.videos) if args.videos else {
            name: f"synthetic {args.num_videos} x {args.video_frames} frames {args.width}x{args.height} 30 fps, "
            f"{VIDEO_SETS[name][2]}" for name in sets},
        "clip": f"{args.num_frames} frames, stride {args.stride}", "clips_per_config": args.clips,
        "batch_size": args.batch_size, "quick": args.quick, "dtype": args.dtype, "clips_per_decode": ks,
        "decode_span_frames": decode_span(args.num_frames, float(args.stride)),
        "target_clips_per_s": args.target_clips_per_s, "repeats": args.repeats,
    }
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"meta": meta, "results": results, "clips_per_decode_ratios": k_summary},
                                             indent=1) + "\n")
    return 0


def summarize_clips_per_decode(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (set, pipeline, backend, workers, K > 1): the ratio to K = 1 of the same repeat (clips/s
    per worker, and per CPU-second), as median, min and max over the repeats that have both."""
    out = []
    keys = dict.fromkeys((r["set"], r["pipeline"], r["backend"], r["workers"], r["clips_per_decode"])
                         for r in results if r.get("speedup_vs_one_clip_per_decode"))
    for set_name, pipeline, backend, workers, k in keys:
        rows = [r for r in results if (r["set"], r["pipeline"], r["backend"], r["workers"], r["clips_per_decode"])
                == (set_name, pipeline, backend, workers, k) and r.get("speedup_vs_one_clip_per_decode")]
        wall = [r["speedup_vs_one_clip_per_decode"] for r in rows]
        cpu = [r["cpu_speedup_vs_one_clip_per_decode"] for r in rows]
        out.append({"set": set_name, "pipeline": pipeline, "backend": backend, "workers": workers,
                    "clips_per_decode": k, "repeats": len(rows), "ratios": wall, "cpu_ratios": cpu,
                    "median": float(np.median(wall)), "min": min(wall), "max": max(wall),
                    "cpu_median": float(np.median(cpu)), "cpu_min": min(cpu), "cpu_max": max(cpu)})
    return out


def _machine() -> str:
    cpu = platform.processor() or "unknown cpu"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return f"{os.cpu_count()}-core {platform.machine()} {cpu}"


def _run_item_ratio(args: argparse.Namespace, sets: dict[str, tuple[Path, list[str]]]) -> int:
    """``--item-ratio``: one fresh process per (set, backend)."""
    results = []
    print(f"{'set':<9}{'backend':<12}{'item clips/s':>14}{'decode clips/s':>16}{'median ratio':>14}{'CPU-time ratio':>16}")
    for set_name, (root, paths) in sets.items():
        for backend in args.backends.split(","):
            cfg = {"item_ratio": True, "backend": backend, "root": str(root), "paths": paths,
                   "num_frames": args.num_frames, "stride": args.stride, "rounds": args.rounds,
                   "per_round": args.per_round}
            proc = subprocess.run([sys.executable, __file__, "--_child", json.dumps(cfg)], capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"{set_name:<9}{backend:<12}  FAILED: {proc.stderr.strip()[-300:]}")
                continue
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            res["set"] = set_name
            results.append(res)
            print(f"{set_name:<9}{backend:<12}{res['item_clips_per_s']:>14.2f}{res['decode_clips_per_s']:>16.2f}"
                  f"{res['median_ratio']:>14.3f}{res['median_cpu_ratio']:>16.3f}", flush=True)
    if args.out:
        meta = {"machine": _machine(), "loadavg": os.getloadavg(), "clip": f"{args.num_frames} frames, stride {args.stride}",
                "mode": "item-ratio", "rounds": args.rounds, "per_round": args.per_round}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"meta": meta, "results": results, "clips_per_decode_ratios": k_summary},
                                             indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

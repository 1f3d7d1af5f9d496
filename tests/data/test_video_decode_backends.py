"""The backend interface and registry: every registered backend implements every hook of
VideoBackend and is named once in the auto order or the exclusions; an unavailable backend (here:
torchcodec with its native library failing to load) is left out of ``auto`` and refused with a
VideoDecodeError that says what to install; the test-side switch that makes CI fail instead of skip."""

import inspect
from pathlib import Path

import numpy as np
import pytest

from video_factory import REQUIRE_TORCHCODEC_ENV, backend_params, require_backend

from videogn.data import VideoDecodeError, VideoReader, available_backends, unavailable_backends
from videogn.data import torchcodec_backend
from videogn.data.video_backends import AUTO_ORDER, BACKENDS, NOT_IN_AUTO, VideoBackend, auto_backends


def interface_problems(name: str, cls: type) -> list[str]:
    """What ``cls``, registered as ``name``, lacks to be a backend VideoReader can use."""
    if not (isinstance(cls, type) and issubclass(cls, VideoBackend)):
        return [f"{name}: {cls!r} does not subclass VideoBackend"]
    problems = [f"{name}: hook {hook!r} not implemented" for hook in sorted(getattr(cls, "__abstractmethods__", ()))]
    if getattr(cls, "name", None) != name:
        problems.append(f"{name}: the class's name is {getattr(cls, 'name', None)!r}")
    if "cpu" not in cls.devices:
        problems.append(f"{name}: does not decode to the CPU (devices={cls.devices})")
    # the calls VideoReader makes
    calls = {"__init__": ((None, Path("v.mp4"), 1), {"device": "cpu"}), "get": ((None, np.arange(2)), {"window": None})}
    for hook, (args, kwargs) in calls.items():
        try:
            inspect.signature(getattr(cls, hook)).bind(*args, **kwargs)
        except TypeError as e:
            problems.append(f"{name}: {hook} cannot be called as VideoReader calls it ({e})")
    in_auto, excluded = name in AUTO_ORDER, name in NOT_IN_AUTO
    if in_auto == excluded:
        problems.append(f"{name}: must be in exactly one of AUTO_ORDER and NOT_IN_AUTO (in_auto={in_auto})")
    if excluded and not NOT_IN_AUTO[name].strip():
        problems.append(f"{name}: excluded from auto without a reason")
    return problems


def test_every_registered_backend_implements_the_interface():
    assert {"pyav", "decord", "torchcodec"} <= set(BACKENDS)
    problems = [p for name in BACKENDS for p in interface_problems(name, BACKENDS.get(name))]
    assert not problems, "\n".join(problems)
    # the auto order and the exclusions name registered backends only, each once
    assert len(set(AUTO_ORDER)) == len(AUTO_ORDER) and set(AUTO_ORDER) | set(NOT_IN_AUTO) == set(BACKENDS)
    assert AUTO_ORDER[0] == "pyav"  # measured fastest (decode.py's docstring)


def test_a_backend_missing_a_hook_is_caught():
    class NoClose(VideoBackend):
        name = "noclose"

        @classmethod
        def unavailable_reason(cls):
            return None

        def __init__(self, path, num_threads, device="cpu"):
            pass

        def get(self, idx, window=None):
            return np.empty((0, 1, 1, 3), np.uint8)

    class OldSignature(NoClose):
        name = "oldsig"

        def __init__(self, path, num_threads):  # no device argument
            pass

        def close(self):
            pass

    assert interface_problems("noclose", NoClose) == [
        "noclose: hook 'close' not implemented",
        "noclose: must be in exactly one of AUTO_ORDER and NOT_IN_AUTO (in_auto=False)",
    ]
    assert any("__init__ cannot be called" in p for p in interface_problems("oldsig", OldSignature))
    assert interface_problems("pyav", type("NotABackend", (), {}))[0].endswith("does not subclass VideoBackend")


@pytest.mark.parametrize("backend", backend_params())
def test_open_hook_gives_what_the_reader_reads(good_videos, backend):
    with VideoReader(good_videos["h264_short.mp4"], backend=backend) as vr:
        impl = vr._impl
        assert isinstance(impl, VideoBackend) and impl.name == backend
        assert impl.num_frames == len(vr) == 8 and impl.fps == pytest.approx(30)
        assert impl.frame_shape == (*vr.frame_size, 3) and isinstance(impl.reordered, bool)


def test_unknown_backend_and_device(good_videos):
    path = good_videos["h264_short.mp4"]
    with pytest.raises(ValueError, match=r"backend must be one of \['auto', 'decord', 'pyav', 'torchcodec'\]"):
        VideoReader(path, backend="opencv")
    with pytest.raises(ValueError, match="needs backend='torchcodec'"):
        VideoReader(path, backend="pyav", device="cuda")
    with pytest.raises(ValueError, match="needs backend='torchcodec'.*got backend='auto'"):
        VideoReader(path, device="cuda")


def test_probe_agrees_with_torchcodec():
    # torchcodec itself records at import whether its FFmpeg-dependent library loaded
    torchcodec = pytest.importorskip("torchcodec")
    loaded = torchcodec.ffmpeg_major_version is not None
    assert (torchcodec_backend.torchcodec_unavailable_reason() is None) == loaded
    assert ("torchcodec" in available_backends()) == loaded == ("torchcodec" not in unavailable_backends())


LOAD_ERROR = ("Could not load libtorchcodec. Likely causes:\n  1. FFmpeg is not properly installed in your environment.\n"
              "[start of libtorchcodec loading traceback]\nFFmpeg version 9:\nTraceback (most recent call last):\n"
              "OSError: libavutil.so.61: cannot open shared object file: No such file or directory\n")


@pytest.fixture
def torchcodec_library_fails(monkeypatch):
    """torchcodec's own loader (the call its VideoDecoder makes first) raises as it does without FFmpeg."""
    utils = pytest.importorskip("torchcodec._internally_replaced_utils")

    def fail():
        raise RuntimeError(LOAD_ERROR)

    monkeypatch.setattr(utils, "load_core_libraries", fail)
    torchcodec_backend.torchcodec_unavailable_reason.cache_clear()
    yield
    torchcodec_backend.torchcodec_unavailable_reason.cache_clear()  # the real probe again afterwards


def test_library_load_failure_makes_torchcodec_unavailable(torchcodec_library_fails, good_videos):
    why = unavailable_backends()["torchcodec"]
    assert why.startswith("torchcodec cannot load its native library (RuntimeError: Could not load libtorchcodec.")
    assert "libavutil.so.61: cannot open shared object file" in why and "apt-get install ffmpeg" in why
    assert BACKENDS.get("torchcodec").unavailable_reason() == why
    assert "torchcodec" not in available_backends() and "torchcodec" not in auto_backends()
    assert auto_backends()[0] == "pyav"

    path = good_videos["h264_short.mp4"]
    with pytest.raises(VideoDecodeError) as info:
        VideoReader(path, backend="torchcodec")
    err = info.value
    assert err.backend == "torchcodec" and err.path == str(path)
    assert "install FFmpeg's shared libraries (e.g. `apt-get install ffmpeg`" in str(err)
    assert "Could not load libtorchcodec. Likely causes:" in str(err)
    with VideoReader(path) as vr:
        assert vr.backend == "pyav"

    # a test of the torchcodec backend skips with the reason, or fails where CI requires it
    with pytest.raises(pytest.skip.Exception, match="torchcodec backend unavailable: torchcodec cannot load"):
        require_backend("torchcodec")
    with pytest.MonkeyPatch.context() as env:
        env.setenv(REQUIRE_TORCHCODEC_ENV, "1")
        with pytest.raises(pytest.fail.Exception, match="VIDEOGN_REQUIRE_TORCHCODEC=1 but the torchcodec backend"):
            require_backend("torchcodec")
        require_backend("pyav")  # available backends pass either way


def test_torchcodec_cases_carry_the_marker():
    # CI's FFmpeg step selects the torchcodec tests by their marker
    params = {p if isinstance(p, str) else p.values[0]: p for p in backend_params("auto")}
    assert list(params) == [*AUTO_ORDER, *(n for n in BACKENDS if n not in AUTO_ORDER), "auto"]
    assert [m.name for m in params["torchcodec"].marks] == ["torchcodec"]

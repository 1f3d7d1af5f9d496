"""The compact record index behind :class:`~videogn.data.KineticsDataset`: every annotated video
held in a few flat arrays, not as one Python object per video.

Why: a DataLoader worker that reads a list of per-video objects writes to them (reference counts,
the garbage collector's marks), and every page it writes to stops being shared with the parent
(copy-on-read). For 650k Kinetics-700 rows that was ~285 MB of private memory per worker. Here a
worker reads bytes out of a handful of numpy arrays and writes nothing to them; records are built
on access. Under ``fork`` the arrays stay shared with the parent page for page; when the index is
pickled to start a ``spawn``/``forkserver`` worker its arrays move once into shared memory (torch's
multiprocessing pickler sends them as file descriptors), so every worker maps the same pages; a
plain ``pickle.dumps`` writes them as a few compact buffers. The same idea as detectron2's
``DatasetFromList(serialize=True)`` and mmengine's ``BaseDataset(serialize_data=True)``, but
columnar: no per-record pickling, and labels stay a plain int32 array.
"""

from __future__ import annotations

import multiprocessing.context
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Iterator, Sequence, TypeVar, overload

import numpy as np
import torch

__all__ = ["MissingVideo", "MissingVideos", "RecordIndex", "VideoRecord"]


@dataclass
class VideoRecord:
    """One annotated video. ``path`` is None when the file was not found; ``label`` is -1 when
    the annotation has none (Kinetics test CSVs)."""

    key: str
    path: Path | None
    label: int
    label_name: str | None = None


@dataclass(frozen=True)
class MissingVideo:
    """An annotation row whose video file does not exist.

    Attributes:
        key: the row's file name (CSV: ``filename_pattern`` applied to the row, which holds the
            youtube_id and times; list file: its relative path; folder trees never miss files).
        expected: where the file was looked for (CSV rows match by stem, any extension, anywhere
            under root: this is ``root/key``).
        label: the row's class index (-1: unlabelled).
    """

    key: str
    expected: Path
    label: int


# how a record's path is stored (``_kind``): missing; ``root/key``; ``root/<stored>``; ``<stored>``
_MISSING, _ROOT_KEY, _ROOT_REL, _AS_IS = 0, 1, 2, 3
_ENC = ("utf-8", "surrogateescape")  # file names need not be valid UTF-8 (os.fsencode's rule)


def _offsets(ends: np.ndarray) -> np.ndarray:
    """Offsets (n + 1) from the strings' end positions: uint32 while the blob is under 4 GiB (it
    always is in practice; 4 bytes a record less than int64), else int64."""
    total = int(ends[-1]) if len(ends) else 0
    out = np.zeros(len(ends) + 1, dtype=np.uint32 if total < 2**32 else np.int64)
    out[1:] = ends
    return out


def _pack(strings: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """UTF-8 blob (uint8) and offsets (n + 1) of ``strings``: string i is blob[o[i]:o[i+1]]."""
    enc = [s.encode(*_ENC) for s in strings]
    ends = np.cumsum(np.fromiter(map(len, enc), dtype=np.int64, count=len(enc)))
    return np.frombuffer(b"".join(enc), dtype=np.uint8).copy(), _offsets(ends)


def _take_strings(blob: np.ndarray, offsets: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The strings at ``rows`` as a new compact (blob, offsets), without decoding them."""
    offsets = offsets.astype(np.int64)
    starts, lens = offsets[rows], offsets[rows + 1] - offsets[rows]
    new = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lens, out=new[1:])
    # byte j of new string k comes from starts[k] + (j - new[k])
    src = np.repeat(starts - new[:-1], lens) + np.arange(int(new[-1]), dtype=np.int64)
    return blob[src], _offsets(new[1:])


_T = TypeVar("_T")


class _ListLike(Sequence[_T], Generic[_T]):
    """A read-only sequence that iterates and compares like the list it replaces."""

    def __iter__(self) -> Iterator[_T]:
        for i in range(len(self)):
            yield self[i]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, (str, bytes)):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other))

    __hash__ = None  # type: ignore[assignment]  # equal to lists, so unhashable like them


class RecordIndex(_ListLike[VideoRecord]):
    """Read-only sequence of :class:`VideoRecord`, stored as flat arrays.

    ``index[i]`` builds the record (key, path, label, label name) from the arrays; slices and
    :meth:`take` give new compact indexes. Equal to any sequence holding the same records.

    Storage (one home per value): ``root`` once; keys as a UTF-8 blob + offsets; labels
    int32 (-1: unlabelled); label names from ``classes`` (the class index in index order); paths as
    a uint8 kind per record (missing, ``root/key``, under ``root``, elsewhere) plus a blob holding
    only the paths that are not ``root/key``.
    """

    _ARRAYS = ("_key_blob", "_key_off", "_path_blob", "_path_off", "_kind", "_labels")

    def __init__(
        self,
        root: str | Path,
        keys: Sequence[str],
        paths: Sequence[str | os.PathLike[str] | None],
        labels: Sequence[int] | np.ndarray,
        classes: Sequence[str],
    ) -> None:
        """Args:
            root: the folder the records' keys and paths are relative to (kept as given).
            keys: each record's key (its annotation's file name or relative path).
            paths: each record's file, or None when it was not found.
            labels: each record's class index, -1 for none.
            classes: class names in index order (a record's ``label_name`` is ``classes[label]``).
        """
        n = len(keys)
        if len(paths) != n or len(labels) != n:
            raise ValueError(f"keys, paths and labels must have one entry per record, got "
                             f"{n}, {len(paths)}, {len(labels)}")
        self.root = os.fspath(root)
        self.classes = tuple(classes)
        lab = np.asarray(labels, dtype=np.int64)
        if n and not (lab.min() >= -1 and lab.max() < len(self.classes)):
            bad = int(lab[(lab < -1) | (lab >= len(self.classes))][0])
            raise ValueError(f"label {bad} is outside -1..{len(self.classes) - 1} ({len(self.classes)} classes)")
        prefix = self._prefix
        kind = np.empty(n, dtype=np.uint8)
        stored: list[str] = []
        for i, (key, p) in enumerate(zip(keys, paths)):
            if p is None:
                kind[i] = _MISSING
                continue
            s = os.fspath(p)
            if s == prefix + key:
                kind[i] = _ROOT_KEY
            elif s.startswith(prefix):
                kind[i], s = _ROOT_REL, s[len(prefix):]
                stored.append(s)
            else:
                kind[i] = _AS_IS
                stored.append(s)
        self._key_blob, self._key_off = _pack(keys)
        self._path_blob, path_off = _pack(stored)
        # offsets per record (n + 1) into the path blob: records without a stored path take 0 bytes
        has = (kind == _ROOT_REL) | (kind == _AS_IS)
        self._path_off = np.zeros(n + 1, dtype=path_off.dtype)
        self._path_off[1:][has] = path_off[1:]
        np.maximum.accumulate(self._path_off, out=self._path_off)
        self._kind = kind
        self._labels = lab.astype(np.int32)
        self._shared: dict[str, torch.Tensor] | None = None

    # -- reading --------------------------------------------------------------------------------
    @property
    def _prefix(self) -> str:
        return self.root if self.root.endswith(os.sep) else self.root + os.sep

    def __len__(self) -> int:
        return len(self._kind)

    @overload
    def __getitem__(self, i: int) -> VideoRecord: ...
    @overload
    def __getitem__(self, i: slice) -> RecordIndex: ...

    def __getitem__(self, i: int | slice) -> VideoRecord | RecordIndex:
        if isinstance(i, slice):
            return self.take(np.arange(len(self))[i])
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"record {i} out of range for an index of {n} records")
        i = int(i) % n
        key = self._key_blob[self._key_off[i]:self._key_off[i + 1]].tobytes().decode(*_ENC)
        label = int(self._labels[i])
        return VideoRecord(key, self.path(i, key), label, self.classes[label] if label >= 0 else None)

    def path(self, i: int, key: str | None = None) -> Path | None:
        """Record ``i``'s file (None: not found), without building the record."""
        kind = self._kind[i]
        if kind == _MISSING:
            return None
        if kind == _ROOT_KEY:
            if key is None:
                key = self._key_blob[self._key_off[i]:self._key_off[i + 1]].tobytes().decode(*_ENC)
            return Path(self._prefix + key)
        s = self._path_blob[self._path_off[i]:self._path_off[i + 1]].tobytes().decode(*_ENC)
        return Path(self._prefix + s) if kind == _ROOT_REL else Path(s)


    def __repr__(self) -> str:
        return f"RecordIndex({len(self)} records, root={self.root!r}, {len(self.classes)} classes)"

    @property
    def labels(self) -> np.ndarray:
        """Every record's label (int32, -1: unlabelled), read-only."""
        view = self._labels.view()
        view.flags.writeable = False
        return view

    @property
    def found(self) -> np.ndarray:
        """Per record: whether its file was found (bool)."""
        return self._kind != _MISSING

    @property
    def nbytes(self) -> int:
        """Bytes held by the arrays."""
        return sum(getattr(self, a).nbytes for a in self._ARRAYS)

    def take(self, rows: Sequence[int] | np.ndarray) -> RecordIndex:
        """A new compact index of the records at ``rows`` (ints, or a bool mask), in that order."""
        rows = np.asarray(rows)
        rows = np.flatnonzero(rows) if rows.dtype == bool else rows.astype(np.int64, copy=False)
        out = object.__new__(RecordIndex)
        out.root, out.classes, out._shared = self.root, self.classes, None
        out._key_blob, out._key_off = _take_strings(self._key_blob, self._key_off, rows)
        out._path_blob, out._path_off = _take_strings(self._path_blob, self._path_off, rows)
        out._kind, out._labels = self._kind[rows], self._labels[rows]
        return out

    # -- pickling -------------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = {"root": self.root, "classes": self.classes}
        if multiprocessing.context.get_spawning_popen() is None:
            # plain pickling (a file, a queue): the arrays as a few compact buffers
            return {**state, **{a: getattr(self, a) for a in self._ARRAYS}}
        # starting a spawn/forkserver process (DataLoader workers): move the arrays into shared
        # memory once, and read them from there in this process too (one copy, not two); torch's
        # pickler then sends each as a file descriptor, so all workers map the same pages
        if self._shared is None:
            self._shared = {a: torch.from_numpy(getattr(self, a)).share_memory_() for a in self._ARRAYS}
            for a, t in self._shared.items():
                setattr(self, a, t.numpy())
        return {**state, **self._shared}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.root, self.classes = state["root"], state["classes"]
        shared = {a: state[a] for a in self._ARRAYS if isinstance(state[a], torch.Tensor)}
        self._shared = shared or None  # keep the tensors: they own the shared memory
        for a in self._ARRAYS:
            setattr(self, a, state[a].numpy() if a in shared else state[a])


class MissingVideos(_ListLike[MissingVideo]):
    """Read-only sequence of :class:`MissingVideo` (``expected`` is
    ``root/key``): the records of a :class:`RecordIndex` that have no file, in index order. It
    stores nothing of its own (an index that also serves as the samples is not held twice);
    equal to any sequence holding the same entries."""

    def __init__(self, records: RecordIndex) -> None:
        self.records = records
        self._rows: np.ndarray | None = None  # found when first asked: workers never ask

    @property
    def rows(self) -> np.ndarray:
        """Positions of the missing records in ``records``."""
        if self._rows is None:
            self._rows = np.flatnonzero(~self.records.found)
        return self._rows

    def __getstate__(self) -> dict[str, Any]:
        return {"records": self.records}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.records, self._rows = state["records"], None

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> MissingVideo:  # type: ignore[override]
        rec = self.records[int(self.rows[i])]
        return MissingVideo(rec.key, Path(self.records.root) / rec.key, rec.label)


    def __repr__(self) -> str:
        return f"MissingVideos({len(self)} of {len(self.records)} records, root={self.records.root!r})"

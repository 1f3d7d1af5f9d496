"""Video annotations: official Kinetics CSVs, list files and folder-per-class trees, turned into
:class:`VideoRecord` lists with one class-index policy (:func:`load_annotations`), plus the
Kinetics index builder and the report of annotated videos whose file is missing.

Layouts understood for ``root`` with an official CSV: any tree under ``root`` (``split/label/file``,
``label/file`` or flat) -- files are matched by name (``filename_pattern``, any video extension),
found by one recursive scan. List files hold ``relative/path.mp4 label_index`` lines.

Nothing here writes files except :func:`write_class_index`, :func:`write_missing_videos` and
:func:`build_kinetics_index` (the data preparation step).
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = [
    "CLASS_INDEX_FILE",
    "DEFAULT_FILENAME_PATTERN",
    "VIDEO_EXTENSIONS",
    "Annotations",
    "MissingVideo",
    "VideoRecord",
    "build_kinetics_index",
    "find_videos",
    "load_annotations",
    "load_class_index",
    "missing_videos",
    "read_kinetics_csv",
    "read_list_file",
    "resolve_csv_records",
    "scan_class_folders",
    "write_class_index",
    "write_missing_videos",
]

CLASS_INDEX_FILE = "classes.json"  # looked for beside the annotation (or in root for folder trees)
DEFAULT_FILENAME_PATTERN = "{youtube_id}_{time_start:06d}_{time_end:06d}.mp4"

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v")
SPLIT_ALIASES = {"val": "validate", "validation": "validate", "valid": "validate"}


@dataclass
class VideoRecord:
    """One annotated video. ``path`` is None when the file was not found; ``label`` is -1 when
    the annotation has none (Kinetics test CSVs)."""

    key: str
    path: Path | None
    label: int
    label_name: str | None = None


# ----------------------------------------------------------------------------------------------
# annotation parsing


def read_kinetics_csv(path: str | Path, split: str | None = None) -> list[dict[str, Any]]:
    """Rows of an official Kinetics-400/600/700 CSV (``label,youtube_id,time_start,time_end,split``
    [,``is_cc``]; test CSVs may lack ``label``).

    Args:
        split: keep rows whose ``split`` column matches (``"val"`` == ``"validate"``).

    Returns:
        dicts with keys label (str or None), youtube_id, time_start, time_end (int), split.
    """
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields = set(reader.fieldnames or [])
        need = {"youtube_id", "time_start", "time_end"}
        if not need <= fields:
            raise ValueError(f"{path}: not a Kinetics CSV, columns {sorted(fields)} lack {sorted(need - fields)}")
        want = SPLIT_ALIASES.get(split, split) if split else None
        rows = []
        for n, row in enumerate(reader, start=2):
            try:
                rec = {
                    "label": row["label"].strip() if row.get("label") else None,
                    "youtube_id": row["youtube_id"].strip(),
                    "time_start": int(float(row["time_start"])),
                    "time_end": int(float(row["time_end"])),
                    "split": (row.get("split") or "").strip(),
                }
            except (TypeError, ValueError) as e:
                raise ValueError(f"{path}:{n}: bad row {row} ({e})") from e
            if want and SPLIT_ALIASES.get(rec["split"], rec["split"]) != want:
                continue
            rows.append(rec)
    return rows


def read_list_file(path: str | Path) -> list[tuple[str, int]]:
    """``relative/path.mp4 label_index`` lines (blank lines and ``#`` comments skipped; the path
    may contain spaces, the label is the last field)."""
    path = Path(path)
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2:
            raise ValueError(f"{path}:{n}: expected 'relative/path label_index', got {line!r}")
        try:
            label = int(parts[1])
        except ValueError as e:
            raise ValueError(f"{path}:{n}: label must be an integer, got {parts[1]!r}") from e
        out.append((parts[0], label))
    return out


def scan_class_folders(root: str | Path) -> tuple[list[str], list[tuple[Path, str]]]:
    """Folder-per-class tree ``root/<class>/**/<video>``.

    Returns:
        (sorted class names, [(video path, class name)] sorted by path).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"root {str(root)!r} is not a directory")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    items = []
    for c in classes:
        for dirpath, _, files in os.walk(root / c):
            for name in files:
                if name.lower().endswith(VIDEO_EXTENSIONS):
                    items.append((Path(dirpath) / name, c))
    items.sort(key=lambda t: str(t[0]))
    return classes, items


def find_videos(root: str | Path) -> dict[str, Path]:
    """Map file stem -> path for every video under ``root`` (one recursive scan). When a stem occurs
    twice, the first in sorted path order wins (deterministic)."""
    found: dict[str, Path] = {}
    for dirpath, dirnames, files in os.walk(root):
        dirnames.sort()
        for name in sorted(files):
            if name.lower().endswith(VIDEO_EXTENSIONS):
                found.setdefault(os.path.splitext(name)[0], Path(dirpath) / name)
    return found


def load_class_index(spec: str | Path | Mapping[str, int]) -> dict[str, int]:
    """A class-index JSON file (``{"name": idx}``) or mapping, validated (indices 0..K-1, unique)."""
    if isinstance(spec, Mapping):
        mapping = dict(spec)
    else:
        mapping = json.loads(Path(spec).read_text(encoding="utf-8"))
    if not isinstance(mapping, dict) or not all(isinstance(v, int) for v in mapping.values()):
        raise ValueError(f"class_index must map class names to ints, got {type(mapping).__name__}")
    if sorted(mapping.values()) != list(range(len(mapping))):
        raise ValueError(f"class_index values must be 0..{len(mapping) - 1} without gaps or repeats")
    return mapping


def write_class_index(path: str | Path, classes: Sequence[str]) -> Path:
    """Write ``{"name": idx}`` (sorted by index) as JSON; returns the path."""
    path = Path(path)
    path.write_text(json.dumps({c: i for i, c in enumerate(classes)}, indent=1) + "\n", encoding="utf-8")
    return path


def resolve_csv_records(
    rows: Sequence[Mapping[str, Any]],
    root: str | Path,
    class_to_idx: Mapping[str, int],
    filename_pattern: str = DEFAULT_FILENAME_PATTERN,
    videos: Mapping[str, Path] | None = None,
) -> list[VideoRecord]:
    """Attach files under ``root`` to CSV rows. A file matches by stem, any video extension."""
    videos = find_videos(root) if videos is None else videos
    out = []
    for row in rows:
        name = filename_pattern.format(**row)
        stem = os.path.splitext(name)[0]
        label_name = row.get("label")
        if label_name is not None and label_name not in class_to_idx:
            raise ValueError(f"label {label_name!r} is not in the class index ({len(class_to_idx)} classes)")
        label = class_to_idx[label_name] if label_name is not None else -1
        out.append(VideoRecord(key=name, path=videos.get(stem), label=label, label_name=label_name))
    return out


def build_kinetics_index(
    csv_paths: Sequence[str | Path],
    root: str | Path,
    out_dir: str | Path,
    *,
    filename_pattern: str = DEFAULT_FILENAME_PATTERN,
    class_index: str | Path | Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """Turn official Kinetics CSVs and a video folder into list files the dataset loads fast.

    Writes into ``out_dir``: ``classes.json`` (sorted union of the CSV labels unless
    ``class_index`` is given; the dataset reads it from beside the list files), and per CSV
    ``<stem>.txt`` (``relative/path label_index``, label -1 for unlabelled test rows) and
    ``<stem>_missing.txt`` (:func:`write_missing_videos`: rows whose file was not found).

    Returns:
        summary: {csv stem: {"rows", "found", "missing"}} plus "num_classes" and "class_index".
    """
    root, out_dir = Path(root), Path(out_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"root {str(root)!r} is not a directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    tables = {Path(p).stem: read_kinetics_csv(p) for p in csv_paths}
    if class_index is not None:
        class_to_idx = load_class_index(class_index)
    else:
        labels = sorted({r["label"] for rows in tables.values() for r in rows if r["label"] is not None})
        class_to_idx = {c: i for i, c in enumerate(labels)}
    classes_path = write_class_index(out_dir / CLASS_INDEX_FILE, sorted(class_to_idx, key=class_to_idx.__getitem__))
    videos = find_videos(root)
    summary: dict[str, Any] = {
        "num_classes": len(class_to_idx), "class_index": str(classes_path), "num_files": len(videos)
    }
    for stem, rows in tables.items():
        recs = resolve_csv_records(rows, root, class_to_idx, filename_pattern, videos)
        found = [r for r in recs if r.path is not None]
        missing = missing_videos(recs, root)
        (out_dir / f"{stem}.txt").write_text(
            "".join(f"{r.path.relative_to(root).as_posix()} {r.label}\n" for r in found), encoding="utf-8"
        )
        write_missing_videos(missing, out_dir / f"{stem}_missing.txt")
        summary[stem] = {"rows": len(recs), "found": len(found), "missing": len(missing)}
    return summary


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


def missing_videos(records: Sequence[VideoRecord], root: str | Path) -> list[MissingVideo]:
    """The records whose ``path`` is None, in annotation order."""
    root = Path(root)
    return [MissingVideo(r.key, root / r.key, r.label) for r in records if r.path is None]


def write_missing_videos(missing: Sequence[MissingVideo], path: str | Path) -> Path:
    """Write one missing video per line, ``key<TAB>expected path`` (an empty file when none are
    missing, so a run's output always says so); creates the parent folder. Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{m.key}\t{m.expected}\n" for m in missing), encoding="utf-8")
    return path


@dataclass
class Annotations:
    """A parsed annotation (see :func:`load_annotations`)."""

    records: list[VideoRecord]  # every annotated video, in annotation order (path None: missing)
    class_to_idx: dict[str, int]
    class_index_path: Path | None  # the JSON the class index came from; None: given as a mapping or derived
    missing: list[MissingVideo] = field(default_factory=list)

    @property
    def classes(self) -> list[str]:
        """Class names in index order."""
        return sorted(self.class_to_idx, key=self.class_to_idx.__getitem__)


def load_annotations(
    root: str | Path,
    annotation: str | Path | None = None,
    *,
    split: str | None = None,
    class_index: str | Path | Mapping[str, int] | None = None,
    filename_pattern: str = DEFAULT_FILENAME_PATTERN,
) -> Annotations:
    """Parse an annotation into records with a class index. Reads only; never writes.

    Args:
        root: folder holding the videos (any layout for CSVs; list-file paths are relative to it).
        annotation: official Kinetics CSV, list file (``rel/path label_idx``), or None for a
            folder-per-class tree under ``root``.
        split: keep only this split of a CSV (``"val"`` == ``"validate"``); only for CSVs.
        class_index: JSON path or mapping ``{"name": idx}``.
        filename_pattern: CSV row -> file name.

    Class index, one policy for every annotation kind (the first that applies):
        1. ``class_index`` when given;
        2. ``classes.json`` beside the annotation (in ``root`` for a folder tree), as written by
           :func:`build_kinetics_index` or :func:`write_class_index`;
        3. derived from the annotation: sorted CSV labels, sorted class folders, or for list files
           (indices only) the names ``"0".."K-1"`` with K = largest label + 1.
        Derived indices depend on the split's labels, so train and val of one run should share a
        written or given index (the training run writes its classes with :func:`write_class_index`).

    Raises:
        FileNotFoundError: ``root`` is not a folder or ``annotation`` does not exist.
        ValueError: a label or class folder outside the class index, ``split`` without a CSV.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"root {str(root)!r} is not a directory")
    ann = Path(annotation) if annotation is not None else None
    if ann is not None and not ann.is_file():
        raise FileNotFoundError(f"annotation {str(ann)!r} not found")
    if split is not None and (ann is None or ann.suffix.lower() != ".csv"):
        raise ValueError(f"split={split!r} needs a Kinetics CSV annotation, got {str(ann) if ann else None!r}")

    if class_index is not None:
        given: dict[str, int] | None = load_class_index(class_index)
        index_path = None if isinstance(class_index, Mapping) else Path(class_index)
    else:
        beside = (ann.parent if ann is not None else root) / CLASS_INDEX_FILE
        given = load_class_index(beside) if beside.is_file() else None
        index_path = beside if given is not None else None

    if ann is None:
        classes, items = scan_class_folders(root)
        class_to_idx = given if given is not None else {c: i for i, c in enumerate(classes)}
        unknown = sorted(set(classes) - set(class_to_idx))
        if unknown:
            raise ValueError(f"class folders {unknown[:5]} are not in the class index ({len(class_to_idx)} classes)")
        recs = [VideoRecord(p.relative_to(root).as_posix(), p, class_to_idx[c], c) for p, c in items]
    elif ann.suffix.lower() == ".csv":
        rows = read_kinetics_csv(ann, split)
        labels = sorted({r["label"] for r in rows if r["label"] is not None})
        class_to_idx = given if given is not None else {c: i for i, c in enumerate(labels)}
        recs = resolve_csv_records(rows, root, class_to_idx, filename_pattern)
    else:
        pairs = read_list_file(ann)
        if given is not None:
            class_to_idx = given
        else:
            k = max((lab for _, lab in pairs), default=-1) + 1
            class_to_idx = {str(i): i for i in range(k)}
        num = len(class_to_idx)
        names = sorted(class_to_idx, key=class_to_idx.__getitem__)
        recs = []
        for rel, lab in pairs:
            if not -1 <= lab < num:
                raise ValueError(f"{ann}: label {lab} of {rel!r} is outside -1..{num - 1} (class index of {num})")
            p = root / rel
            recs.append(VideoRecord(rel, p if p.is_file() else None, lab, names[lab] if lab >= 0 else None))
    return Annotations(recs, class_to_idx, index_path, missing_videos(recs, root))

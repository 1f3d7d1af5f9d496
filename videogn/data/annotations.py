"""Video annotations: official Kinetics CSVs, list files and folder-per-class trees, turned into
:class:`VideoRecord` sequences (a compact :class:`~videogn.data.index.RecordIndex`) with one
class-index policy (:func:`load_annotations`), plus the Kinetics index builder and the report of
annotated videos whose file is missing.

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
from typing import Any, Iterable, Iterator, Mapping, Sequence

# the record types live with their compact storage; re-exported here, where they always were
from videogn.data.index import MissingVideo, MissingVideos, RecordIndex, VideoRecord

__all__ = [
    "CLASS_INDEX_FILE",
    "DEFAULT_FILENAME_PATTERN",
    "VIDEO_EXTENSIONS",
    "AnnotationError",
    "Annotations",
    "MissingVideo",
    "VideoRecord",
    "build_kinetics_index",
    "find_videos",
    "load_annotations",
    "load_class_index",
    "missing_videos",
    "read_exclude_list",
    "read_kinetics_csv",
    "read_list_file",
    "resolve_csv_records",
    "scan_class_folders",
    "write_class_index",
    "write_missing_videos",
]

CLASS_INDEX_FILE = "classes.json"  # looked for beside the annotation (or in root for folder trees)
from videogn.defaults import DEFAULT_FILENAME_PATTERN  # noqa: E402  (its home: a leaf the config schema imports)

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v")
SPLIT_ALIASES = {"val": "validate", "validation": "validate", "valid": "validate"}


class AnnotationError(ValueError):
    """An annotation the user gave cannot be used (a bad row, a label outside the class index); the
    message names the file and row. A ``ValueError``, so older callers keep catching it."""


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
    return list(_iter_kinetics_csv(path, split))


def _iter_kinetics_csv(path: str | Path, split: str | None) -> Iterator[dict[str, Any]]:
    """:func:`read_kinetics_csv`'s rows one at a time (the index builder keeps no row dicts)."""
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields = set(reader.fieldnames or [])
        need = {"youtube_id", "time_start", "time_end"}
        if not need <= fields:
            raise AnnotationError(f"{path}: not a Kinetics CSV, columns {sorted(fields)} lack {sorted(need - fields)}")
        want = SPLIT_ALIASES.get(split, split) if split else None
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
                raise AnnotationError(f"{path}:{n}: bad row {row} ({e})") from e
            if want and SPLIT_ALIASES.get(rec["split"], rec["split"]) != want:
                continue
            yield rec


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
            raise AnnotationError(f"{path}:{n}: expected 'relative/path label_index', got {line!r}")
        try:
            label = int(parts[1])
        except ValueError as e:
            raise AnnotationError(f"{path}:{n}: label must be an integer, got {parts[1]!r}") from e
        out.append((parts[0], label))
    return out


def scan_class_folders(root: str | Path) -> tuple[list[str], list[tuple[Path, str]]]:
    """Folder-per-class tree ``root/<class>/**/<video>``.

    Returns:
        (sorted class names, [(video path, class name)] sorted by path).
    """
    classes, items = _class_folder_files(root)
    return classes, [(Path(p), c) for p, c in items]


def _class_folder_files(root: str | Path) -> tuple[list[str], list[tuple[str, str]]]:
    """:func:`scan_class_folders` with path strings (no Path object per video)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"root {str(root)!r} is not a directory")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    items = []
    for c in classes:
        # joined as strings, so every path starts with str(root) + sep (also for root '.')
        for dirpath, _, files in os.walk(os.path.join(str(root), c)):
            for name in files:
                if name.lower().endswith(VIDEO_EXTENSIONS):
                    items.append((os.path.join(dirpath, name), c))
    items.sort(key=lambda t: t[0])
    return classes, items


def find_videos(root: str | Path) -> dict[str, Path]:
    """Map file stem -> path for every video under ``root`` (one recursive scan). When a stem occurs
    twice, the first in sorted path order wins (deterministic)."""
    return {stem: Path(p) for stem, p in _video_files(root).items()}


def _video_files(root: str | Path) -> dict[str, str]:
    """:func:`find_videos` with path strings (no Path object per video)."""
    found: dict[str, str] = {}
    for dirpath, dirnames, files in os.walk(root):
        dirnames.sort()
        for name in sorted(files):
            if name.lower().endswith(VIDEO_EXTENSIONS):
                found.setdefault(os.path.splitext(name)[0], os.path.join(dirpath, name))
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
    keys, paths, names = _csv_columns(rows, filename_pattern, videos)
    labels = _label_indices(names, class_to_idx)
    return [VideoRecord(k, p, lab, n) for k, p, lab, n in zip(keys, paths, labels, names)]


def _csv_columns(
    rows: Iterable[Mapping[str, Any]], filename_pattern: str, videos: Mapping[str, Any]
) -> tuple[list[str], list[Any], list[str | None]]:
    """CSV rows -> (file names, found files or None, label names or None), one entry per row."""
    keys, paths, names = [], [], []
    for row in rows:
        name = filename_pattern.format(**row)
        keys.append(name)
        paths.append(videos.get(os.path.splitext(name)[0]))
        names.append(row.get("label"))
    return keys, paths, names


def _label_indices(names: Sequence[str | None], class_to_idx: Mapping[str, int]) -> list[int]:
    """Label names -> class indices (None -> -1); a name outside the class index is an error."""
    try:
        return [class_to_idx[n] if n is not None else -1 for n in names]
    except KeyError as e:
        raise AnnotationError(f"label {e.args[0]!r} is not in the class index ({len(class_to_idx)} classes)") from None


def _csv_line_of(path: Path, split: str | None, label: str) -> int | None:
    """The file line of the first row of ``path`` (in ``split``) labelled ``label`` (error messages only)."""
    want = SPLIT_ALIASES.get(split, split) if split else None
    with path.open(newline="", encoding="utf-8") as f:
        for n, row in enumerate(csv.DictReader(f), start=2):
            if want and SPLIT_ALIASES.get((row.get("split") or "").strip(), (row.get("split") or "").strip()) != want:
                continue
            if (row.get("label") or "").strip() == label:
                return n
    return None


def _list_line_of(path: Path, rel: str) -> int | None:
    """The line of ``path`` that lists ``rel`` (error messages only)."""
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.strip().rsplit(maxsplit=1)
        if len(parts) == 2 and parts[0] == rel:
            return n
    return None


def _index_source(given: Mapping[str, int] | None, index_path: Path | None, derived_from: str) -> str:
    """Where the class index came from, for messages."""
    if index_path is not None:
        return f"{index_path}, {len(given or {})} classes"
    return f"given as a mapping, {len(given)} classes" if given is not None else f"derived from {derived_from}"


def build_kinetics_index(
    csv_paths: Sequence[str | Path],
    root: str | Path | Sequence[str | Path],
    out_dir: str | Path,
    *,
    filename_pattern: str = DEFAULT_FILENAME_PATTERN,
    class_index: str | Path | Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """Turn official Kinetics CSVs and video folders into list files the dataset loads fast.

    ``root`` is one folder per CSV (in order: each split's own folder, the dataset's
    ``data.root/data.<split>_dir``), or one folder for every CSV. Each CSV's files are searched for
    under its folder and its list file's paths are relative to that folder: the rule the dataset
    reads list files by (``KineticsDataset(folder, list_file)``), so with one folder per split the
    lists work with the default ``data.train_dir``/``data.val_dir``.

    Writes into ``out_dir``: ``classes.json`` (sorted union of the CSV labels unless
    ``class_index`` is given; give it to a run as ``data.class_index``), and per CSV
    ``<stem>.txt`` (``relative/path label_index``, label -1 for unlabelled test rows) and
    ``<stem>_missing.txt`` (:func:`write_missing_videos`: rows whose file was not found).

    Returns:
        summary: {csv stem: {"rows", "found", "missing"}} plus "num_classes" and "class_index".

    Raises:
        FileNotFoundError: a folder or CSV that does not exist.
        ValueError: as many folders as neither 1 nor the CSVs; an :class:`AnnotationError` for a
            bad row or a label outside ``class_index`` (naming file and row).
    """
    roots = [Path(root)] if isinstance(root, (str, Path)) else [Path(r) for r in root]
    if len(roots) not in (1, len(csv_paths)):
        raise ValueError(f"give one video folder for every CSV or one for all, got {len(roots)} folders "
                         f"for {len(csv_paths)} CSVs")
    for r in roots:
        if not r.is_dir():
            raise FileNotFoundError(f"root {str(r)!r} is not a directory")
    roots = roots * len(csv_paths) if len(roots) == 1 else roots
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tables = {Path(p).stem: read_kinetics_csv(p) for p in csv_paths}
    if len(tables) != len(csv_paths):
        raise ValueError(f"the CSVs' names must differ (each gives <name>.txt), got {[str(p) for p in csv_paths]}")
    if class_index is not None:
        class_to_idx = load_class_index(class_index)
    else:
        labels = sorted({r["label"] for rows in tables.values() for r in rows if r["label"] is not None})
        class_to_idx = {c: i for i, c in enumerate(labels)}
    for (stem, rows), csv_path in zip(tables.items(), csv_paths):
        unknown = sorted({r["label"] for r in rows if r["label"] is not None and r["label"] not in class_to_idx})
        if unknown:
            line = _csv_line_of(Path(csv_path), None, unknown[0])
            raise AnnotationError(f"{csv_path}:{line}: label {unknown[0]!r} is not in the class index "
                                  f"{str(class_index)!r} ({len(class_to_idx)} classes)")
    classes_path = write_class_index(out_dir / CLASS_INDEX_FILE, sorted(class_to_idx, key=class_to_idx.__getitem__))
    scans = {r: find_videos(r) for r in dict.fromkeys(roots)}  # each folder scanned once
    summary: dict[str, Any] = {
        "num_classes": len(class_to_idx), "class_index": str(classes_path),
        "num_files": sum(len(v) for v in scans.values()),
    }
    for (stem, rows), split_root in zip(tables.items(), roots):
        recs = resolve_csv_records(rows, split_root, class_to_idx, filename_pattern, scans[split_root])
        found = [r for r in recs if r.path is not None]
        missing = missing_videos(recs, split_root)
        (out_dir / f"{stem}.txt").write_text(
            "".join(f"{r.path.relative_to(split_root).as_posix()} {r.label}\n" for r in found), encoding="utf-8"
        )
        write_missing_videos(missing, out_dir / f"{stem}_missing.txt")
        summary[stem] = {"rows": len(recs), "found": len(found), "missing": len(missing)}
    return summary


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


def read_exclude_list(paths: str | Path | Sequence[str | Path]) -> set[str]:
    """The videos listed in ``datasets/kinetics/scan.py`` reports (``path<TAB>error`` lines; a line
    holding only a path works too; blank lines and ``#`` comments skipped), as real absolute paths
    (relative ones from the working directory, where scan.py wrote them): what
    :class:`~videogn.data.KineticsDataset`'s ``exclude`` takes.

    Raises:
        FileNotFoundError: a report that does not exist.
    """
    out: set[str] = set()
    for report in [paths] if isinstance(paths, (str, Path)) else paths:
        report = Path(report).expanduser()
        if not report.is_file():
            raise FileNotFoundError(f"exclude list {str(report)!r} not found (a datasets/kinetics/scan.py report)")
        for line in report.read_text(encoding="utf-8").splitlines():
            path = line.split("\t", 1)[0].strip()
            if path and not path.startswith("#"):
                out.add(os.path.realpath(os.path.expanduser(path)))
    return out


@dataclass
class Annotations:
    """A parsed annotation (see :func:`load_annotations`). ``records`` and ``missing`` are compact
    read-only sequences (:class:`~videogn.data.index.RecordIndex`,
    :class:`~videogn.data.index.MissingVideos`): records are built on access."""

    records: RecordIndex  # every annotated video, in annotation order (path None: missing)
    class_to_idx: dict[str, int]
    class_index_path: Path | None  # the JSON the class index came from; None: given as a mapping or derived
    missing: Sequence[MissingVideo] | MissingVideos = field(default_factory=list)

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

    Returns:
        :class:`Annotations`; its records are a :class:`~videogn.data.index.RecordIndex` (flat
        arrays, no Python object per video: shared, not copied, by DataLoader workers).

    Raises:
        FileNotFoundError: ``root`` is not a folder or ``annotation`` does not exist.
        AnnotationError: (a ``ValueError``) a bad row, a label or class folder outside the class
            index, naming the file and row.
        ValueError: ``split`` without a CSV.
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

    # columns (keys, path strings, label indices), never one object per video: see videogn.data.index
    if ann is None:
        classes, items = _class_folder_files(root)
        class_to_idx = given if given is not None else {c: i for i, c in enumerate(classes)}
        unknown = sorted(set(classes) - set(class_to_idx))
        if unknown:
            raise AnnotationError(f"class folders {unknown[:5]} of {root} are not in the class index "
                                  f"({_index_source(given, index_path, str(root))})")
        cut = len(os.path.join(str(root), ""))  # the paths start with root/ (os.walk under it)
        paths = [p for p, _ in items]
        keys = [p[cut:].replace(os.sep, "/") for p in paths]  # relative_to(root).as_posix()
        labels = [class_to_idx[c] for _, c in items]
    elif ann.suffix.lower() == ".csv":
        keys, paths, names = _csv_columns(_iter_kinetics_csv(ann, split), filename_pattern, _video_files(root))
        derived = sorted({n for n in names if n is not None})
        class_to_idx = given if given is not None else {c: i for i, c in enumerate(derived)}
        unknown = sorted({n for n in names if n is not None and n not in class_to_idx})
        if unknown:
            line = _csv_line_of(ann, split, unknown[0])
            more = f" (and {len(unknown) - 1} more label(s): {unknown[1:4]})" if len(unknown) > 1 else ""
            raise AnnotationError(
                f"{ann}:{line}: label {unknown[0]!r} is not in the class index "
                f"({_index_source(given, index_path, ann.name)}){more} — add it to the class index "
                "(data.class_index) or fix the row"
            )
        labels = _label_indices(names, class_to_idx)
        del names
    else:
        pairs = read_list_file(ann)
        if given is not None:
            class_to_idx = given
        else:
            k = max((lab for _, lab in pairs), default=-1) + 1
            class_to_idx = {str(i): i for i in range(k)}
        num = len(class_to_idx)
        base = str(root)
        keys, paths, labels = [], [], []
        for rel, lab in pairs:
            if not -1 <= lab < num:
                raise AnnotationError(
                    f"{ann}:{_list_line_of(ann, rel)}: label {lab} of {rel!r} is outside -1..{num - 1}, the class "
                    f"index ({_index_source(given, index_path, ann.name)}) — fix the row or give the class index "
                    "it was written for (data.class_index)"
                )
            p = os.path.join(base, rel)  # as root / rel
            keys.append(rel)
            paths.append(p if os.path.isfile(p) else None)
            labels.append(lab)
    classes = sorted(class_to_idx, key=class_to_idx.__getitem__)
    recs = RecordIndex(root, keys, paths, labels, classes)
    return Annotations(recs, class_to_idx, index_path, MissingVideos(recs))

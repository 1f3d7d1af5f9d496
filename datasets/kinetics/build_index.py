#!/usr/bin/env python
"""Build list files and a stable class index from official Kinetics CSVs and the video folders.

Give each CSV its split's video folder (in the same order), as resized under one root:

    python datasets/kinetics/build_index.py \\
        --csv kinetics400/annotations/train.csv kinetics400/annotations/validate.csv \\
        --root kinetics400/videos_256/train kinetics400/videos_256/val --out kinetics400/index

writes index/classes.json, index/train.txt, index/validate.txt (``relative/path label``) and
index/<csv>_missing.txt (rows without a video: ``file name<TAB>expected path``). A CSV's files are
searched for under its folder (any layout, matched by name) and its list's paths are relative to
that folder -- the rule every reader of list files uses, so the lists go straight to training:

    videogn-train data=kinetics400 data.root=kinetics400/videos_256 \\
        data.train_annotation=kinetics400/index/train.txt data.val_annotation=kinetics400/index/validate.txt \\
        data.class_index=kinetics400/index/classes.json

(one --root for every CSV: paths relative to it, so give videogn data.root=<it> data.train_dir=.
data.val_dir=.). A missing file, a bad row or a label that --class-index lacks ends with one line
naming it (file and row) and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--csv", nargs="+", required=True, help="official CSV(s): label,youtube_id,time_start,time_end,split")
    ap.add_argument("--root", nargs="+", required=True,
                    help="each CSV's video folder, in the same order (searched recursively; the list's paths are "
                         "relative to it), or one folder for all")
    ap.add_argument("--out", required=True, help="output folder for classes.json and the list files")
    ap.add_argument("--pattern", default="{youtube_id}_{time_start:06d}_{time_end:06d}.mp4",
                    help="file name of a CSV row (any video extension matches); default: %(default)s")
    ap.add_argument("--class-index", default=None, help="reuse this classes.json instead of building one")
    args = ap.parse_args(argv)
    from videogn.data.annotations import build_kinetics_index  # after parsing: --help stays instant

    try:
        summary = build_kinetics_index(args.csv, args.root, args.out, filename_pattern=args.pattern,
                                       class_index=args.class_index)
    except (OSError, ValueError) as e:  # a missing file, a bad row, a label the --class-index lacks
        ap.exit(2, f"{ap.prog}: error: {e}\n")
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Rebuild an evaluation report from saved predictions alone, or ensemble several runs' predictions.

Reads each run's ``predictions.jsonl`` (and the shards of a killed multi-GPU run) and its
``eval_fingerprint.json`` (the class names and protocol); needs neither the model nor the videos.

    # one run: its report again (e.g. after a kill, or with the report lost)
    python scripts/ensemble_predictions.py outputs/eval/2026-01-01/12-00-00 --output rebuilt
    # two runs on the same split (e.g. two models, or two protocols): class probabilities averaged
    python scripts/ensemble_predictions.py runs/gn_eval runs/bn_eval --output ensemble

Writes ``report.json``, ``report_confusion_matrix.png`` and ``predictions.jsonl`` into ``--output``
(:func:`videogn.engine.evaluator.rebuild_report`, :func:`~videogn.engine.evaluator.ensemble_predictions`)
and prints the headline numbers. Exit status 2 for unusable inputs (no predictions, other videos).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Optional, Sequence

from videogn.engine.evaluator import ensemble_predictions, rebuild_report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="run dirs (or predictions.jsonl files): one rebuilds, several ensemble")
    p.add_argument("--output", required=True, help="folder for report.json, its PNG and predictions.jsonl")
    p.add_argument("--class-names", default=None,
                   help="JSON list of class names in output order (default: each run's fingerprint file)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    names = None
    try:
        if args.class_names is not None:
            with open(args.class_names, encoding="utf-8") as f:
                names = json.load(f)
        if len(args.runs) == 1:
            report = rebuild_report(args.runs[0], names, output_dir=args.output)
        else:
            report = ensemble_predictions(args.runs, names, output_dir=args.output)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({k: report[k] for k in ("top1", "top5", "mean_class_accuracy", "num_videos", "num_unreadable")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

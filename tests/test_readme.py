"""Every fenced ``python`` and shell block of README.md runs, as written, in a fresh temp dir against
the installed package.

A block may be preceded by ``<!-- readme-test: ... -->`` holding ``;``-separated directives:
``skip (reason)`` (not run; the reason is the skip message), ``gpu`` (run only with CUDA), ``slow``
(the ``slow`` marker) and ``args A B`` (append ``A B`` to each ``videogn-train`` / ``videogn-eval``
command: a small substitute for a long run, e.g. ``args experiment=tiny``). The temp dir links the
checkout's ``scripts/``, ``datasets/`` and ``.venv/``, so ``.venv/bin/python scripts/...`` works there.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
DIRECTIVE = re.compile(r"<!--\s*readme-test:\s*(.*?)\s*-->\s*$")
DIRECTIVE_PART = re.compile(r"(\w+)\s*(\([^)]*\)|[^;]*)\s*(?:;|$)")  # key, then "(reason)" or text up to ";"
LANGS = {"python": "python", "bash": "bash", "sh": "bash", "shell": "bash"}


@dataclass
class Block:
    line: int
    lang: str
    code: str
    directives: dict[str, str]


def readme_blocks(text: str) -> list[Block]:
    """The README's python and shell blocks, each with the directives of the comment just above it."""
    blocks = []
    for m in FENCE.finditer(text):
        lang = LANGS.get(m.group(1))
        if lang is None:
            continue
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        directives: dict[str, str] = {}
        hit = DIRECTIVE.search(before)
        if hit:
            for key, value in DIRECTIVE_PART.findall(hit.group(1)):
                directives[key] = value.strip()
        blocks.append(Block(text[: m.start()].count("\n") + 1, lang, m.group(2), directives))
    return blocks


BLOCKS = readme_blocks((REPO / "README.md").read_text())


def _param(block: Block) -> pytest.param:
    marks = []
    d = block.directives
    if "skip" in d:
        marks.append(pytest.mark.skip(reason=f"README line {block.line}: {d['skip'].strip('()') or 'skipped'}"))
    if "gpu" in d:
        marks.append(pytest.mark.gpu)
    if "slow" in d:
        marks.append(pytest.mark.slow)
    return pytest.param(block, marks=marks, id=f"line{block.line}-{block.lang}")


def test_readme_has_blocks() -> None:
    assert sum(b.lang == "python" for b in BLOCKS) >= 4 and sum(b.lang == "bash" for b in BLOCKS) >= 4
    for b in BLOCKS:
        assert set(b.directives) <= {"skip", "gpu", "slow", "args"}, (b.line, b.directives)
        if "skip" in b.directives:
            assert b.directives["skip"].strip("()"), f"README line {b.line}: a skip needs a reason"


def _with_args(code: str, args: str) -> str:
    """Append ``args`` to each videogn-train / videogn-eval command (before a trailing comment)."""
    out = []
    for line in code.splitlines():
        m = re.match(r"^(\s*videogn-(?:train|eval)\b[^#]*?)(\s*#.*)?$", line)
        out.append(f"{m.group(1)} {args}{m.group(2) or ''}" if m else line)
    return "\n".join(out) + "\n"


@pytest.mark.parametrize("block", [_param(b) for b in BLOCKS])
def test_readme_block_runs(block: Block, tmp_path: Path) -> None:
    if "gpu" in block.directives:
        import torch

        if not torch.cuda.is_available():
            pytest.skip("needs a CUDA device")
    for name in ("scripts", "datasets", ".venv"):
        if (REPO / name).exists():
            (tmp_path / name).symlink_to(REPO / name)
    env = {**os.environ, "VIDEOGN_CACHE": str(tmp_path / "cache"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    code = _with_args(block.code, block.directives["args"]) if "args" in block.directives else block.code
    if block.lang == "python":
        script = tmp_path / "snippet.py"
        script.write_text(code)
        cmd = [sys.executable, str(script)]
    else:
        script = tmp_path / "snippet.sh"
        script.write_text("set -euo pipefail\n" + code)
        cmd = ["bash", str(script)]
    res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, f"README line {block.line}:\n{code}\n--- stdout\n{res.stdout[-3000:]}\n--- stderr\n{res.stderr[-3000:]}"

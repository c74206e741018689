"""JSON-lines files read as the format defines them: records end at b"\\n" and nowhere else.

`str.splitlines()` also splits at U+2028, U+2029, U+0085 and friends, which JSON allows unescaped inside
strings, so it tears valid lines; and a stray non-UTF-8 byte must name its file, line and byte offset
instead of ending in a bare `UnicodeDecodeError`. One reader for question files and result records.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from harness import HarnessError


@dataclass
class Line:
    number: int  # 1-based
    offset: int  # byte offset of the line's first byte in the file
    raw: bytes  # without the b"\n"


class BadLine(HarnessError):
    """A line that is not UTF-8 or not JSON; the message names the file, line and byte offset."""

    def __init__(self, path: Path, line: Line, problem: str):
        super().__init__(f"{path}, line {line.number} (byte offset {line.offset}): {problem}")
        self.line = line


def split_lines(data: bytes) -> tuple[list[Line], bytes]:
    """The complete lines of `data` and its tail: the bytes after the last b"\\n" (a line still being written,
    or torn by a crash; b"" when the file ends cleanly)."""
    lines, offset = [], 0
    pieces = data.split(b"\n")
    for number, raw in enumerate(pieces[:-1], start=1):
        lines.append(Line(number, offset, raw))
        offset += len(raw) + 1
    return lines, pieces[-1]


def parse(path: Path, line: Line):
    """The JSON value of one line, or BadLine saying why not."""
    try:
        text = line.raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise BadLine(path, line, f"not UTF-8 (byte 0x{line.raw[err.start]:02x} at byte offset "
                                  f"{line.offset + err.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise BadLine(path, line, f"not valid JSON ({err.msg} at column {err.colno})") from None

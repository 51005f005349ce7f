"""Parallel text: aligned plain-text files, one sentence per line (`{split}.{lang}`).

The `parallel_text` source of the translation experiments (issue 5): line i of
`train.de` translates line i of `train.en`. Users bring their own corpus this way; the tests
read the real corpora in `../shared/data/`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from ifscale.utils import ConfigError, check


@dataclasses.dataclass(frozen=True)
class ParallelSplit:
    """Aligned sentence pairs of one split."""

    source: list[str]
    target: list[str]

    def __len__(self) -> int:
        return len(self.source)


def read_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 file (without line endings).

    Raises:
      ConfigError: the file is missing or empty, or a line is not valid UTF-8 (names the
        file and the 1-based line).
    """
    if not path.is_file():
        raise ConfigError(f"dataset.path: {path} does not exist")
    raw = path.read_bytes()
    if not raw.strip():
        raise ConfigError(f"dataset.path: {path} is empty")
    lines = raw.split(b"\n")
    if lines[-1] == b"":  # a final newline ends the last line; it does not start a new one
        lines.pop()
    out = []
    for number, line in enumerate(lines, start=1):
        try:
            out.append(line.decode("utf-8").rstrip("\r"))
        except UnicodeDecodeError as e:
            raise ConfigError(
                f"dataset.path: {path} line {number} is not valid UTF-8 ({e.reason} at byte "
                f"{e.start})"
            ) from None
    return out


def read_parallel_text(
    folder: str | Path,
    source: str = "de",
    target: str = "en",
    splits: Sequence[str] = ("train", "val", "test"),
    required: Sequence[str] = ("train",),
) -> dict[str, ParallelSplit]:
    """Reads `{split}.{source}` and `{split}.{target}` for each split present in `folder`.

    Args:
      folder: the corpus folder.
      source, target: language suffixes of the files.
      splits: the splits to read when both files exist.
      required: splits whose absence is an error.

    Returns:
      {split: ParallelSplit} for the splits found.

    Raises:
      ConfigError: a required split is missing, a file is empty or not UTF-8, or the two
        files of a split have different line counts (names both files and their counts).
    """
    folder = Path(folder)
    check(folder.is_dir(), "dataset.path", f"{folder} is not a folder")
    found = {}
    for split in splits:
        src, tgt = folder / f"{split}.{source}", folder / f"{split}.{target}"
        if not src.exists() and not tgt.exists():
            check(
                split not in required,
                "dataset.path",
                f"{folder} has no {split}.{source} / {split}.{target}",
            )
            continue
        a, b = read_lines(src), read_lines(tgt)
        check(
            len(a) == len(b),
            "dataset.path",
            f"{src} has {len(a):,} lines but {tgt} has {len(b):,}: line i of one must "
            "translate line i of the other",
        )
        found[split] = ParallelSplit(a, b)
    return found

"""German→English corpora, read as aligned sentence pairs.

Sources:
  * "parallel_text": a folder of aligned plain-text files `{train,val,test}.{de,en}`, one
    sentence per line (line i of `train.de` translates line i of `train.en`): how users
    bring their own corpus and how local runs read `../shared/data/multi30k`;
  * "tfds": the tensorflow-datasets `wmt17_translate/de-en` loader (internet access on
    first use);
  * "paracrawl": tensorflow-datasets `para_crawl/ende` (web-crawled training pairs; the
    test split is WMT17's newstest2017).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path

from ifscale.utils import ConfigError, check

log = logging.getLogger(__name__)

TEXT_SOURCES = ("parallel_text", "tfds", "paracrawl")


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


def _tfds_pairs(name: str, split: str, data_dir: str | None, size: int | None = None):
    """German/English pairs of a tensorflow-datasets translation dataset."""
    import tensorflow_datasets as tfds

    source = tfds.data_source(name, split=split, data_dir=data_dir)
    n = len(source) if size is None else min(size, len(source))
    # Item by item: tfds' batched __getitems__ is broken under tfds.testing.mock_data.
    items = [source[i] for i in range(n)]

    def text(x):
        return x.decode("utf-8") if isinstance(x, bytes) else str(x)

    return ParallelSplit([text(e["de"]) for e in items], [text(e["en"]) for e in items])


def load_wmt17_tfds(data_dir: str | None, train_size: int | None) -> dict[str, ParallelSplit]:
    """`wmt17_translate/de-en` from tensorflow-datasets (downloads and prepares it on first
    use; preparing WMT needs TensorFlow installed: `pip install tensorflow-cpu`)."""
    # The builder module is not imported by `import tensorflow_datasets`.
    import tensorflow_datasets.translate.wmt17  # noqa: F401

    name = "wmt17_translate/de-en"
    train = "train" if train_size is None else f"train[:{train_size}]"
    return {
        "train": _tfds_pairs(name, train, data_dir, train_size),
        "val": _tfds_pairs(name, "validation", data_dir),
        "test": _tfds_pairs(name, "test", data_dir),
    }


def load_paracrawl_tfds(data_dir: str | None, train_size: int | None) -> dict[str, ParallelSplit]:
    """`para_crawl/ende` (train only) from tensorflow-datasets, with WMT17's newstest2017
    as the clean test split."""
    import tensorflow_datasets.translate.wmt17  # noqa: F401

    train = "train" if train_size is None else f"train[:{train_size}]"
    return {
        "train": _tfds_pairs("para_crawl/ende", train, data_dir, train_size),
        "test": _tfds_pairs("wmt17_translate/de-en", "test", data_dir),
    }


def read_corpus(
    source: str, path: str | None, data_dir: str | None, train_size: int | None
) -> dict[str, ParallelSplit]:
    check(source in TEXT_SOURCES, "dataset.source", f"must be one of {TEXT_SOURCES}")
    if source in ("tfds", "paracrawl"):
        name = {"tfds": "wmt17_translate/de-en", "paracrawl": "para_crawl/ende"}[source]
        load = {"tfds": load_wmt17_tfds, "paracrawl": load_paracrawl_tfds}[source]
        try:
            splits = load(data_dir, train_size)
        except ConfigError:
            raise
        except Exception as e:  # no network, no TensorFlow to prepare it, a full disk...
            raise ConfigError(
                f"dataset: could not load {name} with tensorflow-datasets "
                f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). It needs "
                "internet access on first use and TensorFlow to prepare it (pip install "
                "'ifscale[wmt]'). Offline, use a parallel_text corpus instead, e.g. "
                "`make table2 DATA=multi30k`."
            ) from e
    else:
        check(path is not None, "dataset.path", "source 'parallel_text' needs a folder")
        splits = read_parallel_text(path, required=("train",))
    check(
        "test" in splits or "val" in splits,
        "dataset.path",
        f"{path}: needs test.{{de,en}} or val.{{de,en}} for BLEU",
    )
    return splits

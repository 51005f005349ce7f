"""Parallel text and permutation noise (the translation experiment's data)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from ifscale.data import permute_references, read_parallel_text
from ifscale.utils import ConfigError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def shared_data() -> Path:
    folder = Path(os.environ.get("IFSCALE_SHARED_DATA", ROOT.parent / "shared" / "data"))
    if not (folder / "multi30k" / "train.de").exists():
        pytest.fail(f"the shared corpora are not at {folder} (set IFSCALE_SHARED_DATA)")
    return folder


def test_reads_the_real_corpora(shared_data):
    multi30k = read_parallel_text(shared_data / "multi30k")
    assert {k: len(v) for k, v in multi30k.items()} == {"train": 29000, "val": 1014, "test": 1000}
    assert multi30k["train"].target[0] == "Two young, White males are outside near many bushes."
    assert multi30k["train"].source[0].startswith("Zwei junge weiße Männer")
    wmt = read_parallel_text(shared_data / "wmt_sample")  # no test split: allowed
    assert {k: len(v) for k, v in wmt.items()} == {"train": 10000, "val": 50}


def _write(folder: Path, name: str, data: bytes) -> None:
    (folder / name).write_bytes(data)


@pytest.mark.parametrize(
    "de, en, message",
    [
        (b"a\nb\n", b"x\n", "train.de has 2 lines but .*train.en has 1"),
        (b"", b"x\n", "train.de is empty"),
        (b"a\nb\xff\n", b"x\ny\n", "train.de line 2 is not valid UTF-8"),
        (None, None, "has no train.de / train.en"),
    ],
)
def test_bad_corpora_name_the_file_and_line(tmp_path, de, en, message):
    if de is not None:
        _write(tmp_path, "train.de", de)
        _write(tmp_path, "train.en", en)
    with pytest.raises(ConfigError, match=message):
        read_parallel_text(tmp_path)


def test_crlf_and_final_newline_are_line_endings(tmp_path):
    _write(tmp_path, "train.de", b"eins\r\nzwei")
    _write(tmp_path, "train.en", b"one\r\ntwo\n")
    split = read_parallel_text(tmp_path)["train"]
    assert split.source == ["eins", "zwei"] and split.target == ["one", "two"]


def test_permutation_noise_is_an_exact_seeded_derangement():
    targets = [f"sentence {i}" for i in range(1000)]
    noisy, is_noisy, source_of = permute_references(targets, 0.06, seed=0)
    chosen = source_of != np.arange(1000)
    assert chosen.sum() == 60 and is_noisy.sum() == 60  # exact count, no fixed points
    assert sorted(source_of[chosen]) == sorted(np.flatnonzero(chosen))  # among the chosen
    assert all(noisy[i] == targets[source_of[i]] for i in range(1000))
    again = permute_references(targets, 0.06, seed=0)
    assert again[0] == noisy and np.array_equal(again[2], source_of)
    other = permute_references(targets, 0.06, seed=1)[2]
    assert not np.array_equal(other, source_of)


def test_permutation_noise_counts_only_changed_references():
    targets = ["same"] * 50 + [f"s{i}" for i in range(50)]
    _, is_noisy, source_of = permute_references(targets, 0.5, seed=3)
    moved = source_of != np.arange(100)
    assert moved.sum() == 50
    # A duplicate sentence swapped for itself is not noise.
    same_text = np.array([targets[source_of[i]] == targets[i] for i in range(100)])
    assert np.array_equal(is_noisy, moved & ~same_text)


def test_permutation_noise_rejects_impossible_rates():
    with pytest.raises(ConfigError, match="noise.rate"):
        permute_references(["a", "b", "c"], 0.3, seed=0)  # chooses 1 pair: no derangement
    with pytest.raises(ConfigError, match="noise.rate"):
        permute_references(["a", "b"], 1.0, seed=0)

"""Nothing stored is trusted unchecked (`ifscale.cache`): a flipped byte in the middle of any
stored file (trained model, fit, score chunk), a chunk of another scoring, a killed report, a
full or read-only disk. Each is refused in one line naming the file and rebuilt with the same
bits, or ends the command line in one line (exit 2) with nothing half-written trusted after.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

import ifscale.run.pipeline
from ifscale.cache.atomic import staged_files
from ifscale.cache.chunks import ChunkPlan, ChunkStore
from tests.test_kinds import tabular_kind  # noqa: F401  (a fixture)
from tests.test_scores import _blobs_run

ROOT = Path(__file__).resolve().parents[1]


def _flip_middle_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _stored_files(cache: Path, kind: str) -> list[Path]:
    return sorted(p for p in (cache / kind).rglob("*") if p.is_file())


@pytest.fixture
def reference(tabular_kind, tmp_path):  # noqa: F811
    """An Arnoldi run of the tabular kind, from an empty cache: its scores.csv."""
    ifscale.run.pipeline.run(_blobs_run(tmp_path), tmp_path / "reference")
    return (tmp_path / "reference" / "scores.csv").read_bytes()


@pytest.mark.parametrize("kind", ["trained", "fits", "scores"])
def test_a_flipped_byte_in_any_stored_file_is_refused_and_rebuilt_bit_for_bit(
    kind, reference, tmp_path, caplog
):
    cache = tmp_path / "cache"
    count = len(_stored_files(cache, kind))
    assert count, f"nothing stored under {kind}/"
    for i in range(count):  # listed anew: a rebuilt fit names its files anew
        path = _stored_files(cache, kind)[i]
        _flip_middle_byte(path)
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            ifscale.run.pipeline.run(_blobs_run(tmp_path), tmp_path / f"rerun{i}")
        refusals = [r.getMessage() for r in caplog.records if "Refusing" in r.getMessage()]
        assert refusals, f"a flipped byte in {path.relative_to(cache)} was not noticed"
        assert all(len(line.splitlines()) == 1 for line in refusals)
        assert any(path.name in line for line in refusals), (path, refusals)
        assert (tmp_path / f"rerun{i}" / "scores.csv").read_bytes() == reference, path


def test_a_chunk_of_another_scoring_is_refused_and_scored_again(tabular_kind, tmp_path):  # noqa: F811
    """Gathering shard caches by copying files: a chunk of another p̄ copied into the folder
    (same chunking, its own valid checksum) is never counted as done."""
    mine = _blobs_run(tmp_path)
    ifscale.run.pipeline.run(mine, tmp_path / "mine")
    expected = (tmp_path / "mine" / "scores.csv").read_bytes()
    other = _blobs_run(tmp_path)
    other.method.pbar = 4
    ifscale.run.pipeline.run(other, tmp_path / "other")
    folders = {p.parent for p in (tmp_path / "cache" / "scores").rglob("chunk-*.npz")}
    assert len(folders) == 2
    a, b = folders
    chunks = {f: {p.name: p.read_bytes() for p in f.glob("chunk-*.npz")} for f in folders}
    for source, target in ((a, b), (b, a)):  # each folder takes the other's chunks
        for name, data in chunks[source].items():
            (target / name).write_bytes(data)
    again = ifscale.run.pipeline.run(mine, tmp_path / "again")
    assert again["chunks_reused"] == 0 and again["chunks_scored"] == again["chunks"]
    assert (tmp_path / "again" / "scores.csv").read_bytes() == expected


def test_a_chunk_checksummed_over_its_own_scores_only_is_refused(tmp_path):
    """The checksum of a chunk covers the digest of its scoring's key: a chunk rewritten
    with a checksum of its own bytes alone (as chunks were written before) is refused."""
    import hashlib

    store = ChunkStore(tmp_path, 1, {"m": 1}, {"d": 1}, ChunkPlan(n=4, chunk=4)).open()
    scores = np.linspace(0, 1, 4)
    np.savez(
        store.path(0),
        scores=scores,
        key=np.array(store.key_digest),
        sha256=np.array(hashlib.sha256(scores.tobytes()).hexdigest()),
        span=np.array([0, 4]),
        seconds=np.array(1.0),
        compile=np.array(0.0),
    )
    assert store.load(0) is None and not store.path(0).exists()


def test_a_killed_report_leaves_results_as_they_were(tmp_path):
    results = tmp_path / "results"
    (results / "figures").mkdir(parents=True)
    (results / "table1.md").write_text("old table\n")
    (results / "figures" / "figure1.png").write_bytes(b"old figure")
    before = {p: p.read_bytes() for p in results.rglob("*") if p.is_file()}
    script = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from ifscale.cache.atomic import staged_files\n"
        "with staged_files(Path(sys.argv[1])) as out:\n"
        "    (out / 'table1.md').write_text('new table')\n"
        "    (out / 'figures').mkdir()\n"
        "    (out / 'figures' / 'figure1.png').write_bytes(b'new')\n"
        "    os.kill(os.getpid(), 9)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(results)], cwd=ROOT)
    assert done.returncode == -9
    after = {
        p: p.read_bytes() for p in results.rglob("*") if p.is_file() and ".staged" not in str(p)
    }
    assert after == before
    # The dead writer's temporary folder goes with the next report; a report that fails
    # midway changes nothing either.
    with pytest.raises(RuntimeError), staged_files(results) as out:
        (out / "table1.md").write_text("half a report")
        raise RuntimeError("the report failed")
    assert {p: p.read_bytes() for p in results.rglob("*") if p.is_file()} == before
    with staged_files(results) as out:
        (out / "table1.md").write_text("new table\n")
    assert (results / "table1.md").read_text() == "new table\n"
    assert (results / "figures" / "figure1.png").read_bytes() == b"old figure"
    assert not [p for p in results.iterdir() if p.name.startswith(".")]


def test_the_explain_report_copies_only_finished_runs(tmp_path):
    """A killed `stage=explain` leaves explanations.csv without metrics.json: the report
    refuses to copy it into results/ (and writes nothing there)."""
    unfinished = tmp_path / "outputs" / "explain_mnist" / "2026-12-05_00-00-00-abc123"
    unfinished.mkdir(parents=True)
    (unfinished / "explanations.csv").write_text("test_index,kind\n0,proponent\n")
    results = tmp_path / "results"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "experiments" / "report.py"),
            "explain",
            "--outputs",
            str(tmp_path / "outputs"),
            "--results",
            str(results),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "Skipping the unfinished run" in done.stderr
    assert "no finished explanation run" in done.stderr
    assert not any(p.is_file() for p in results.rglob("*"))


def _cli(*overrides, cache: Path, run_dir: Path, env=None):
    env = (env or os.environ) | {"IFSCALE_CACHE_DIR": str(cache)}
    command = [sys.executable, str(ROOT / "experiments" / "run.py"), *overrides]
    done = subprocess.run(
        [*command, f"hydra.run.dir={run_dir}"], capture_output=True, text=True, env=env
    )
    return done.returncode, [line for line in (done.stdout + done.stderr).splitlines() if line]


def _mount_tmpfs(folder: Path, size: str) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True
    )
    return done.returncode == 0


TINY_IMAGES = (
    "model=cnn_small",
    "dataset.subset_size=300",
    "train.epochs=1",
    "train.batch_size=50",
    "train.kept_checkpoints=2",
    "method=arnoldi",
    "method.n=20",
    "method.pbar=5",
    "method.keep=20",
    "method.fit_batch_size=50",
    "method.fit_batches=2",
    "score.max_examples=100",
    "progress=false",
)


@pytest.fixture
def tmpfs(tmp_path):
    folder = tmp_path / f"tmpfs-{uuid.uuid4().hex[:6]}"
    if not _mount_tmpfs(folder, "2m"):
        pytest.skip("mounting a tmpfs needs root (it is how a full disk is made here)")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.mark.slow  # end to end, minutes: make test-slow
def test_a_full_disk_ends_in_one_line_and_the_rerun_resumes(tmpfs, tmp_path, mnist_dir):
    env = os.environ | {"IFSCALE_DATA_DIR": str(mnist_dir)}
    code, lines = _cli(*TINY_IMAGES, cache=tmp_path / "roomy", run_dir=tmp_path / "ref", env=env)
    assert code == 0, lines[-5:]
    # Only the trained model fits: the fit's checkpoint meets a full disk.
    train_only = [o for o in TINY_IMAGES if not o.startswith(("method", "score"))]
    code, lines = _cli(*train_only, cache=tmpfs, run_dir=tmp_path / "t", env=env)
    assert code == 0, lines[-5:]
    free = os.statvfs(tmpfs).f_bavail * os.statvfs(tmpfs).f_frsize
    filler = tmpfs / "filler"
    filler.write_bytes(b"\0" * max(0, free - 60_000))
    code, lines = _cli(*TINY_IMAGES, cache=tmpfs, run_dir=tmp_path / "full", env=env)
    assert code == 2, lines[-5:]
    errors = [line for line in lines if "ERROR" in line]
    assert len(errors) == 1 and "No space left on device" in errors[0], lines
    assert not any("Traceback" in line for line in lines), lines
    assert not (tmp_path / "full" / "metrics.json").exists()
    filler.unlink()  # space again: the rerun refuses the half-written fit and resumes
    code, lines = _cli(*TINY_IMAGES, cache=tmpfs, run_dir=tmp_path / "freed", env=env)
    assert code == 0, lines[-5:]
    assert (tmp_path / "freed" / "scores.csv").read_bytes() == (
        tmp_path / "ref" / "scores.csv"
    ).read_bytes()


def test_a_read_only_cache_is_refused_before_the_run_folder(tmpfs, tmp_path, mnist_dir):
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    env = os.environ | {"IFSCALE_DATA_DIR": str(mnist_dir)}
    code, lines = _cli(*TINY_IMAGES, cache=tmpfs, run_dir=tmp_path / "run", env=env)
    assert code == 2 and len(lines) == 1, lines
    assert "paths.cache_dir" in lines[0] and "not writable" in lines[0]
    assert not (tmp_path / "run").exists()

"""The bad-input corpus: configs, image files, text corpora and caches that a run must
refuse with one clear line (`ConfigError` naming the key or the file), never a traceback and
never a silently wrong result.

Each case is (id, overrides, the text its one line must contain); `make_inputs(folder)`
writes the files the cases refer to (nothing binary is committed). Overrides may name
`{dir}`, the folder of generated inputs.
"""

from __future__ import annotations

import dataclasses
import zipfile
from pathlib import Path

import numpy as np


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    overrides: tuple[str, ...]
    names: str  # what the one line must contain: the key or the file
    env: tuple[tuple[str, str], ...] = ()


def _images(n=40, m=20, size=8, classes=4, seed=0, **changes):
    rng = np.random.default_rng(seed)
    arrays = {
        "x_train": rng.integers(0, 256, (n, size, size), dtype=np.uint8),
        "y_train": np.arange(n) % classes,
        "x_test": rng.integers(0, 256, (m, size, size), dtype=np.uint8),
        "y_test": np.arange(m) % classes,
    }
    arrays.update(changes)
    return arrays


def _float_images(x, value, where=(0, 0, 0)):
    x = x.astype(np.float32) / 255.0
    x[where] = value
    return x


TRAIN_PAIRS = [
    ("ein mann fährt fahrrad .", "a man rides a bike ."),
    ("eine frau liest ein buch .", "a woman reads a book ."),
    ("zwei hunde spielen im park .", "two dogs play in the park ."),
    ("ein kind isst einen apfel .", "a child eats an apple ."),
    ("die sonne scheint hell .", "the sun shines brightly ."),
    ("ein alter mann sitzt .", "an old man sits ."),
] * 8


def _corpus(folder: Path, train=TRAIN_PAIRS, test=TRAIN_PAIRS[:4], **raw: bytes) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    for split, pairs in (("train", train), ("test", test)):
        if pairs is None:
            continue
        (folder / f"{split}.de").write_text("".join(de + "\n" for de, _ in pairs))
        (folder / f"{split}.en").write_text("".join(en + "\n" for _, en in pairs))
    for name, content in raw.items():
        (folder / name.replace("_", ".")).write_bytes(content)
    return str(folder)


def make_inputs(folder: Path) -> None:
    """Writes every file the cases name into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    good = _images()
    npz = {
        "label_2pow31": dict(y_train=np.where(np.arange(40) == 5, 2**31, np.arange(40) % 4)),
        "label_2pow32_plus3": dict(
            y_train=np.where(np.arange(40) == 5, 2**32 + 3, np.arange(40) % 4)
        ),
        "label_negative": dict(y_train=np.where(np.arange(40) == 5, -1, np.arange(40) % 4)),
        "one_class": dict(y_train=np.full(40, 3), y_test=np.full(20, 3)),
        "label_gap": dict(y_train=np.where(np.arange(40) == 5, 999, np.arange(40) % 4)),
        "test_class_unseen": dict(y_test=np.where(np.arange(20) == 0, 7, np.arange(20) % 4)),
        "float_labels": dict(y_train=(np.arange(40) % 4).astype(np.float32)),
        "bool_labels": dict(y_train=np.arange(40) % 2 == 0, y_test=np.arange(20) % 2 == 0),
        "labels_2d": dict(y_train=(np.arange(40) % 4)[:, None]),
        "nan_pixel": dict(x_train=_float_images(good["x_train"], np.nan)),
        "inf_pixel": dict(x_test=_float_images(good["x_test"], np.inf)),
        "pixels_out_of_range": dict(x_train=good["x_train"].astype(np.float32) * 100),
        "negative_int_pixels": dict(x_train=good["x_train"].astype(np.int16) - 300),
        "complex_pixels": dict(x_train=good["x_train"].astype(np.complex64)),
        "empty_train": dict(x_train=np.zeros((0, 8, 8), np.uint8), y_train=np.zeros(0, np.int64)),
        "empty_test": dict(x_test=np.zeros((0, 8, 8), np.uint8), y_test=np.zeros(0, np.int64)),
        "tiny_images": dict(x_train=good["x_train"][:, :3, :3], x_test=good["x_test"][:, :3, :3]),
        "five_dims": dict(x_train=good["x_train"][:, None, :, :, None]),
        "length_mismatch": dict(y_train=np.arange(39) % 4),
        "shape_mismatch": dict(x_test=good["x_test"][:, :6, :6]),
    }
    for name, changes in npz.items():
        np.savez(folder / f"{name}.npz", **_images(**changes))
    arrays = _images()
    np.savez(folder / "good.npz", **arrays)
    np.savez(folder / "missing_array.npz", **{k: v for k, v in arrays.items() if k != "y_test"})
    np.savez(folder / "object_array.npz", **(arrays | {"y_train": np.array([1, "a"] * 20, object)}))
    raw = (folder / "good.npz").read_bytes()
    (folder / "truncated.npz").write_bytes(raw[: len(raw) // 2])
    (folder / "text.npz").write_text("x_train,y_train\n1,2\n")
    (folder / "empty.npz").write_bytes(b"")
    np.save(folder / "plain.npy", arrays["x_train"])
    with zipfile.ZipFile(folder / "bad_member.npz", "w") as zf:
        zf.writestr("x_train.npy", b"not an array")
        for key in ("y_train", "x_test", "y_test"):
            zf.writestr(f"{key}.npy", b"\x93NUMPY garbage")
    (folder / "a_folder.npz").mkdir(exist_ok=True)

    _corpus(folder / "corpus_good")
    _corpus(folder / "corpus_mismatch", train_en=b"one line only\n")
    _corpus(folder / "corpus_not_utf8", train_de=b"ein mann\n\xff\xfe kaputt\n" * 12)
    _corpus(folder / "corpus_empty_train", train_de=b"\n", train_en=b"\n")
    _corpus(folder / "corpus_no_test", test=None)
    (folder / "corpus_file").write_text("not a folder\n")
    (folder / "empty_data_dir").mkdir(exist_ok=True)
    (folder / "a_file").write_text("a file, not a folder\n")


IMAGES = ("dataset=images_npz", "model=cnn_small", "train.batch_size=8", "train.kept_checkpoints=5")
TEXT = (
    "dataset=parallel_text",
    "noise=permute",
    "model=transformer_tiny",
    "dataset.vocab_size=40",
)
GOOD_IMAGES = (*IMAGES, "dataset.path={dir}/good.npz")  # a valid tiny image set
GOOD_TEXT = (*TEXT, "dataset.path={dir}/corpus_good")


def good_image_run(folder: Path, cache: Path, *extra: str) -> list[str]:
    """Overrides of a run on the valid tiny image set written by `make_inputs(folder)`."""
    data = [o.replace("{dir}", str(folder)) for o in GOOD_IMAGES]
    return [*data, *extra, f"paths.cache_dir={cache}"]


def _npz(name: str, *extra: str, names: str | None = None) -> Case:
    return Case(
        f"images-{name}",
        (*IMAGES, f"dataset.path={{dir}}/{name}.npz", *extra),
        names or f"{name}.npz",
    )


def _explain(name: str, data: tuple[str, ...], *extra: str, names: str) -> Case:
    return Case(f"explain-{name}", (*data, "stage=explain", *extra), names)


def _text(name: str, *extra: str, names: str = "dataset.path", corpus: str = "") -> Case:
    return Case(
        f"text-{name}", (*TEXT, f"dataset.path={{dir}}/{corpus or 'corpus_' + name}", *extra), names
    )


CASES: tuple[Case, ...] = (
    # ---- config: types, ranges, names, layers (refused before any training)
    Case("config-n-not-int", ("method=arnoldi", "method.n=abc"), "method.n"),
    Case("config-n-float", ("method=arnoldi", "method.n=2.5"), "method.n"),
    Case("config-n-null", ("method=arnoldi", "method.n=null"), "method.n"),
    Case("config-pbar-not-int", ("method=arnoldi", "method.pbar=abc"), "method.pbar"),
    Case("config-pbar-zero", ("method=randproj", "method.pbar=0"), "method.pbar"),
    Case(
        "config-positive-only-maybe",
        ("method=arnoldi", "method.positive_only=maybe"),
        "method.positive_only",
    ),
    Case("config-unknown-key", ("method=arnoldi", "method.nn=3"), "method.nn"),
    Case("config-unknown-method", ("method=nonexistent",), "method"),
    Case("config-negative-seed", ("seed=-1",), "seed"),
    Case("config-noise-rate", ("noise.rate=1.5",), "noise.rate"),
    Case("config-learning-rate", ("train.learning_rate=-1",), "train.learning_rate"),
    Case(
        "config-fit-batch-size",
        ("method=arnoldi", "method.fit_batch_size=0"),
        "method.fit_batch_size",
    ),
    Case("config-block-zero", ("method=arnoldi", "method.block=0"), "method.block"),
    Case(
        "config-block-above-n",
        ("method=arnoldi", "method.n=20", "method.block=32"),
        "method.block",
    ),
    Case("config-randproj-block-zero", ("method=randproj", "method.block=0"), "method.block"),
    Case("config-kfac-damping-zero", ("method=ekfac", "method.damping=0"), "method.damping"),
    Case("config-kfac-fisher", ("method=kfac", "method.fisher=true"), "method.fisher"),
    Case("config-curvature", ("method=arnoldi", "method.curvature=fisher"), "method.curvature"),
    Case(
        "config-kfac-factor-too-large",
        (*GOOD_IMAGES, "method=kfac", "method.max_factor_size=16"),
        "method.max_factor_size",
    ),
    Case(
        "config-kfac-no-supported-layer",
        (
            *GOOD_TEXT,
            "train=transformer",
            "train.batch_size=8",
            "method=ekfac",
            "method.layers=[decoder/norm]",
        ),
        "method.layers",
    ),
    Case(
        "config-shard-out-of-range",
        ("method=loss", "score.shards=2", "score.shard=5"),
        "score.shard",
    ),
    Case(
        "config-more-checkpoints-than-steps",
        (*GOOD_IMAGES, "train.kept_checkpoints=100"),
        "train.kept_checkpoints",
    ),
    Case(
        "config-batch-larger-than-data",
        (*GOOD_IMAGES, "train.batch_size=64"),
        "train.batch_size",
    ),
    Case("config-subset-fraction", ("dataset.subset_fraction=2",), "dataset.subset_fraction"),
    Case("config-text-model-on-images", ("model=transformer_tiny",), "model"),
    Case("config-name-escapes", ("name=../../../../x",), "name"),
    Case("config-name-hidden", ("name=.x",), "name"),
    Case("config-name-too-long", ("name=" + "x" * 300,), "name"),
    Case("config-mesh-model-indivisible", ("method=arnoldi", "mesh.model=3"), "mesh.model"),
    Case("config-mesh-too-many-devices", ("method=arnoldi", "mesh.data=8"), "mesh"),
    Case("config-stage", ("stage=everything",), "stage"),
    Case(
        "config-lds-on-translation",
        (*GOOD_TEXT, "stage=lds", "method=graddot"),
        "linear datamodeling score",
    ),
    Case(
        "config-image-layer-missing",
        (*GOOD_IMAGES, "method=arnoldi", "method.layers=[Dense_0,Dense_9]"),
        "Dense_9",
    ),
    Case(
        "config-text-subset-missing",
        (*GOOD_TEXT, "method=arnoldi", "method.layers=last9_decoder"),
        "method.layers",
    ),
    _explain(
        "test-index",
        GOOD_IMAGES,
        "method=tracin",
        "explain.test_indices=[3,25]",
        names="explain.test_indices",
    ),
    _explain("top-k", GOOD_IMAGES, "method=tracin", "explain.top_k=41", names="explain.top_k"),
    _explain(
        "count-above-test-set",
        GOOD_IMAGES,
        "method=tracin",
        "explain.select=random",
        "explain.count=21",
        names="explain.count",
    ),
    _explain("baseline-method", (), "method=loss", names="method.name"),
    _explain("no-method", (), names="stage"),
    _explain(
        "translation-misclassified",
        GOOD_TEXT,
        "method=arnoldi",
        "explain.target=label",
        names="explain.select",
    ),
    _explain(
        "translation-prediction",
        GOOD_TEXT,
        "method=arnoldi",
        "explain.select=random",
        names="explain.target",
    ),
    # ---- image data: labels, pixels, shapes, files
    _npz("label_2pow31"),
    _npz("label_2pow32_plus3"),
    _npz("label_negative"),
    _npz("one_class"),
    _npz("label_gap"),
    _npz("test_class_unseen"),
    _npz("float_labels"),
    _npz("bool_labels"),
    _npz("labels_2d"),
    _npz("nan_pixel"),
    _npz("inf_pixel"),
    _npz("pixels_out_of_range"),
    _npz("negative_int_pixels"),
    _npz("complex_pixels"),
    _npz("empty_train"),
    _npz("empty_test"),
    _npz("tiny_images", names="too small for model.name=cnn_small"),
    _npz("five_dims"),
    _npz("length_mismatch"),
    _npz("shape_mismatch"),
    _npz("missing_array"),
    _npz("object_array"),
    _npz("truncated"),
    _npz("text"),
    _npz("empty"),
    _npz("bad_member"),
    _npz("a_folder"),
    Case("images-npy-file", (*IMAGES, "dataset.path={dir}/plain.npy"), "plain.npy"),
    Case("images-no-file", (*IMAGES, "dataset.path={dir}/nowhere.npz"), "nowhere.npz"),
    # ---- text corpora
    _text("mismatch", names="train.en"),
    _text("not_utf8", names="train.de"),
    _text("empty_train", names="train.de"),
    _text("no_test", names="test"),
    _text("file", names="corpus_file"),
    _text("missing", names="corpus_missing"),
    _text("vocab", "dataset.vocab_size=100000", names="dataset.vocab_size", corpus="corpus_good"),
    _text("max_length", "dataset.max_length=2", names="dataset.max_length", corpus="corpus_good"),
    # ---- data and cache folders
    Case("cache-mnist-missing", ("paths.data_dir={dir}/empty_data_dir",), "empty_data_dir"),
    Case("cache-dir-is-a-file", ("paths.cache_dir={dir}/a_file",), "a_file"),
)

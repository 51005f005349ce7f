"""Arnoldi at model scale on one accelerator: fit and score a Transformer of tens of millions
of parameters, with the Krylov basis on the device and in host memory.

    python experiments/scale_check.py --preset 55m --out results/scale_check_55m.json   # GPU
    python experiments/scale_check.py --preset 100m --basis-dtype bfloat16 ...   # on an H100
    python experiments/scale_check.py --width 32 --layers 1 --hidden 64 --steps 5 \\
        --n 6 --pbar 3 --offload-n 4 --pairs 64 --train-pairs 400 --vocab 300 \\
        --fit-batch-size 16 --fit-batches 4 --block 2                            # CPU smoke

(`make scale-check` runs the GPU sequence of issue 31 part A.) Trains briefly on Multi30k
(model quality is not the point), then fits Arnoldi (n HVPs over fit_batches x fit_batch_size
pairs in blocks of `--block`, the top p̄ eigenpairs kept) and scores the self-influence of up
to `--pairs` training pairs with the route `--route` picks. Reports fit time, scoring
pairs/s, peak device memory against the memory plan's figure and the basis's bytes; the
same fit with `basis_memory=host` at `--offload-n` iterations shows the cost of keeping the
basis in host memory (and its host traffic). Results as JSON, written after each stage, so a
failure keeps what came before; `--budget-s` bounds the run: scoring takes as many pairs as
the time left allows (recorded), and a stage that cannot start in time is recorded as skipped.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import numpy as np

from experiments.memory_plan import computed
from ifscale.data.text import load_translation
from ifscale.domains.translation.training import train_translation, translation_task
from ifscale.influence import Arnoldi, ParamView
from ifscale.influence.hvp import device_batches, hvp, hvp_block
from ifscale.influence.scoring import self_influence_scores
from ifscale.influence.sharding import Layout, bytes_per_device
from ifscale.models import build_model, count_params
from ifscale.train import TrainConfig
from ifscale.utils import describe_device, stream_key

ROOT = Path(__file__).resolve().parents[1]
# The model sizes of issue 31: the 55.6M-parameter Transformer fitted on an H100 before, and
# a 105.4M-parameter one (the memory plan's largest for one H200 in float32; on an 80 GB card
# with a bfloat16 basis).
PRESETS = {
    "55m": {"width": 512, "heads": 8, "hidden": 2048, "layers": 7, "vocab": 8000},
    "100m": {"width": 768, "heads": 12, "hidden": 3072, "layers": 6, "vocab": 8000},
}


def peak_bytes() -> int | None:
    stats = jax.devices()[0].memory_stats() or {}
    return stats.get("peak_bytes_in_use")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), help="model size (overrides)")
    parser.add_argument("--block", type=int, default=16, help="HVPs per pass (block Arnoldi)")
    parser.add_argument("--basis-dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--budget-s", type=float, default=None, help="wall-clock bound")
    parser.add_argument("--corpus", default=str(ROOT.parent / "shared" / "data" / "multi30k"))
    parser.add_argument("--train-pairs", type=int, default=29000)
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--max-length", type=int, default=40)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--layers", type=int, default=7, help="encoder and decoder layers each")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--pbar", type=int, default=100)
    parser.add_argument("--offload-n", type=int, default=50)
    parser.add_argument("--fit-batch-size", type=int, default=64)
    parser.add_argument("--fit-batches", type=int, default=8)
    parser.add_argument("--pairs", type=int, default=10000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--route",
        default="auto",
        help="projection route: auto (the rule on the shapes: jvp once a batch of per-example "
        "gradients would pass 1 GiB), jvp, grad",
    )
    parser.add_argument("--out", default=str(ROOT / "results" / "scale_check.json"))
    args = parser.parse_args()
    for name, value in PRESETS.get(args.preset, {}).items():
        setattr(args, name, value)
    report: dict = {"device": describe_device(), "jax": jax.__version__, "args": vars(args)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save(**values):
        report.update(values)
        out.write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps(values), flush=True)

    start = time.perf_counter()

    def left() -> float:
        return (
            float("inf") if args.budget_s is None else args.budget_s - (time.perf_counter() - start)
        )

    data = load_translation(
        "parallel_text",
        path=args.corpus,
        train_size=args.train_pairs,
        test_size=100,
        vocab_size=args.vocab,
        max_length=args.max_length,
        noise_kind="permute",
        noise_rate=0.06,
        seed=0,
    )
    model = build_model(
        "transformer_small",
        vocab_size=data.tokenizer.vocab_size,
        width=args.width,
        heads=args.heads,
        hidden=args.hidden,
        encoder_layers=args.layers,
        decoder_layers=args.layers,
        dropout=0.0,
    )
    save(data_s=time.perf_counter() - start, train_pairs=data.n_train)
    cfg = TrainConfig(
        optimizer="adam",
        learning_rate=5e-4,
        warmup_steps=min(100, args.steps),
        schedule="cosine",
        batch_size=64,
        steps=args.steps,
        kept_checkpoints=1,
    )
    trained = train_translation(model, data, cfg, seed=0, progress=False)
    params = trained.params
    save(
        n_params=count_params(params),
        train_s=trained.info["train_time_s"],
        bleu=trained.info["bleu"],
    )

    task = translation_task(model)
    rng = np.random.default_rng(0)
    index = rng.choice(data.n_train, args.fit_batch_size * args.fit_batches, replace=False)
    batches = [data.train_batch(i) for i in index.reshape(args.fit_batches, -1)]
    view = ParamView.create(task, params, example=batches[0])
    layout = Layout.create(view.size)
    fit = device_batches(batches, layout.batch())
    key = stream_key(0, "method")
    # Compile the HVPs (one vector, and a block of the fits' size): not timed.
    jax.block_until_ready(hvp(view, fit, view.theta))
    if args.block > 1:
        vectors = jax.numpy.stack([view.theta] * min(args.block, args.offload_n, args.n))
        jax.block_until_ready(hvp_block(view, fit, vectors))

    # The host-memory comparison first (small n), then the full fit and scoring: a failure in
    # the largest step loses nothing measured before it.
    itemsize = 2 if args.basis_dtype == "bfloat16" else 4
    for label, n, memory in (
        ("device_small", args.offload_n, "device"),
        ("host_small", args.offload_n, "host"),
        ("device", args.n, "device"),
    ):
        pbar = min(args.pbar, n)
        block = min(args.block, n)
        method = Arnoldi(
            n=n,
            pbar=pbar,
            keep=pbar,
            block=block,
            basis_memory=memory,
            basis_dtype=args.basis_dtype,
            progress=False,
            route=args.route,
        )
        # A fit of n products takes about n / (the small device fit's products per second).
        rate = report.get("fit_device_small", {}).get("hvp_pairs_per_s")
        expected = n * args.fit_batch_size * args.fit_batches / rate if rate else 0.0
        if expected > left():
            save(
                **{f"fit_{label}": {"skipped": f"needs about {expected:.0f} s, {left():.0f} left"}}
            )
            continue
        before = peak_bytes()
        t0 = time.perf_counter()
        spectrum = method.spectrum(view, fit, key, layout)
        jax.block_until_ready(spectrum.vectors)
        seconds = time.perf_counter() - t0
        plan = computed(view.size, n, pbar, 1, memory, itemsize)
        save(
            **{
                f"fit_{label}": {
                    "n": n,
                    "basis_memory": memory,
                    "seconds": seconds,
                    "hvp_pairs_per_s": n * args.fit_batch_size * args.fit_batches / seconds,
                    "block": block,
                    "basis_dtype": args.basis_dtype,
                    "basis_gib_if_on_device": (n + 1) * layout.padded * itemsize / 2**30,
                    "plan_device_bytes": sum(
                        plan[k] for k in ("params", "product", "basis", "eigvecs")
                    ),
                    "eigvec_bytes_per_device": max(bytes_per_device(spectrum.vectors).values()),
                    "peak_bytes_before": before,
                    "peak_bytes_after": peak_bytes(),
                    "top_values": np.asarray(spectrum.values[:5]).tolist(),
                }
            }
        )
        if label == "device":
            state = method.from_spectrum(view, spectrum, layout)
            try:
                # A first batch's worth times the scoring; then as many pairs as time allows.
                first = self_influence_scores(
                    method, state, _pairs(data, args.batch_size), args.batch_size, False
                )
                wanted = min(args.pairs, data.n_train)
                affordable = int(0.8 * left() * first.examples_per_s)
                count = max(args.batch_size, min(wanted, affordable))
                result = self_influence_scores(
                    method, state, _pairs(data, count), args.batch_size, False
                )
            except Exception as e:  # e.g. out of memory: say so in the report
                save(score={"error": f"{type(e).__name__}: {str(e).splitlines()[0]}"})
                raise
            save(
                score={
                    "pairs": len(result.scores),
                    "pairs_wanted": wanted,
                    "route": getattr(method.prepare(state, _pairs(data, 2)), "route", None),
                    "pairs_per_s": result.examples_per_s,
                    "seconds": result.seconds,
                    "compile_seconds": first.compile_seconds,
                    "peak_bytes": peak_bytes(),
                }
            )
            del state
        del spectrum
    save(total_s=time.perf_counter() - start)


def _pairs(data, count: int):
    return data.train_batch(np.arange(min(count, data.n_train)))


if __name__ == "__main__":
    main()

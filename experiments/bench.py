"""Speed benchmark of self-influence on cnn_large (`make bench`).

Prints, for a fixed set of MNIST training examples: examples/s of each method's
self-influence, each as a ratio to one plain batched forward+backward pass over the same
examples, and the fits (Arnoldi n HVPs, RandProj p̄ HVPs over 2,560 examples) one vector
at a time and in blocks of `--block` vectors, and Arnoldi's block fit on the Gauss–Newton
matrix beside the Hessian's: seconds, product throughput (examples x vectors per second) and
achieved GFLOP/s, counting the FLOPs XLA reports for the compiled product program; K-FAC's
and EK-FAC's fits (one and two passes over the fit examples) and their scoring.
Compilation is excluded (one warm-up call) and the clock stops after `block_until_ready`.
cnn_large at freshly initialised parameters (speed does not depend on the values).

    python experiments/bench.py --examples 2048 --arnoldi-n 200 --block 16
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import resource
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ifscale.data import load_images
from ifscale.domains.images import classification_task
from ifscale.influence import (
    AreaUnderMargin,
    Arnoldi,
    CheckpointLoss,
    Checkpoints,
    Ekfac,
    Kfac,
    Lissa,
    ParamView,
    RandProj,
    TracIn,
    Trak,
)
from ifscale.influence.hvp import device_batches, hvp_many
from ifscale.influence.methods import ProjectedState
from ifscale.influence.scoring import self_influence_scores
from ifscale.models import build_model, init_params
from ifscale.utils import describe_device

ROOT = Path(__file__).resolve().parents[1]


def forward_backward_rate(task, params, data, batch_size):
    """examples/s of a plain batched gradient of the mean loss (the reference pass)."""
    grad = jax.jit(jax.grad(lambda p, b: task.loss(p, b).mean()))
    x, y = data
    jax.block_until_ready(grad(params, (x[:batch_size], y[:batch_size])))
    start = time.perf_counter()
    for s in range(0, len(y) - batch_size + 1, batch_size):
        out = grad(params, (x[s : s + batch_size], y[s : s + batch_size]))
    jax.block_until_ready(out)
    n = (len(y) // batch_size) * batch_size
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=2048, help="examples scored per method")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--arnoldi-n", type=int, default=200)
    parser.add_argument("--fit-batch-size", type=int, default=128)
    parser.add_argument("--fit-batches", type=int, default=20)
    parser.add_argument("--lissa-examples", type=int, default=64)
    parser.add_argument("--pbar-large", type=int, default=100, help="the larger p̄ row")
    parser.add_argument("--block", type=int, default=16, help="HVPs per pass of a block fit")
    parser.add_argument("--out", default=str(ROOT / "results" / "bench.json"))
    args = parser.parse_args()

    data = load_images("hub", data_dir=ROOT / ".cache" / "data")
    x, y = data.x_train[: args.examples], data.y_train[: args.examples]
    model = build_model("cnn_large")
    params = init_params(model, x.shape[1:], jax.random.key(0))
    task = classification_task(model)
    fit = [
        (data.x_train[i : i + args.fit_batch_size], data.y_train[i : i + args.fit_batch_size])
        for i in range(0, args.fit_batch_size * args.fit_batches, args.fit_batch_size)
    ]
    checkpoints = Checkpoints(
        jax.tree_util.tree_map(lambda a: np.asarray(a)[None], params), np.array([0.1])
    )
    # Five checkpoints (copies: speed does not depend on the values) for the methods that
    # read several: TRAK over checkpoints, the training-dynamics baselines.
    five = Checkpoints(
        jax.tree_util.tree_map(lambda a: np.stack([np.asarray(a)] * 5), params), np.full(5, 0.1)
    )
    key = jax.random.key(0)

    report = {
        "device": describe_device(),
        "jax": jax.__version__,
        "python": platform.python_version(),
        "examples": args.examples,
        "batch_size": args.batch_size,
    }
    fb = forward_backward_rate(task, params, (x, y), args.batch_size)
    report["forward_backward_examples_per_s"] = fb
    print(f"{report['device']}, JAX {jax.__version__}")
    print(f"plain forward+backward: {fb:8.0f} examples/s")

    view = ParamView.create(task, params, example=fit[0])
    fit = device_batches(fit)
    fit_examples = args.fit_batch_size * args.fit_batches
    report["fit_examples"] = fit_examples
    report["fits"] = {}
    spectra = {}  # (name, block) -> the fitted spectrum
    for name, method, vectors in (
        *(
            (
                f"arnoldi_n{args.arnoldi_n}",
                Arnoldi(n=args.arnoldi_n, pbar=1, block=b, progress=False),
                args.arnoldi_n,
            )
            for b in (1, args.block)
        ),
        # The Gauss–Newton matrix in the same block fit: its products side by side.
        (
            f"arnoldi_n{args.arnoldi_n}_ggn",
            Arnoldi(n=args.arnoldi_n, pbar=1, block=args.block, curvature="ggn", progress=False),
            args.arnoldi_n,
        ),
        *(
            (
                f"randproj_pbar{args.pbar_large}",
                RandProj(pbar=args.pbar_large, block=b, progress=False),
                args.pbar_large,
            )
            for b in (1, args.block)
        ),
    ):
        block = method.block
        # Compile the HVP programs outside the clock: a warm-up fit of one full block and
        # of the last, partial one.
        size = block + vectors % block
        warm = dataclasses.replace(
            method,
            progress=False,
            **({"n": size} if isinstance(method, Arnoldi) else {"pbar": size}),
        )
        jax.block_until_ready(warm.spectrum(view, fit, key).vectors)
        start = time.perf_counter()
        fitted = method.spectrum(view, fit, key)
        jax.block_until_ready(fitted.vectors)
        seconds = time.perf_counter() - start
        spectra[name, block] = fitted
        curved = view.with_curvature(method.curvature)
        flops = (
            hvp_many.lower(curved, fit[0], jnp.zeros((block, view.size), view.dtype))
            .compile()
            .cost_analysis()["flops"]
        )
        rate = fit_examples * vectors / seconds
        row = {
            "seconds": seconds,
            "block": block,
            "hvps": vectors,
            "examples_x_vectors_per_s": rate,
            "flop_per_example_vector": flops / (args.fit_batch_size * block),
            "achieved_gflop_per_s": rate * flops / (args.fit_batch_size * block) / 1e9,
        }
        report["fits"][f"{name}_block{block}"] = row
        print(
            f"{name} fit, block {block}: {seconds:7.1f} s  {rate:7.0f} example-HVPs/s  "
            f"{row['achieved_gflop_per_s']:5.1f} GFLOP/s "
            f"({row['flop_per_example_vector'] / 1e6:.1f} MFLOP each)",
            flush=True,
        )
    report["arnoldi_fit_s"] = report["fits"][f"arnoldi_n{args.arnoldi_n}_block1"]["seconds"]
    # The scoring rows use the one-vector Arnoldi fit and the block RandProj fit.
    spectrum = spectra[f"arnoldi_n{args.arnoldi_n}", 1]
    randproj_spectrum = spectra[f"randproj_pbar{args.pbar_large}", args.block]

    # LISSA with the settings of Table 1 (conf/table1/lissa_r10.yaml): an HVP batch of 16.
    lissa_fit = [
        (data.x_train[i : i + 16], data.y_train[i : i + 16]) for i in range(0, 16 * 10, 16)
    ]
    arnoldi_small = Arnoldi(n=args.arnoldi_n, pbar=10)
    arnoldi_large = Arnoldi(n=args.arnoldi_n, pbar=min(args.pbar_large, args.arnoldi_n))
    rows = {  # name: (method, state from the one Arnoldi fit or None, examples, fit batches)
        "arnoldi_pbar10": (
            arnoldi_small,
            arnoldi_small.from_spectrum(view, spectrum),
            args.examples,
            fit,
        ),
        f"arnoldi_pbar{args.pbar_large}": (
            arnoldi_large,
            arnoldi_large.from_spectrum(view, spectrum),
            args.examples,
            fit,
        ),
        f"randproj_pbar{args.pbar_large}": (
            RandProj(pbar=args.pbar_large),
            RandProj(pbar=args.pbar_large).from_spectrum(view, randproj_spectrum),
            args.examples,
            fit,
        ),
        "tracin_1": (TracIn(checkpoints=1), None, args.examples, fit),
        # TRAK with k = the larger p̄ (its scoring projects as Arnoldi's p̄ row does), the
        # trained model alone and an ensemble of 5 checkpoints; its fit is a projection of
        # the fit examples per model.
        f"trak_k{args.pbar_large}": (
            Trak(k=args.pbar_large, progress=False),
            None,
            args.examples,
            fit,
        ),
        f"trak_k{args.pbar_large}_m5": (
            Trak(k=args.pbar_large, models=5, progress=False),
            None,
            args.examples,
            fit,
        ),
        # K-FAC and EK-FAC: their fit is one (two) passes over the fit examples.
        "kfac": (Kfac(progress=False), None, args.examples, fit),
        "ekfac": (Ekfac(progress=False), None, args.examples, fit),
        "checkpoint_loss_5": (CheckpointLoss(checkpoints=5), None, args.examples, fit),
        "aum_5": (AreaUnderMargin(checkpoints=5), None, args.examples, fit),
        "lissa_r10": (
            Lissa(r=10, scale=10.0, damping=0.03),
            None,
            args.lissa_examples,
            lissa_fit,
        ),
    }
    for name, (method, state, n, batches) in rows.items():
        if state is None:
            start = time.perf_counter()
            kept = five if method.checkpoints_needed() > 1 else checkpoints
            state = jax.block_until_ready(method.fit(task, params, batches, key, kept))
            report[f"{name}_fit_s"] = time.perf_counter() - start
        # The runner's path: route chosen by timing, directions laid out once.
        state = method.prepare(state, (x[: args.batch_size], y[: args.batch_size]))
        result = self_influence_scores(
            method, state, (x[:n], y[:n]), args.batch_size, progress=False
        )
        route = state.route if isinstance(state, ProjectedState) else None
        if hasattr(state, "members"):  # TRAK: one projected state per model, one route
            route = state.members[0].route
        rate = result.examples_per_s
        report[name] = {
            "examples_per_s": rate,
            "ratio_to_forward_backward": fb / rate,
            "route": route,
            "examples": n,
        }
        print(
            f"{name:18s} {rate:8.1f} examples/s  ({fb / rate:6.1f}x forward+backward)"
            f"  route={route or '-'}"
        )
    report["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()

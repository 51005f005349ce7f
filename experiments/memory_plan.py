"""The memory plan of an Arnoldi fit: bytes per device, computed and measured.

    python experiments/memory_plan.py        # -> results/memory_plan.md

Computed: bytes per device of the parameters (float32; split over `model` as the basis is,
`ParamView.laid_out`, or replicated as before that existed), the Krylov basis
[(n+1), p] and the stored eigenvectors [keep, p] (both sharded over `model`, padded to a
multiple of 1024 when model > 1; float32 or `method.basis_dtype=bfloat16`), and, with the
basis in host memory, what stays on the device (two rows in flight), what each device's host
holds and what a fit moves over the host link (block Arnoldi reads each stored row once per
step for the step's b products). Measured: the same arrays' shards after real fits on 4
simulated CPU devices (a subprocess: XLA_FLAGS is read when JAX starts), on two small
settings and three meshes, the host traffic counted by the fit, and XLA's compiled memory
analysis of one curvature product with the parameters replicated and split.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ALIGN = 1024
GIB = 2**30

MEASURE = """
import json, sys, jax, jax.numpy as jnp, numpy as np
from ifscale.influence import ParamView, Task
from ifscale.influence.krylov import arnoldi
from ifscale.influence.hvp import _hvp_jit, device_batches, hvp
from ifscale.influence.scoring import place
from ifscale.influence.sharding import Layout, bytes_per_device, make_mesh

def fit(view, fit_data, layout, n, **options):
    start = jax.random.normal(jax.random.key(0), (options.get("block", 1), view.size))
    options.setdefault("matvec_block", lambda vs: jnp.stack([hvp(view, fit_data, v) for v in vs]))
    return arnoldi(lambda v: hvp(view, fit_data, v), start, n, progress=False, layout=layout,
                   **options)

def mlp(width):
    def loss(params, batch):
        x, y = batch
        h = jnp.tanh(x @ params["w1"])
        return jnp.sum((h @ params["w2"] - y) ** 2, axis=-1)
    rng = np.random.default_rng(0)
    params = {"w1": jnp.asarray(rng.normal(size=(width, width)) / width, jnp.float32),
              "w2": jnp.asarray(rng.normal(size=(width, 8)) / width, jnp.float32)}
    x = rng.normal(size=(64, width)).astype(np.float32)
    data = (x, rng.normal(size=(64, 8)).astype(np.float32))
    return Task(loss), params, data

out, traffic = [], []
for width, n, keep in ((50, 40, 20), (1000, 12, 8)):
    task, params, data = mlp(width)
    for shape in ((1, 1), (1, 4), (2, 2)):
        mesh = make_mesh(*shape)
        view = ParamView.create(task, params).laid_out(mesh)
        layout = Layout.create(view.size, mesh)
        batches = device_batches([data], layout.batch())
        for dtype in ("float32", "bfloat16"):
            krylov = fit(view, batches, layout, n, basis_dtype=jnp.dtype(dtype))
            vectors = krylov.combine(jnp.ones((keep, krylov.m), jnp.float32))
            out.append({"p": view.size, "n": n, "keep": keep, "data": shape[0],
                        "model": shape[1], "dtype": dtype,
                        "basis": max(bytes_per_device(krylov.rows).values()),
                        "eigvecs": max(bytes_per_device(vectors).values()),
                        "params": max(bytes_per_device(view.values).values())})
        if width == 50 and shape != (2, 2):
            for block in (1, 4, 8):
                krylov = fit(view, batches, layout, n, block=block, basis_memory="host")
                traffic.append({"p": view.size, "n": n, "block": block, "model": shape[1],
                                "read": krylov.host_bytes_read})
# One product's memory per device (arguments, result, XLA's temporaries), compiled.
products = []
task, params, data = mlp(1000)
for shape, split in (((1, 1), False), ((1, 4), False), ((1, 4), True), ((2, 2), True)):
    mesh = make_mesh(*shape)
    view = ParamView.create(task, params)
    layout = Layout.create(view.size, mesh)
    view = view.laid_out(mesh) if split else place(view, mesh)
    batch = device_batches([data], layout.batch())[0]
    v = jax.device_put(jnp.zeros(view.values.shape, jnp.float32),
                       view.sharding or layout.replicated())
    m = _hvp_jit.lower(view, batch, v).compile().memory_analysis()
    products.append({"p": view.size, "data": shape[0], "model": shape[1], "split": split,
                     "arguments": m.argument_size_in_bytes, "result": m.output_size_in_bytes,
                     "temporaries": m.temp_size_in_bytes})
print(json.dumps({"arrays": out, "traffic": traffic, "products": products}))
"""


def padded(p: int, model: int) -> int:
    return p if model == 1 else -(-p // ALIGN) * ALIGN


def computed(
    p: int,
    n: int,
    keep: int,
    model: int,
    memory: str = "device",
    itemsize: int = 4,
    split: bool = True,
) -> dict[str, int]:
    """Bytes per device (and per device's share of host memory): float32 parameters (split
    over `model` as a padded row, or replicated), the basis and eigenvectors at `itemsize`
    bytes an entry, and what one float32 curvature product holds besides the parameters
    while it runs (as measured below: with the parameters whole, its tangent, its result and
    about one vector of temporaries; split, the parameters and the tangent gathered whole
    and the shares of the tangent and the result), activations not counted."""
    row = itemsize * padded(p, model) // model
    basis = (n + 1) * row
    share = 4 * padded(p, model) // model
    return {
        "params": share if split else 4 * p,
        "product": 8 * p + 2 * share if split and model > 1 else 12 * p,
        "basis": basis if memory == "device" else 2 * row,
        "basis_host": 0 if memory == "device" else basis,
        "eigvecs": keep * row,
    }


def rows_read(n: int, block: int, passes: int = 1) -> int:
    """Basis rows a host-memory fit brings to the device: the n rows multiplied, and per
    step and Gram-Schmidt pass every row stored when the step starts (first + b)."""
    return n + passes * sum(first + block for first in range(0, n, block))


def measure() -> dict:
    env = os.environ | {
        # XLA:CPU aborts a collective whose participants arrive over 40 s apart by default.
        "XLA_FLAGS": "--xla_force_host_platform_device_count=4"
        " --xla_cpu_collective_call_terminate_timeout_seconds=240",
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": str(ROOT),
    }
    done = subprocess.run(
        [sys.executable, "-c", MEASURE], capture_output=True, text=True, env=env, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


H200_GIB = 139  # what one H200 offers JAX (about 139 GiB)
HEADROOM = 0.9  # of a device's memory planned for these arrays; the rest for activations


def largest_fitting(
    devices: int, memory: str, itemsize: int, split: bool = True, n=200, keep=100
) -> int:
    """The most parameters whose planned arrays fit HEADROOM of `devices` H200s on `model`
    (by bisection on p, to a multiple of 1M)."""
    budget = HEADROOM * H200_GIB * GIB

    def fits(p: int) -> bool:
        c = computed(p, n, keep, devices, memory, itemsize, split)
        return c["params"] + c["product"] + c["basis"] + c["eigvecs"] <= budget

    low, high = 0, 10**12
    while high - low > 10**6:
        mid = (low + high) // 2
        low, high = (mid, high) if fits(mid) else (low, mid)
    return low


def _size(b: float) -> str:
    if b == 0:
        return "0"
    return f"{b / GIB:,.1f} GiB" if b >= GIB / 10 else f"{b / 2**20:,.2f} MiB"


def main() -> None:
    measured = measure()
    dtypes = (("float32", 4), ("bfloat16", 2))
    lines = [
        "# Memory plan of the Arnoldi fit",
        "",
        "Generated by `python experiments/memory_plan.py`. n = 200 Arnoldi steps, keep = 100",
        "stored eigenvectors; bytes **per device**. `model` devices share the basis and the",
        "eigenvectors (padded to a multiple of 1024 parameters when model > 1), stored in",
        "float32 or, with `method.basis_dtype=bfloat16`, in half the bytes, and the float32",
        "parameters, split as a padded row (`ParamView.laid_out`). With the basis in host",
        "memory the device holds two rows in flight and each device's host holds its share of",
        "the basis. One product: what a float32 curvature product holds besides the resident",
        "parameters while it runs, from XLA's memory analysis below (whole parameters: tangent,",
        "result, about one vector of temporaries, 12p bytes; split: the parameters and the",
        "tangent gathered whole, 8p, and the shares of tangent and result). Not counted: the",
        "activations of the product's batch (and b tangents' worth with `method.block=b`), and",
        "the per-example gradients of the `grad` projection route while scoring",
        "([batch/data, p] per device; the `jvp` route needs one direction at a time).",
        "",
        "| parameters | model devices | basis memory | basis dtype | params | one product |"
        " basis on device | basis in host RAM | eigenvectors | device total |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for p in (1_000_000, 100_000_000, 300_000_000, 1_000_000_000):
        for model in (1, 8, 64):
            for memory in ("device", "host"):
                for dtype, itemsize in dtypes:
                    c = computed(p, 200, 100, model, memory, itemsize)
                    total = c["params"] + c["product"] + c["basis"] + c["eigvecs"]
                    lines.append(
                        f"| {p:,} | {model} | {memory} | {dtype} | {_size(c['params'])} | "
                        f"{_size(c['product'])} | {_size(c['basis'])} | {_size(c['basis_host'])} | "
                        f"{_size(c['eigvecs'])} | {_size(total)} |"
                    )
    lines += [
        "",
        "## The largest model that fits H200s",
        "",
        f"Parameters whose planned arrays (above) take at most {HEADROOM:.0%} of each of",
        f"`model` H200s' {H200_GIB} GiB (the rest left to activations), n = 200, keep = 100,",
        "one product held, rounded down to a million, with the parameters replicated on every",
        "device (as before `ParamView.laid_out`) and split over `model` (now); with the basis",
        "in host memory, the host RAM each device then needs for its share of the basis (split",
        "parameters; the one-H200 machine lent to this project has 128 GiB).",
        "",
        "| H200s on `model` | basis memory | basis dtype | largest model, parameters replicated |"
        " largest model, parameters split | host RAM per device |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for devices in (1, 8, 64):
        for memory in ("device", "host"):
            for dtype, itemsize in dtypes:
                whole = largest_fitting(devices, memory, itemsize, split=False)
                p = largest_fitting(devices, memory, itemsize)
                host = computed(p, 200, 100, devices, memory, itemsize)["basis_host"]
                lines.append(
                    f"| {devices} | {memory} | {dtype} | {whole / 1e6:,.0f}M | "
                    f"{p / 1e6:,.0f}M | {_size(host)} |"
                )
    gbps = 50
    lines += [
        "",
        "## Host traffic of a host-memory fit",
        "",
        "Rows brought from host memory to the device: the n rows multiplied, and, per step and",
        "Gram-Schmidt pass, every row stored when the step starts. Block Arnoldi",
        "(`method.block=b`) orthogonalizes a step's b products together, reading each stored",
        "row once for all b: n(n + b)/(2b) rows a pass instead of n(n + 1)/2. Bytes in all (the",
        f"`model` devices share them), and minutes at an assumed {gbps} GB/s host link, for",
        "300M parameters, n = 200, one pass:",
        "",
        f"| block | basis dtype | rows read | bytes moved | minutes at {gbps} GB/s |",
        "| --- | --- | --- | --- | --- |",
    ]
    for block in (1, 16, 64):
        for dtype, itemsize in dtypes:
            rows = rows_read(200, block)
            moved = rows * 300_000_000 * itemsize
            lines.append(
                f"| {block} | {dtype} | {rows:,} | {moved / 1e12:,.2f} TB | "
                f"{moved / (gbps * 1e9) / 60:,.1f} |"
            )
    lines += [
        "",
        "## Measured against computed (4 simulated CPU devices)",
        "",
        "Largest per-device bytes of each array's shards after a real fit (a tanh MLP; the",
        "eigenvectors are `keep` combinations of the basis rows).",
        "",
        "| p | n | keep | mesh (data x model) | basis dtype | basis measured | basis computed |"
        " eigenvectors measured | eigenvectors computed | params measured | params computed |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for m in measured["arrays"]:
        itemsize = dict(dtypes)[m["dtype"]]
        c = computed(m["p"], m["n"], m["keep"], m["model"], itemsize=itemsize)
        lines.append(
            f"| {m['p']:,} | {m['n']} | {m['keep']} | {m['data']} x {m['model']} | "
            f"{m['dtype']} | {m['basis']:,} | {c['basis']:,} | {m['eigvecs']:,} | "
            f"{c['eigvecs']:,} | {m['params']:,} | {c['params']:,} |"
        )
    lines += [
        "",
        "Host traffic of host-memory fits (float32), counted by the fit",
        "(`Krylov.host_bytes_read`, all devices together) against `rows_read` × the padded",
        "row's bytes:",
        "",
        "| p | n | model devices | block | bytes read, measured | bytes read, computed |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for t in measured["traffic"]:
        computed_bytes = rows_read(t["n"], t["block"]) * 4 * padded(t["p"], t["model"])
        lines.append(
            f"| {t['p']:,} | {t['n']} | {t['model']} | {t['block']} | {t['read']:,} | "
            f"{computed_bytes:,} |"
        )
    lines += [
        "",
        "One curvature product (a 1000-1000-8 tanh MLP, p = 1,008,000, a batch of 64), as",
        "XLA compiles it for each device (`Compiled.memory_analysis()`): bytes of its",
        "arguments (parameters, tangent, batch share), its result and its temporaries. Split,",
        "the resident arguments and the result fall as 1/model, and the temporaries are the",
        "parameters and the tangent gathered whole (2 × 4,032,000 bytes), which the product",
        "holds while it runs: XLA gathers them at once, not layer by layer.",
        "",
        "| mesh (data x model) | parameters | arguments | result | temporaries | total |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for m in measured["products"]:
        total = m["arguments"] + m["result"] + m["temporaries"]
        lines.append(
            f"| {m['data']} x {m['model']} | {'split' if m['split'] else 'replicated'} | "
            f"{m['arguments']:,} | {m['result']:,} | {m['temporaries']:,} | {total:,} |"
        )
    out = ROOT / "results" / "memory_plan.md"
    out.write_text("\n".join(lines) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main()

"""Tiny float64 problems with exact references, shared by the influence tests."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ifscale.influence.task import Task


def mlp_loss(params, batch):
    """Per-example cross-entropy of a 2-layer tanh MLP: smooth, so H is well defined."""
    x, y = batch
    h = jnp.tanh(x @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"])
    logits = h @ params["Dense_1"]["kernel"] + params["Dense_1"]["bias"]
    logp = jax.nn.log_softmax(logits)
    return -jnp.take_along_axis(logp, y[:, None], axis=1)[:, 0]


def mlp_minus_margin(params, batch):
    """Minus the label's log-odds log p/(1 − p) of the same MLP: TRAK's output (negated)."""
    x, y = batch
    h = jnp.tanh(x @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"])
    logits = h @ params["Dense_1"]["kernel"] + params["Dense_1"]["bias"]
    label = jnp.take_along_axis(logits, y[:, None], axis=1)[:, 0]
    others = jnp.where(jax.nn.one_hot(y, logits.shape[-1], dtype=bool), -jnp.inf, logits)
    return jax.nn.logsumexp(others, axis=-1) - label


def mlp_problem(n=48, d=4, hidden=5, classes=3, seed=0):
    """(task, params, data) with 43 parameters; float64 (call inside jax.enable_x64)."""
    rng = np.random.default_rng(seed)
    params = {
        "Dense_0": {
            "kernel": jnp.asarray(rng.normal(size=(d, hidden)) * 0.8),
            "bias": jnp.asarray(rng.normal(size=hidden) * 0.1),
        },
        "Dense_1": {
            "kernel": jnp.asarray(rng.normal(size=(hidden, classes)) * 0.8),
            "bias": jnp.asarray(rng.normal(size=classes) * 0.1),
        },
    }
    x = rng.normal(size=(n, d))
    y = rng.integers(0, classes, size=n)
    return Task(mlp_loss, l2=0.05, output=Task(mlp_minus_margin)), params, (x, y)


def logistic_loss(params, batch):
    x, y = batch  # y in {0, 1}
    z = x @ params["w"] + params["b"]
    return jnp.logaddexp(0.0, z) - y * z


def logistic_problem(n=200, d=8, seed=0, l2=0.01):
    """A convex, L2-regularised logistic regression fitted to its optimum by Newton."""
    rng = np.random.default_rng(seed)
    w_true = rng.normal(size=d)
    x = rng.normal(size=(n, d))
    y = (rng.random(n) < 1 / (1 + np.exp(-x @ w_true))).astype(np.float64)
    task = Task(logistic_loss, l2=l2)
    params = newton_fit(task, x, y, np.ones(n))
    return task, params, (x, y)


def newton_fit(task, x, y, weights, iters=30):
    """argmin of Σ w_i L_i / n + l2/2 ||θ||² (θ = w and b), by Newton's method."""
    theta = _newton(task, jnp.asarray(x), jnp.asarray(y), jnp.asarray(weights), iters)
    d = x.shape[1]
    return {"w": theta[:d], "b": theta[d]}


@functools.partial(jax.jit, static_argnames=("task", "iters"))
def _newton(task, x, y, weights, iters):
    d = x.shape[1]

    def objective(theta):
        params = {"w": theta[:d], "b": theta[d]}
        reg = 0.5 * task.l2 * jnp.vdot(theta, theta)
        return jnp.sum(weights * task.loss(params, (x, y))) / len(y) + reg

    def step(_, theta):
        return theta - jnp.linalg.solve(jax.hessian(objective)(theta), jax.grad(objective)(theta))

    return jax.lax.fori_loop(0, iters, step, jnp.zeros(d + 1, x.dtype))


def split(data, index):
    return jax.tree_util.tree_map(lambda a: np.asarray(a)[index], data)

"""An encoder-decoder Transformer for translation (the paper's WMT German→English model,
at sizes a CPU can train).

Pre-layer-norm blocks, sinusoidal positions, one embedding table shared by the source, the
target and the output projection (the vocabulary is a joint SentencePiece model of both
languages). Token id 0 is padding; the decoder's input is the target shifted right behind
`bos_id`. Parameters are named so that subsets are path prefixes:
`encoder/layers_{i}`, `decoder/layers_{i}`, `embed`, `encoder/norm`, `decoder/norm`.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ifscale.data.text import BOS_ID, EOS_ID, PAD_ID


def sinusoids(length: int, width: int) -> np.ndarray:
    """[length, width] sinusoidal position encodings (Vaswani et al., 2017)."""
    position = np.arange(length)[:, None]
    scale = np.exp(-np.log(10_000.0) * np.arange(0, width, 2) / width)
    table = np.zeros((length, width), np.float32)
    table[:, 0::2] = np.sin(position * scale)
    table[:, 1::2] = np.cos(position * scale[: width // 2])
    return table


class FeedForward(nn.Module):
    width: int
    hidden: int
    dropout: float

    @nn.compact
    def __call__(self, x, train: bool):
        h = nn.relu(nn.Dense(self.hidden, name="hidden")(x))
        h = nn.Dropout(self.dropout)(h, deterministic=not train)
        return nn.Dense(self.width, name="out")(h)


class EncoderLayer(nn.Module):
    width: int
    heads: int
    hidden: int
    dropout: float

    @nn.compact
    def __call__(self, x, mask, train: bool):
        drop = functools.partial(nn.Dropout(self.dropout), deterministic=not train)
        h = nn.LayerNorm(name="norm_attention")(x)
        h = nn.MultiHeadDotProductAttention(self.heads, name="attention")(h, h, mask=mask)
        x = x + drop(h)
        h = nn.LayerNorm(name="norm_mlp")(x)
        return x + drop(FeedForward(self.width, self.hidden, self.dropout, name="mlp")(h, train))


class DecoderLayer(nn.Module):
    width: int
    heads: int
    hidden: int
    dropout: float

    @nn.compact
    def __call__(self, y, memory, self_mask, cross_mask, train: bool):
        drop = functools.partial(nn.Dropout(self.dropout), deterministic=not train)
        h = nn.LayerNorm(name="norm_self_attention")(y)
        h = nn.MultiHeadDotProductAttention(self.heads, name="self_attention")(h, h, mask=self_mask)
        y = y + drop(h)
        h = nn.LayerNorm(name="norm_cross_attention")(y)
        h = nn.MultiHeadDotProductAttention(self.heads, name="cross_attention")(
            h, memory, mask=cross_mask
        )
        y = y + drop(h)
        h = nn.LayerNorm(name="norm_mlp")(y)
        return y + drop(FeedForward(self.width, self.hidden, self.dropout, name="mlp")(h, train))


class Encoder(nn.Module):
    layers: int
    width: int
    heads: int
    hidden: int
    dropout: float

    @nn.compact
    def __call__(self, x, mask, train: bool):
        for i in range(self.layers):
            x = EncoderLayer(self.width, self.heads, self.hidden, self.dropout, name=f"layers_{i}")(
                x, mask, train
            )
        return nn.LayerNorm(name="norm")(x)


class Decoder(nn.Module):
    layers: int
    width: int
    heads: int
    hidden: int
    dropout: float

    @nn.compact
    def __call__(self, y, memory, self_mask, cross_mask, train: bool):
        for i in range(self.layers):
            y = DecoderLayer(self.width, self.heads, self.hidden, self.dropout, name=f"layers_{i}")(
                y, memory, self_mask, cross_mask, train
            )
        return nn.LayerNorm(name="norm")(y)


class Transformer(nn.Module):
    """Encoder-decoder Transformer: (source ids [b, S], target ids [b, T]) -> logits
    [b, T, vocab] of each target token given the source and the target tokens before it.

    Attributes:
      vocab_size: size of the joint vocabulary (ids 0 = pad, 2 = bos, 3 = eos).
      width: model width d; heads: attention heads; hidden: feed-forward width.
      encoder_layers, decoder_layers: block counts.
      dropout: dropout rate while training (inactive when `train=False`, as for influence).
      max_length: longest sequence the position table covers.
    """

    vocab_size: int
    width: int = 64
    heads: int = 4
    hidden: int = 256
    encoder_layers: int = 2
    decoder_layers: int = 2
    dropout: float = 0.1
    max_length: int = 256

    def setup(self):
        self.embed = nn.Embed(
            self.vocab_size,
            self.width,
            embedding_init=nn.initializers.normal(stddev=self.width**-0.5),
        )
        args = (self.width, self.heads, self.hidden, self.dropout)
        self.encoder = Encoder(self.encoder_layers, *args)
        self.decoder = Decoder(self.decoder_layers, *args)
        self.dropout_layer = nn.Dropout(self.dropout)

    def _embed(self, ids, train: bool):
        x = self.embed(ids) * np.sqrt(self.width)
        x = x + sinusoids(self.max_length, self.width)[: ids.shape[1]]
        return self.dropout_layer(x, deterministic=not train)

    def encode(self, source, train: bool = False):
        """[b, S, d] encoder states of the source ids."""
        mask = nn.make_attention_mask(source != PAD_ID, source != PAD_ID)
        return self.encoder(self._embed(source, train), mask, train)

    def decode(self, memory, source, decoder_input, train: bool = False):
        """[b, T, vocab] logits of the next token at each decoder-input position."""
        self_mask = nn.combine_masks(
            nn.make_attention_mask(decoder_input != PAD_ID, decoder_input != PAD_ID),
            nn.make_causal_mask(decoder_input),
        )
        # The first decoder input is BOS (never padding), so every query row attends to
        # something; padded query rows produce logits that the loss masks out.
        cross_mask = nn.make_attention_mask(decoder_input != PAD_ID, source != PAD_ID)
        y = self.decoder(self._embed(decoder_input, train), memory, self_mask, cross_mask, train)
        return self.embed.attend(y)

    def __call__(self, source, target, train: bool = False):
        return self.decode(self.encode(source, train), source, shift_right(target), train)


def shift_right(target: jnp.ndarray) -> jnp.ndarray:
    """The decoder's input: BOS, then the target without its last position."""
    bos = jnp.full((target.shape[0], 1), BOS_ID, target.dtype)
    return jnp.concatenate([bos, target[:, :-1]], axis=1)


def token_losses(logits: jnp.ndarray, target: jnp.ndarray) -> jnp.ndarray:
    """[b, T] cross-entropy of each target token, 0 at padding; in float32 at least (bfloat16
    logits widened), in float64 for float64 logits (a float32 cast there would round away
    the last bits that the float64 reference checks compare)."""
    wide = jnp.promote_types(logits.dtype, jnp.float32)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(wide), target)
    return ce * (target != PAD_ID)


def pair_losses(
    logits: jnp.ndarray, target: jnp.ndarray, sequence_loss: str = "sum"
) -> jnp.ndarray:
    """[b] cross-entropy of each target sentence (padding masked): the per-example loss
    whose self-influence is scored; `sequence_loss` "sum" over its tokens, or their
    "mean"."""
    total = token_losses(logits, target).sum(axis=1)
    if sequence_loss == "mean":
        return total / jnp.maximum((target != PAD_ID).sum(axis=1), 1)
    return total


@functools.partial(jax.jit, static_argnames=("model", "max_length"))
def greedy_decode(model: Transformer, params, source: jnp.ndarray, max_length: int):
    """[b, max_length] greedy translations of `source` (EOS, then padding, ends each)."""
    memory = model.apply({"params": params}, source, method=Transformer.encode)
    b = source.shape[0]
    out = jnp.zeros((b, max_length), jnp.int32)

    def step(t, state):
        out, done = state
        logits = model.apply(
            {"params": params}, memory, source, shift_right(out), method=Transformer.decode
        )
        token = jnp.argmax(logits[:, t], axis=-1).astype(jnp.int32)
        token = jnp.where(done, PAD_ID, token)
        out = out.at[:, t].set(token)
        return out, done | (token == EOS_ID)

    out, _ = jax.lax.fori_loop(0, max_length, step, (out, jnp.zeros((b,), bool)))
    return out


SUBSET_NAMES = ("all", "last3_decoder")


def named_subsets(model: Transformer) -> dict[str, tuple[str, ...] | None]:
    """Parameter subsets by name (`SUBSET_NAMES`, the paper's Table 2 rows), as path
    prefixes."""
    last = range(max(model.decoder_layers - 3, 0), model.decoder_layers)
    return {
        "all": None,
        "last3_decoder": tuple(f"decoder/layers_{i}" for i in last),
    }

"""The BERT encoder's forward pass in numpy float32, for inference only (no torch).

Mirrors Hugging Face's `BertModel` with absolute positions, one token type (0), post-layer
LayerNorm and the exact (erf) GELU. The pooler is not used: sentence-transformers pools
the last hidden state itself.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from safetensors.numpy import load_file

Floats = npt.NDArray[np.float32]
Ints = npt.NDArray[np.int64]

# Rational approximation of erf on [-4, 4] (Eigen's `generic_fast_erf_float`, as in XLA):
# max abs error 6.5e-8 in exact arithmetic, 4.2e-7 evaluated in float32 (a few ulps near
# ±1). Outside [-4, 4] erf is ±1 to float32 precision.
_ERF_NUM = tuple(
    np.float32(c)
    for c in (
        -2.72614225801306e-10,
        2.77068142495902e-08,
        -2.10102402082508e-06,
        -5.69250639462346e-05,
        -7.34990630326855e-04,
        -2.95459980854025e-03,
        -1.60960333262415e-02,
    )
)
_ERF_DEN = tuple(
    np.float32(c)
    for c in (
        -1.45660718464996e-05,
        -2.13374055278905e-04,
        -1.68282697438203e-03,
        -7.37332916720468e-03,
        -1.42647390514189e-02,
    )
)
_ERF_LOW, _ERF_HIGH = np.float32(-4.0), np.float32(4.0)
_INV_SQRT2 = np.float32(1.0 / math.sqrt(2.0))
# Floats per GELU step: its four temporaries (4 × 128 KiB) stay in L2 cache.
_GELU_CHUNK = 32_768
# Attention scores computed per step, in floats (256 KiB): the softmax's passes stay in L2.
_ATTENTION_CHUNK = 65_536
# Added to the scores of padding keys: exp() of it underflows to exactly 0.
_MASKED = np.float32(-1e9)


def _erf_into(z: Floats, out: Floats, z2: Floats, den: Floats) -> None:
    """out = erf(z) for z already clipped to [-4, 4]; z2 and den are scratch of z's size."""
    np.multiply(z, z, out=z2)
    np.multiply(z2, _ERF_NUM[0], out=out)
    for coef in _ERF_NUM[1:-1]:
        out += coef
        out *= z2
    out += _ERF_NUM[-1]
    out *= z
    np.multiply(z2, _ERF_DEN[0], out=den)
    for coef in _ERF_DEN[1:-1]:
        den += coef
        den *= z2
    den += _ERF_DEN[-1]
    out /= den


def erf(x: Floats) -> Floats:
    """erf(x), elementwise, in float32 (see _ERF_NUM for the accuracy)."""
    z = np.clip(x, _ERF_LOW, _ERF_HIGH).astype(np.float32)
    out = np.empty_like(z)
    _erf_into(z, out, np.empty_like(z), np.empty_like(z))
    return out


def gelu_(x: Floats) -> Floats:
    """BERT's exact GELU, 0.5·x·(1 + erf(x/√2)), computed in place into x (C-contiguous).

    Works through x in chunks so the ~25 elementwise passes stay in cache: on a whole
    (tokens, 1536) activation they are memory-bound and cost as much as the matmuls.
    """
    if not x.flags.c_contiguous:
        raise ValueError("gelu_ needs a C-contiguous array")
    flat = x.reshape(-1)
    size = min(flat.size, _GELU_CHUNK)
    if size == 0:
        return x
    z, cdf, z2, den = (np.empty(size, dtype=np.float32) for _ in range(4))
    for start in range(0, flat.size, size):
        seg = flat[start : start + size]
        n = seg.size
        np.multiply(seg, _INV_SQRT2, out=z[:n])
        np.clip(z[:n], _ERF_LOW, _ERF_HIGH, out=z[:n])
        _erf_into(z[:n], cdf[:n], z2[:n], den[:n])
        cdf[:n] += np.float32(1.0)
        cdf[:n] *= np.float32(0.5)
        seg *= cdf[:n]
    return x


def layer_norm(x: Floats, weight: Floats, bias: Floats, eps: float) -> Floats:
    """LayerNorm over the last axis (biased variance, as torch computes it)."""
    mean = x.mean(axis=-1, keepdims=True)
    centred = x - mean
    var = np.square(centred).mean(axis=-1, keepdims=True)
    centred /= np.sqrt(var + np.float32(eps))
    centred *= weight
    centred += bias
    return centred


@dataclass(frozen=True)
class Layer:
    """One transformer layer's weights, pre-transposed for `x @ w` and with Q/K/V fused."""

    qkv_w: Floats  # (hidden, 3·hidden); the query part pre-scaled by 1/√head_dim
    qkv_b: Floats
    attn_out_w: Floats
    attn_out_b: Floats
    attn_ln_w: Floats
    attn_ln_b: Floats
    inter_w: Floats
    inter_b: Floats
    out_w: Floats
    out_b: Floats
    out_ln_w: Floats
    out_ln_b: Floats


@dataclass(frozen=True)
class BertEncoder:
    """BERT's embeddings and encoder layers; `forward` gives the last hidden state."""

    word: Floats
    position: Floats
    token_type0: Floats
    emb_ln_w: Floats
    emb_ln_b: Floats
    layers: tuple[Layer, ...]
    heads: int
    eps: float

    @property
    def hidden(self) -> int:
        return int(self.word.shape[1])

    @classmethod
    def load(cls, model_dir: Path) -> BertEncoder:
        """Read config.json and model.safetensors from a Hugging Face BERT checkpoint."""
        config: dict[str, Any] = json.loads((model_dir / "config.json").read_text())
        if config.get("hidden_act") != "gelu" or config.get("model_type") != "bert":
            raise ValueError(f"{model_dir}: not a BERT model with exact GELU")
        if config.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"{model_dir}: only absolute position embeddings are supported")
        tensors = load_file(str(model_dir / "model.safetensors"))

        def get(name: str) -> Floats:
            # Strip a "bert." prefix some checkpoints carry.
            value = tensors.get(name, tensors.get(f"bert.{name}"))
            if value is None:
                raise ValueError(f"{model_dir}: missing tensor {name}")
            return np.ascontiguousarray(value, dtype=np.float32)

        heads, hidden = int(config["num_attention_heads"]), int(config["hidden_size"])
        scale = np.float32(1.0 / math.sqrt(hidden // heads))
        layers = []
        for i in range(int(config["num_hidden_layers"])):
            p = f"encoder.layer.{i}."
            att = p + "attention."
            q_w, q_b = get(att + "self.query.weight") * scale, get(att + "self.query.bias") * scale
            qkv_w = np.concatenate(
                [q_w, get(att + "self.key.weight"), get(att + "self.value.weight")]
            )
            qkv_b = np.concatenate([q_b, get(att + "self.key.bias"), get(att + "self.value.bias")])
            layers.append(
                Layer(
                    qkv_w=np.ascontiguousarray(qkv_w.T),
                    qkv_b=qkv_b,
                    attn_out_w=np.ascontiguousarray(get(att + "output.dense.weight").T),
                    attn_out_b=get(att + "output.dense.bias"),
                    attn_ln_w=get(att + "output.LayerNorm.weight"),
                    attn_ln_b=get(att + "output.LayerNorm.bias"),
                    inter_w=np.ascontiguousarray(get(p + "intermediate.dense.weight").T),
                    inter_b=get(p + "intermediate.dense.bias"),
                    out_w=np.ascontiguousarray(get(p + "output.dense.weight").T),
                    out_b=get(p + "output.dense.bias"),
                    out_ln_w=get(p + "output.LayerNorm.weight"),
                    out_ln_b=get(p + "output.LayerNorm.bias"),
                )
            )
        return cls(
            word=get("embeddings.word_embeddings.weight"),
            position=get("embeddings.position_embeddings.weight"),
            token_type0=get("embeddings.token_type_embeddings.weight")[0],
            emb_ln_w=get("embeddings.LayerNorm.weight"),
            emb_ln_b=get("embeddings.LayerNorm.bias"),
            layers=tuple(layers),
            heads=heads,
            eps=float(config["layer_norm_eps"]),
        )

    def forward(self, ids: Ints, mask: npt.NDArray[np.bool_]) -> Floats:
        """Last hidden state (batch, seq, hidden) for token ids and their attention mask."""
        batch, seq = ids.shape
        if seq > self.position.shape[0]:
            raise ValueError(f"sequence of {seq} tokens exceeds {self.position.shape[0]}")
        hidden = self.hidden
        x = self.word[ids]
        x += self.position[:seq] + self.token_type0
        x = layer_norm(x, self.emb_ln_w, self.emb_ln_b, self.eps).reshape(batch * seq, hidden)
        # Padding keys get -1e9 before the softmax; (batch, 1, 1, seq) broadcasts over heads.
        key_bias = np.where(mask, np.float32(0.0), _MASKED)[:, None, None, :]
        for layer in self.layers:
            x = self._layer(layer, x, key_bias, batch, seq)
        return x.reshape(batch, seq, hidden)

    def _layer(self, layer: Layer, x: Floats, key_bias: Floats, batch: int, seq: int) -> Floats:
        hidden, heads = self.hidden, self.heads
        qkv = x @ layer.qkv_w
        qkv += layer.qkv_b
        # (batch·seq, 3·hidden) -> 3 × (batch, heads, seq, head_dim)
        q, k, v = qkv.reshape(batch, seq, 3, heads, hidden // heads).transpose(2, 0, 3, 1, 4)
        context = np.empty((batch, seq, heads, hidden // heads), dtype=np.float32)
        # A few sequences at a time, so their (heads, seq, seq) scores stay in cache.
        step = max(1, _ATTENTION_CHUNK // (heads * seq * seq))
        for start in range(0, batch, step):
            part = slice(start, start + step)
            scores = q[part] @ k[part].transpose(0, 1, 3, 2)
            scores += key_bias[part]
            scores -= scores.max(axis=-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(axis=-1, keepdims=True)
            context[part] = (scores @ v[part]).transpose(0, 2, 1, 3)
        attn = context.reshape(batch * seq, hidden) @ layer.attn_out_w
        attn += layer.attn_out_b
        attn += x
        x = layer_norm(attn, layer.attn_ln_w, layer.attn_ln_b, self.eps)
        inter = x @ layer.inter_w
        inter += layer.inter_b
        out = gelu_(inter) @ layer.out_w
        out += layer.out_b
        out += x
        return layer_norm(out, layer.out_ln_w, layer.out_ln_b, self.eps)

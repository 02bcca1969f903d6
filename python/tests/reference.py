"""NumPy helpers of the package's tests: seeded weights and inputs, numpy routing and the fp64
dense reference of the layer (the FP8 recipe's two activation quantizations included)."""

import numpy as np
import ml_dtypes

BF16 = ml_dtypes.bfloat16
FP8 = ml_dtypes.float8_e4m3fn


def weights(config, seed, num_experts=None):
    """w13, w2 (and FP8 block scales) for `num_experts` experts of `config`'s shapes."""
    rng = np.random.default_rng(seed)
    e = config.num_experts if num_experts is None else num_experts
    h, i = config.hidden_size, config.intermediate_size
    if config.weight_dtype == "bf16":
        return {
            "w13": (rng.standard_normal((e, 2 * i, h)) / np.sqrt(h)).astype(BF16),
            "w2": (rng.standard_normal((e, h, i)) / np.sqrt(i)).astype(BF16),
        }
    return {
        "w13": rng.standard_normal((e, 2 * i, h)).astype(np.float32).astype(FP8),
        "w2": rng.standard_normal((e, h, i)).astype(np.float32).astype(FP8),
        "w13_scale": rng.uniform(0.5, 1.0, (e, 2 * i // 128, h // 128)).astype(np.float32)
        / np.float32(np.sqrt(h)),
        "w2_scale": rng.uniform(0.5, 1.0, (e, h // 128, i // 128)).astype(np.float32)
        / np.float32(np.sqrt(i)),
    }


def hidden(tokens, h, seed):
    return np.random.default_rng(seed + 1).standard_normal((tokens, h)).astype(BF16)


def logits(tokens, e, seed):
    return (2.0 * np.random.default_rng(seed + 2).standard_normal((tokens, e))).astype(np.float32)


def softmax_topk(router_logits, k, renormalize=True):
    """ids [T, k] int32 (best first) and weights [T, k] f32 of softmax top-k."""
    x = router_logits.astype(np.float64)
    p = np.exp(x - x.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    ids = np.argsort(-p, axis=1, kind="stable")[:, :k]
    w = np.take_along_axis(p, ids, axis=1)
    if renormalize:
        w /= w.sum(axis=1, keepdims=True)
    return ids.astype(np.int32), w.astype(np.float32)


def random_routing(tokens, k, e, seed, skip=0.0):
    rng = np.random.default_rng(seed + 3)
    ids = np.stack([rng.permutation(e)[:k] for _ in range(tokens)]).astype(np.int32)
    ids[rng.uniform(size=ids.shape) < skip] = -1
    w = rng.uniform(0.1, 1.0, ids.shape).astype(np.float32)
    return ids, w


def _fp8_round_trip(x):
    """1x128 groups of the last axis through e4m3 with scale amax / 448, as the recipe."""
    g = x.reshape(*x.shape[:-1], -1, 128)
    amax = np.maximum(np.abs(g).max(axis=-1, keepdims=True), 1e-10)
    q = (g * (448.0 / amax)).astype(np.float32).astype(FP8).astype(np.float64)
    return (q * (amax / 448.0)).reshape(x.shape)


def _dequantize(w, scale):
    w = w.astype(np.float64)
    if scale is None:
        return w
    return w * np.repeat(np.repeat(scale.astype(np.float64), 128, axis=1), 128, axis=2)


def dense(config, w, hidden_states, ids, topk_weights, expert_map=None):
    """fp64 out [T, H] of the whole layer; ids global (mapped through expert_map when given, the
    experts of `w` then being the map's local ones) or already indexing `w`."""
    fp8 = config.weight_dtype != "bf16"
    x = hidden_states.astype(np.float64)
    if fp8:
        x = _fp8_round_trip(x)
    w13 = _dequantize(w["w13"], w.get("w13_scale"))
    w2 = _dequantize(w["w2"], w.get("w2_scale"))
    i = config.intermediate_size
    out = np.zeros((x.shape[0], config.hidden_size))
    for t in range(x.shape[0]):
        for j in range(ids.shape[1]):
            e = int(ids[t, j])
            if e >= 0 and expert_map is not None:
                e = int(expert_map[e])
            if e < 0:
                continue
            gu = w13[e] @ x[t]
            a = gu[:i] / (1.0 + np.exp(-gu[:i])) * gu[i:]
            if fp8:
                a = _fp8_round_trip(a)
            out[t] += float(topk_weights[t, j]) * (w2[e] @ a)
    return out * config.output_scale


def relative_error(actual, reference):
    a = np.asarray(actual, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        return np.inf
    return np.linalg.norm(a - reference) / np.linalg.norm(reference)


# DESIGN.md's end-to-end tolerances against the fp64 reference.
BF16_TOLERANCE = 1e-2
FP8_TOLERANCE = 3e-2


def tolerance(config):
    return BF16_TOLERANCE if config.weight_dtype == "bf16" else FP8_TOLERANCE

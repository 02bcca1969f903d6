#!/usr/bin/env python3
"""Writes the seed corpus of tests/fuzz/safetensors_fuzz.cc into tests/fuzz/corpus/.

Small files, valid and broken, each one a different path through the header parser. Run it
again after changing it; the files are committed so that the fuzzer needs no Python.
"""
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus")

SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2,
         "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


def raw(header: str, data: bytes = b"", length=None) -> bytes:
    h = header.encode()
    return struct.pack("<Q", len(h) if length is None else length) + h + data


def valid(tensors, metadata=None, pad=True) -> bytes:
    """tensors: [(name, dtype, shape)]; data is a byte ramp, offsets back to back."""
    header, offset = {}, 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape in tensors:
        n = SIZES[dtype]
        for extent in shape:
            n *= extent
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    text = json.dumps(header, separators=(",", ":"))
    if pad:
        text += " " * (-len(text) % 8)
    return raw(text, bytes(i % 251 for i in range(offset)))


SEEDS = {
    "empty_header": raw("{}"),
    "metadata_only": valid([], {"format": "pt"}),
    "one_bf16": valid([("w", "BF16", [2, 4])]),
    "every_dtype": valid([(f"t.{d}", d, [3]) for d in SIZES]),
    "scalar_and_empty": valid([("s", "F32", []), ("z", "F32", [0, 5])]),
    "fp8_block_scaled": valid([("model.layers.3.mlp.experts.0.down_proj.weight", "F8_E4M3", [4, 8]),
                               ("model.layers.3.mlp.experts.0.down_proj.weight_scale_inv", "F32", [1, 1])],
                              {"format": "pt"}),
    "unpadded_odd_offsets": valid([("b", "U8", [3]), ("f", "F32", [2])], pad=False),
    "rank4": valid([("x", "F16", [1, 2, 1, 2])]),
    "truncated_length": b"\x10\x00\x00",
    "length_beyond_file": raw("{}", length=1 << 40),
    "malformed_json": raw('{"w": {"dtype": "F32", "shape": [1], '),
    "overlap": raw('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
                   '"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}', bytes(12)),
    "out_of_range": raw('{"w":{"dtype":"BF16","shape":[4],"data_offsets":[100,108]}}', bytes(8)),
    "size_mismatch": raw('{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}', bytes(8)),
    "shape_overflow": raw('{"w":{"dtype":"F64","shape":[4294967296,4294967296],'
                          '"data_offsets":[0,0]}}'),
    "nested_shape": raw('{"w":{"dtype":"F32","shape":' + "[" * 64 + "]" * 64 +
                        ',"data_offsets":[0,0]}}'),
    "unknown_dtype": raw('{"w":{"dtype":"F4","shape":[2],"data_offsets":[0,1]}}', bytes(1)),
}


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, content in SEEDS.items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(content)


if __name__ == "__main__":
    main()

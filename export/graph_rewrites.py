"""Graph rewrites that make the exported networks fast on a CPU; pure functions on ONNX models.

- conv_to_matmul: the convolutional feature encoders of HuBERT and wav2vec2 (seven strided 1-D
  convolutions over up to 480,000 samples) become channels-last MatMuls over strided windows.
  ONNX Runtime's CPU Conv runs well below its GEMM rate on them and surrounds each with NCL<->NLC
  transposes for the layer norms; as MatMuls they run at GEMM speed, the transposes cancel, and
  int8 quantization reaches them too (ONNX Runtime's dynamic ConvInteger is slow on CPU, so
  convolutions are never quantized).
- time_sums_to_matmul: sums over time of a [B, C, L] tensor (wav2vec2's masked GroupNorm
  statistics) become MatMuls with a ones column, which stay fast in the channels-last layout.
- unshare_weights: a weight read by several MatMuls gets a copy per MatMul, so a quantizer that
  handles each initialiser once reaches them all (the fusion head shares q/k/v across directions).
Each returns how many places it changed; export.optimize checks every rewritten network against
the exported one. Measured effects: bench/results (make bench).
"""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


class _Builder:
    """Adds nodes and initialisers with unique names."""

    def __init__(self, graph, prefix: str):
        self.graph, self.prefix, self.count = graph, prefix, 0
        self.nodes = []

    def name(self, what: str) -> str:
        self.count += 1
        return f"{self.prefix}/{what}_{self.count}"

    def const(self, value, what="const") -> str:
        name = self.name(what)
        self.graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs: list, what: str = None, **attributes) -> str:
        output = self.name(what or op)
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attributes))
        return output


def _attribute(node, name, default=None):
    for attribute in node.attribute:
        if attribute.name == name:
            return helper.get_attribute_value(attribute)
    return default


def _constants(graph) -> dict:
    """Initialisers and Constant nodes' tensors by name, also under the names of Identity nodes
    that copy them (the exporter deduplicates equal tensors that way)."""
    constants = {i.name: i for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Identity" and node.input[0] in constants:
            constants[node.output[0]] = constants[node.input[0]]
        elif node.op_type == "Constant" and _attribute(node, "value") is not None:
            constants[node.output[0]] = _attribute(node, "value")
    return constants


def _rewritable(node, constants) -> bool:
    if node.op_type != "Conv" or node.input[1] not in constants:
        return False
    if len(node.input) > 2 and node.input[2] and node.input[2] not in constants:
        return False
    weight = constants[node.input[1]]
    return (len(weight.dims) == 3 and _attribute(node, "group", 1) == 1
            and list(_attribute(node, "dilations", [1])) == [1] and not any(_attribute(node, "pads", [0, 0])))


def _conv_as_matmul(b: _Builder, node, weight: np.ndarray, bias: np.ndarray | None, channels_first: bool) -> list:
    """The nodes computing Conv(x [B, C, L]) as Transpose + strided windows + MatMul (+ Transpose).

    The windows are [B, L', k*C]. channels_first: the result is wanted as [B, Cout, L'] by a
    consumer that is not a transpose (wav2vec2's GroupNorm layer), and transposing the windows is
    cheaper than transposing the result (k*C <= Cout), so W^T @ windows^T gives it directly.
    Otherwise windows @ W, then a Transpose that cancels against the consumer's (HuBERT's
    LayerNorm layers transpose to channels-last and back)."""
    out_channels, channels, kernel = weight.shape
    stride = int(_attribute(node, "strides", [1])[0])
    x = b.node("Transpose", [node.input[0]], "to_nlc", perm=[0, 2, 1])  # [B, L, C]
    length = b.node("Gather", [b.node("Shape", [x]), b.const(np.int64(1))], "length", axis=0)
    frames = b.node("Add", [b.node("Div", [b.node("Sub", [length, b.const(np.int64(kernel))]),
                                          b.const(np.int64(stride))]), b.const(np.int64(1))], "frames")
    frames_1d = b.node("Unsqueeze", [frames, b.const(np.array([0], dtype=np.int64))])
    span = b.node("Mul", [frames_1d, b.const(np.array([stride], dtype=np.int64))], "span")
    axis = b.const(np.array([1], dtype=np.int64))
    pieces, widths, tap = [], [], 0
    while tap < kernel:  # taps [tap, tap + stride) as one contiguous window, or single strided taps
        start = b.const(np.array([tap], dtype=np.int64))
        end = b.node("Add", [span, start])
        if tap + stride <= kernel:
            window = b.node("Slice", [x, start, end, axis])
            pieces.append(b.node("Reshape", [window, b.const(np.array([0, -1, stride * channels], dtype=np.int64))]))
            widths.append(stride * channels)
            tap += stride
        else:
            pieces.append(b.node("Slice", [x, start, end, axis, b.const(np.array([stride], dtype=np.int64))]))
            widths.append(channels)
            tap += 1
    # windows[..., j*C + c] = x[s*t + j, c]  ->  weight [k*C, Cout]
    matrix = weight.transpose(2, 1, 0).reshape(kernel * channels, out_channels)
    if channels_first:
        columns = pieces[0] if len(pieces) == 1 else b.node("Concat", pieces, "columns", axis=2)
        windows = b.node("Transpose", [columns], "windows_t", perm=[0, 2, 1])  # [B, k*C, L']
        y = b.node("MatMul", [b.const(np.ascontiguousarray(matrix.T), "weight_t"), windows])
        if bias is None:
            b.nodes[-1].output[0] = node.output[0]
        else:
            b.nodes.append(helper.make_node("Add", [y, b.const(bias.astype(np.float32)[:, None], "bias")],
                                            [node.output[0]], name=b.name("bias")))
        return b.nodes
    if channels < 64 or len(pieces) == 1:  # narrow windows: one GEMM over their concatenation
        columns = pieces[0] if len(pieces) == 1 else b.node("Concat", pieces, "columns", axis=2)
        y = b.node("MatMul", [columns, b.const(np.ascontiguousarray(matrix), "weight")])
    else:  # wide ones: a GEMM per window, summed (no copy into one wide matrix)
        partial, row = [], 0
        for piece_width in widths:
            rows = matrix[row: row + piece_width]
            partial.append(b.node("MatMul", [pieces[len(partial)], b.const(np.ascontiguousarray(rows), "weight")]))
            row += piece_width
        y = partial[0]
        for other in partial[1:]:
            y = b.node("Add", [y, other])
    if bias is not None:
        y = b.node("Add", [y, b.const(bias.astype(np.float32), "bias")])
    b.nodes.append(helper.make_node("Transpose", [y], [node.output[0]], name=b.name("to_ncl"), perm=[0, 2, 1]))
    return b.nodes


def conv_to_matmul(model: onnx.ModelProto) -> int:
    """Rewrite every ungrouped, unpadded 1-D Conv with constant weights; returns how many."""
    graph = model.graph
    constants = _constants(graph)
    consumers = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    rewritten, nodes = 0, []
    for node in list(graph.node):
        if not _rewritable(node, constants):
            nodes.append(node)
            continue
        weight = numpy_helper.to_array(constants[node.input[1]])
        bias = numpy_helper.to_array(constants[node.input[2]]) if len(node.input) > 2 and node.input[2] else None
        transposed_by_consumer = all(c.op_type == "Transpose" and list(_attribute(c, "perm", [])) == [0, 2, 1]
                                     for c in consumers.get(node.output[0], []))
        channels_first = not transposed_by_consumer and weight.shape[1] * weight.shape[2] <= weight.shape[0]
        nodes.extend(_conv_as_matmul(_Builder(graph, f"{node.name or 'conv'}/as_matmul"), node, weight, bias,
                                     channels_first))
        rewritten += 1
    del graph.node[:]
    graph.node.extend(nodes)
    _drop_unused(graph)
    return rewritten


def time_sums_to_matmul(model: onnx.ModelProto) -> int:
    """ReduceSum over the last axis of a rank-3 float tensor (wav2vec2's masked GroupNorm statistics
    over time, [B, C, L]) -> MatMul with a ones column. After conv_to_matmul, ONNX Runtime's
    transpose optimizer moves those sums onto the channels-last tensor, where a ReduceSum over a
    middle axis is many times slower than the one GEMM it becomes here. Run it before
    conv_to_matmul: it needs the shape inference of the exported graph."""
    graph = model.graph
    inferred = onnx.shape_inference.infer_shapes(_without_weights(model), strict_mode=False)
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in list(inferred.graph.value_info) + list(graph.input)
             if v.type.tensor_type.elem_type == TensorProto.FLOAT and v.type.tensor_type.HasField("shape")}
    constants = _constants(graph)
    rewritten, nodes = 0, []
    for node in list(graph.node):
        axes = numpy_helper.to_array(constants[node.input[1]]).tolist() if (
            node.op_type == "ReduceSum" and len(node.input) > 1 and node.input[1] in constants) else None
        rank = ranks.get(node.input[0]) if node.input else None
        if axes is None or rank != 3 or [a % 3 for a in axes] != [2] or _attribute(node, "keepdims", 1) != 1:
            nodes.append(node)
            continue
        b = _Builder(graph, f"{node.name or 'sum'}/as_matmul")
        length = b.node("Gather", [b.node("Shape", [node.input[0]]), b.const(np.array([2], dtype=np.int64))],
                        "length", axis=0)
        shape = b.node("Concat", [length, b.const(np.array([1], dtype=np.int64))], "shape", axis=0)
        ones = b.node("ConstantOfShape", [shape], "ones", value=numpy_helper.from_array(np.ones(1, np.float32)))
        b.nodes.append(helper.make_node("MatMul", [node.input[0], ones], [node.output[0]], name=b.name("MatMul")))
        nodes.extend(b.nodes)
        rewritten += 1
    del graph.node[:]
    graph.node.extend(nodes)
    _drop_unused(graph)
    return rewritten


SHAPE_ONLY_ELEMENTS = 1024
"""Initialisers larger than this are weights: shape inference gets only their type and shape."""


def _without_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy for shape inference, with each weight replaced by a graph input of its type and shape
    (a full copy would double the model in memory; small initialisers, such as shapes, are kept)."""
    graph = model.graph
    inputs = {i.name for i in graph.input}
    weights = [i for i in graph.initializer if np.prod(i.dims) > SHAPE_ONLY_ELEMENTS and i.name not in inputs]
    skeleton = helper.make_graph(
        list(graph.node), graph.name,
        list(graph.input) + [helper.make_tensor_value_info(w.name, w.data_type, list(w.dims)) for w in weights],
        list(graph.output), [i for i in graph.initializer if np.prod(i.dims) <= SHAPE_ONLY_ELEMENTS])
    return helper.make_model(skeleton, opset_imports=list(model.opset_import), ir_version=model.ir_version)


def _drop_unused(graph) -> None:
    """Remove Identity and Constant nodes and initialisers that nothing reads any more (in place:
    rebuilding the list would copy every weight)."""
    while True:
        read = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
        dead = [n for n in graph.node if n.op_type in ("Identity", "Constant") and n.output[0] not in read]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    for index in reversed(range(len(graph.initializer))):
        if graph.initializer[index].name not in read:
            del graph.initializer[index]


def unshare_weights(model: onnx.ModelProto) -> int:
    """Give each MatMul its own copy of a weight that several MatMuls read (the fusion head uses
    its q/k/v projections in both attention directions, through Identity nodes): the quantizer
    quantizes only weights that are initialisers, once. Returns how many copies were made."""
    graph = model.graph
    initialisers = {i.name for i in graph.initializer}
    constants = _constants(graph)
    seen, copies = set(), 0
    for node in graph.node:
        if node.op_type != "MatMul" or len(node.input) < 2 or node.input[1] not in constants:
            continue
        name = node.input[1]
        if name in seen or name not in initialisers:
            copy = numpy_helper.to_array(constants[name])
            node.input[1] = f"{name}/copy_{copies}"
            graph.initializer.append(numpy_helper.from_array(copy, node.input[1]))
            copies += 1
        seen.add(node.input[1])
    _drop_unused(graph)
    return copies

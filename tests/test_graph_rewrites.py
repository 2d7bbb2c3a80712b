"""The CPU graph rewrites on small synthetic ONNX graphs: same outputs, and only what they claim."""

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from ser_triton.export.graph_rewrites import conv_to_matmul, time_sums_to_matmul, unshare_weights

RNG = np.random.default_rng(0)


def model_of(nodes, inputs, outputs, initialisers):
    graph = helper.make_graph(nodes, "g", inputs, outputs, [numpy_helper.from_array(v, k) for k, v in initialisers.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def run(model, **feed):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feed)


def ops(model) -> list[str]:
    return [n.op_type for n in model.graph.node]


def conv_model(channels, out_channels, kernel, stride, bias=True, then_transpose=False, **attributes):
    weight = RNG.standard_normal((out_channels, channels, kernel)).astype(np.float32)
    initialisers = {"w": weight}
    conv_inputs = ["x", "w"]
    if bias:
        initialisers["b"] = RNG.standard_normal(out_channels).astype(np.float32)
        conv_inputs.append("b")
    nodes = [helper.make_node("Conv", conv_inputs, ["c"], strides=[stride], **attributes)]
    if then_transpose:
        nodes.append(helper.make_node("Transpose", ["c"], ["y"], perm=[0, 2, 1]))
    else:
        nodes.append(helper.make_node("Relu", ["c"], ["y"]))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", channels, "L"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    return model_of(nodes, [x], [y], initialisers)


@pytest.mark.parametrize("channels, out_channels, kernel, stride, bias, then_transpose", [
    (1, 16, 10, 5, True, False),    # wav2vec2's first layer: one channel, channels-first result
    (1, 16, 10, 5, False, True),    # ... feeding a layer norm through a transpose
    (8, 16, 3, 2, True, True),      # narrow windows: one GEMM over their concatenation
    (64, 32, 3, 2, False, True),    # wide windows: a GEMM per window, summed
    (64, 32, 2, 2, True, False),    # kernel equal to stride: one window
    (4, 4, 5, 2, True, False),      # k*C > Cout: windows @ W, then a transpose back
])
def test_conv_becomes_matmuls_with_the_same_output(channels, out_channels, kernel, stride, bias, then_transpose):
    model = conv_model(channels, out_channels, kernel, stride, bias, then_transpose)
    for batch, length in ((1, 57), (3, 160)):
        x = RNG.standard_normal((batch, channels, length)).astype(np.float32)
        expected = run(model, x=x)[0]
        rewritten = model_of(list(model.graph.node), list(model.graph.input), list(model.graph.output),
                             {i.name: numpy_helper.to_array(i) for i in model.graph.initializer})
        assert conv_to_matmul(rewritten) == 1
        assert "Conv" not in ops(rewritten) and "MatMul" in ops(rewritten)
        np.testing.assert_allclose(run(rewritten, x=x)[0], expected, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("attributes", [{"group": 2}, {"pads": [1, 1]}, {"dilations": [2]}])
def test_convs_it_cannot_express_are_left_alone(attributes):
    model = conv_model(4, 4, 3, 1, **attributes)
    before = ops(model)
    assert conv_to_matmul(model) == 0
    assert ops(model) == before


def sum_model(axis: int):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 6, "L"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    node = helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=1)
    return model_of([node], [x], [y], {"axes": np.array([axis], dtype=np.int64)})


@pytest.mark.parametrize("axis", [2, -1])
def test_sums_over_time_become_a_matmul(axis):
    model = sum_model(axis)
    x = RNG.standard_normal((2, 6, 33)).astype(np.float32)
    expected = run(model, x=x)[0]
    assert time_sums_to_matmul(model) == 1
    assert "ReduceSum" not in ops(model) and "MatMul" in ops(model)
    np.testing.assert_allclose(run(model, x=x)[0], expected, atol=1e-5)


def test_sums_over_other_axes_are_left_alone():
    model = sum_model(1)
    assert time_sums_to_matmul(model) == 0 and ops(model) == ["ReduceSum"]


def test_a_shared_weight_gets_a_copy_per_matmul():
    weight = RNG.standard_normal((5, 5)).astype(np.float32)
    nodes = [helper.make_node("Identity", ["w"], ["w_alias"]),
             helper.make_node("MatMul", ["a", "w"], ["p"]),
             helper.make_node("MatMul", ["b", "w_alias"], ["q"])]
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 5]) for n in "ab"]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in "pq"]
    model = model_of(nodes, inputs, outputs, {"w": weight})
    a, b = RNG.standard_normal((2, 5)).astype(np.float32), RNG.standard_normal((2, 5)).astype(np.float32)
    expected = run(model, a=a, b=b)
    assert unshare_weights(model) == 1
    matmul_weights = [n.input[1] for n in model.graph.node if n.op_type == "MatMul"]
    initialisers = {i.name for i in model.graph.initializer}
    assert len(set(matmul_weights)) == 2 and set(matmul_weights) <= initialisers
    assert "Identity" not in ops(model)
    for got, want in zip(run(model, a=a, b=b), expected):
        np.testing.assert_array_equal(got, want)

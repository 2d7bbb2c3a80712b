"""Make the exported ONNX networks fast on a CPU: graph rewrites, fusions, int8 quantisation.

Applied by `python -m export` after each network has passed its parity check (fp32 ONNX Runtime
against PyTorch), to the files in the repository:

- time_sums_to_matmul + conv_to_matmul (fp32 and int8): the convolutional feature encoders of
  HuBERT and wav2vec2 (seven strided 1-D convolutions over up to 240,000 samples) become channels-last MatMuls over
  strided windows. ONNX Runtime's CPU Conv reaches ~55% of this CPU's fp32 GEMM rate on them and
  surrounds each with NCL<->NLC transposes for the layer norms; as MatMuls they run at GEMM speed,
  the transposes cancel, and int8 quantisation reaches them too (dynamic ConvInteger is ~5x slower
  than fp32 here, so convolutions are never quantised). wav2vec2's masked GroupNorm statistics
  (sums over time) become MatMuls too, which keeps them fast in the channels-last layout.
- transformer fusions (onnxruntime.transformers.optimizer, model_type "bert"): available, off by
  default: measured no faster here than ONNX Runtime's own fusions (see FUSE).
- int8 (`--precision int8`): dynamic quantisation (onnxruntime.quantization.quantize_dynamic) of
  the MatMuls of the three encoders, weights int8 per output channel, activations quantised per
  call; run through VNNI on this CPU; the fusion head's MatMuls too.

Every rewritten network is checked again against the unrewritten fp32 network on the export's
parity inputs (tolerance as the export's for fp32); int8 is not held to a tolerance but its drift
from fp32 is measured and reported: per-network hidden-state cosine and max |difference|, and
along the whole served chain (ASR -> greedy CTC -> BERT tokenizer -> BERT + HuBERT -> head) the
max |probability difference| and transcript agreement.
"""

import logging
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from export import specs
from export.onnx_export import ParityError, pad_batch, parity_cases, run_onnx, session, valid_extent

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "int8")
CONV_NETWORKS = (specs.ACOUSTIC_ENCODER, specs.ASR)
"""Networks whose convolutional feature encoder becomes MatMuls."""
QUANTISED = (specs.ACOUSTIC_ENCODER, specs.ASR, specs.TEXT_ENCODER, specs.FUSION_HEAD)
"""Networks quantised to int8 (all four: the fusion head's projections cost ~30 ms a request in fp32)."""

FUSE: dict[str, str] = {}
"""Networks given onnxruntime.transformers fusions (name -> model_type); none by default, as
measured here (1 thread, ONNX Runtime 1.32, ORT_ENABLE_ALL in the session either way):
- HuBERT-large, 4.5 s: 24 Attention + 49 SkipLayerNormalization + 24 BiasGelu fuse, outputs within
  5e-6; 1.18 s fused vs 1.16 s plain (fp32); int8 after fusion 0.51 s vs 0.45 s plain.
- BERT-base ("bert"): 12 Attention, EmbedLayerNormalization, 24 SkipLayerNormalization fuse, within
  3e-6; fp32 119 ms fused vs 113 ms plain at 100 tokens, 43 vs 45 ms at 20; int8 33 vs 30 ms
  (100 tokens), 11.4 vs 12.2 ms (20).
ONNX Runtime's own level-2 fusions already cover these graphs; the fused Attention kernel is no
faster on this CPU. `optimise_repository(fuse={...})` turns them on."""


# ---------------------------------------------------------------- conv -> MatMul


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
    transpose optimiser moves those sums onto the channels-last tensor, where its ReduceSum over a
    middle axis of [1, 14400, 512] takes ~55 ms; as a MatMul it becomes one GEMM (~2 ms)."""
    graph = model.graph
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
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


def _drop_unused(graph) -> None:
    """Remove Identity and Constant nodes and initialisers that nothing reads any more."""
    while True:
        read = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
        dead = [n for n in graph.node if n.op_type in ("Identity", "Constant") and n.output[0] not in read]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    kept = [i for i in graph.initializer if i.name in read]
    del graph.initializer[:]
    graph.initializer.extend(kept)


# ---------------------------------------------------------------- fusions and quantisation


def fuse_transformer(source: Path, destination: Path, model_type: str, heads: int, hidden: int) -> dict:
    """onnxruntime.transformers fusions; returns the count of each fused operator."""
    from onnxruntime.transformers.optimizer import optimize_model

    optimised = optimize_model(str(source), model_type=model_type, num_heads=heads, hidden_size=hidden,
                               opt_level=0, use_gpu=False)
    optimised.save_model_to_file(str(destination))
    return {op: count for op, count in optimised.get_fused_operator_statistics().items() if count}


def unshare_weights(model: onnx.ModelProto) -> int:
    """Give each MatMul its own copy of a weight that several MatMuls read (the fusion head uses
    its q/k/v projections in both attention directions, through Identity nodes): the quantiser
    quantises only weights that are initialisers, once. Returns how many copies were made."""
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


def quantise_int8(source: Path, destination: Path) -> None:
    """Dynamic int8 quantisation of the MatMuls (per-channel int8 weights, uint8 activations).

    reduce_range stays off: this CPU has VNNI, whose u8*s8 dot products do not saturate.
    Products of two activations (attention scores) stay fp32: quantising them measured slower.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(source))
    unshare_weights(model)

    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))  # the quantiser logs a line per tensor, and advice
    try:
        quantize_dynamic(model, str(destination), op_types_to_quantize=["MatMul", "Attention"],
                         per_channel=True, reduce_range=False, weight_type=QuantType.QInt8,
                         extra_options={"MatMulConstBOnly": True, "DefaultTensorType": TensorProto.FLOAT})
    finally:
        root.setLevel(level)


# ---------------------------------------------------------------- checks


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30))


def compare(reference, candidate, spec, cases: list[dict]) -> dict:
    """Per float output: max |difference| and min cosine over the valid part of each case,
    alone and as one padded batch (the candidate's batched rows against the reference alone)."""
    batch = pad_batch(spec, cases)
    batched = run_onnx(candidate, spec, batch)
    report = {}
    for row, case in enumerate(cases):
        expected, got = run_onnx(reference, spec, case), run_onnx(candidate, spec, case)
        for output in spec.outputs:
            if output.dtype != "float32":
                continue
            extent = valid_extent(output, {**case, **expected}, 0)
            cut = (lambda x: x[:extent]) if extent is not None else (lambda x: x)
            want = cut(expected[output.name][0])
            entry = report.setdefault(output.name, {"max_abs_diff": 0.0, "min_cosine": 1.0})
            for value in (cut(got[output.name][0]), cut(batched[output.name][row])):
                entry["max_abs_diff"] = max(entry["max_abs_diff"], float(np.abs(want - value).max()))
                entry["min_cosine"] = min(entry["min_cosine"], _cosine(want, value))
    return report


def chain_drift(reference: dict, candidate: dict, components, sizes) -> dict:
    """The served chain on the parity utterances, reference networks against candidate networks:
    max |probability difference|, transcript agreement, probability argmax agreement."""
    audio = parity_cases(specs.ACOUSTIC_ENCODER, sizes)
    results = {}
    for label, paths in (("reference", reference), ("candidate", candidate)):
        asr = session(paths[specs.ASR])
        transcripts = []
        for case in audio:
            logits, frames = asr.run(None, case)
            ids = logits[0, : int(frames[0])].argmax(-1)
            transcripts.append(components.ctc_tokenizer.decode(ids))
        del asr
        text = session(paths[specs.TEXT_ENCODER])
        text_features = []
        for transcript in transcripts:
            tokens = components.bert_tokenizer(transcript, truncation=True, return_tensors="np")
            mask = tokens["attention_mask"].astype(np.int64)
            text_features.append((text.run(None, {"input_ids": tokens["input_ids"].astype(np.int64),
                                                  "attention_mask": mask})[0], mask))
        del text
        acoustic = session(paths[specs.ACOUSTIC_ENCODER])
        acoustic_features = [acoustic.run(None, case) for case in audio]
        del acoustic
        head = session(paths[specs.FUSION_HEAD])
        probabilities = [head.run(["probabilities"], {
            "acoustic_features": features, "acoustic_frames": frames, "text_features": text_features_,
            "attention_mask": mask})[0][0] for (features, frames), (text_features_, mask) in zip(acoustic_features, text_features)]
        del head
        results[label] = (np.array(probabilities), transcripts)
    (p_ref, t_ref), (p_new, t_new) = results["reference"], results["candidate"]
    return {
        "utterances": len(audio),
        "max_abs_probability_diff": float(np.abs(p_ref - p_new).max()),
        "label_agreement": float(np.mean(p_ref.argmax(-1) == p_new.argmax(-1))),
        "transcript_agreement": float(np.mean([a == b for a, b in zip(t_ref, t_new)])),
    }


# ---------------------------------------------------------------- the export step


class OptimisationError(ParityError):
    """A rewritten fp32 network no longer matches the exported one within the tolerance."""


def optimise_repository(out: Path, components, all_specs: dict, sizes, precision: str = "fp32",
                        rewrite: bool = True, tolerance: float = 1e-4, version: str = "1",
                        onnx_file: str = "model.onnx", fuse: dict | None = None) -> dict:
    """Rewrite (and for int8 quantise) the exported networks in place; returns the report."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision '{precision}': choose one of {', '.join(PRECISIONS)}")
    fuse = FUSE if fuse is None else fuse
    started = time.perf_counter()
    report = {"precision": precision, "graph_rewrites": rewrite, "tolerance_fp32": tolerance, "networks": {}}
    with tempfile.TemporaryDirectory(prefix="optimise-", dir=out) as scratch:
        scratch = Path(scratch)
        originals = {}
        for name in specs.ONNX_NETWORKS:
            path = out / name / version / onnx_file
            originals[name] = scratch / f"{name}.exported.onnx"
            shutil.copyfile(path, originals[name])
            entry = report["networks"][name] = {}
            fp32 = path
            if rewrite and name in CONV_NETWORKS:
                model = onnx.load(str(originals[name]))
                entry["time_sums_to_matmul"] = time_sums_to_matmul(model)  # shape inference: before the rewrite
                entry["conv_to_matmul"] = conv_to_matmul(model)
                onnx.save(model, str(path))
                del model
            if rewrite and name in fuse:
                config = (components.text if name == specs.TEXT_ENCODER else components.acoustic).config
                fused = scratch / f"{name}.fused.onnx"
                entry["fused_operators"] = fuse_transformer(path, fused, fuse[name], config.num_attention_heads,
                                                            config.hidden_size)
                shutil.move(fused, path)
            cases = parity_cases(name, sizes)
            if rewrite and (name in CONV_NETWORKS or name in fuse):
                entry["fp32_vs_exported"] = compare(session(originals[name]), session(fp32), all_specs[name], cases)
                worst = {o: v["max_abs_diff"] for o, v in entry["fp32_vs_exported"].items() if v["max_abs_diff"] > tolerance}
                if worst:
                    raise OptimisationError(f"{name}: the rewritten graph differs from the exported one past "
                                            f"{tolerance}: {worst}")
            if precision == "int8" and name in QUANTISED:
                fp32_copy = scratch / f"{name}.fp32.onnx"
                shutil.move(path, fp32_copy)
                quantise_int8(fp32_copy, path)
                entry["int8_vs_fp32"] = compare(session(originals[name]), session(path), all_specs[name], cases)
                fp32_copy.unlink()
            entry["onnx_bytes"] = path.stat().st_size
            log.info("%s optimised: %s", name, {k: v for k, v in entry.items() if k != "onnx_bytes"})
        if precision != "fp32":
            current = {name: out / name / version / onnx_file for name in specs.ONNX_NETWORKS}
            report["chain_drift_vs_fp32"] = chain_drift(originals, current, components, sizes)
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report

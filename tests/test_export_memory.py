"""What keeps the export's memory low (issue 13), checked on the tiny preset by structure, not by
an RSS number: one network in memory at a time, and one ONNX Runtime session at a time."""

import json
import weakref

import onnx

from ser_triton.export import network_files, onnx_export, optimize, precision, repository

from ser_triton.core import specs
from ser_triton.export.pipeline import REPORT_FILE, ExportOptions, export


def test_one_network_and_one_session_at_a_time(tmp_path, monkeypatch):
    """Each network's PyTorch module is gone before its ONNX file is loaded and before the next
    network is built, and no check, rewrite, quantization or chain comparison holds two sessions."""
    modules, sessions, exported = [], [], []

    def alive(references):
        return [what for what, reference in references if reference() is not None]

    real_export, real_session = onnx_export.export_network, onnx_export.make_session

    def export_network(module, spec, example, path):
        assert not alive(modules), f"{spec.name} is exported while these modules live: {alive(modules)}"
        assert not alive(sessions), f"{spec.name} is exported while sessions live: {alive(sessions)}"
        modules.append((spec.name, weakref.ref(module)))
        exported.append(spec.name)
        return real_export(module, spec, example, path)

    def make_session(path, *args, **kwargs):
        assert not alive(modules), f"a session of {path} is made while these modules live: {alive(modules)}"
        assert not alive(sessions), f"a session of {path} is made while another lives: {alive(sessions)}"
        session = real_session(path, *args, **kwargs)
        sessions.append((str(path), weakref.ref(session)))
        return session

    monkeypatch.setattr(onnx_export, "export_network", export_network)
    monkeypatch.setattr(onnx_export, "make_session", make_session)
    monkeypatch.setattr(precision, "make_session", make_session)
    out = tmp_path / "repository"
    report = export(ExportOptions(out=out, preset="tiny", precision="int8"))

    assert exported == list(specs.ONNX_NETWORKS)
    # the hooks saw every check: per network its parity check, the rewritten networks' comparison
    # (2 sessions), the fp32 chain, the int8 network timed alone and judged along the chain, and
    # the whole int8 chain; every network file was opened in each of those phases
    rewritten = [name for name, entry in report["optimization"]["networks"].items() if "fp32_vs_exported" in entry]
    assert sorted(rewritten) == sorted(optimize.CONV_NETWORKS)  # the names, which the loop below looks up
    assert len(sessions) >= 5 * len(specs.ONNX_NETWORKS) + 2 * len(rewritten)
    for name in specs.ONNX_NETWORKS:
        opened = [path for path, _ in sessions if f"/{name}/" in path]
        assert len(opened) >= 4 + 2 * (name in rewritten), (name, opened)
    assert not alive(modules) and not alive(sessions)
    assert json.loads((out / REPORT_FILE).read_text())["peak_rss_mib"] == report["peak_rss_mib"] > 0


def test_written_networks_keep_their_weights_beside_them(tmp_path):
    """The networks this export rewrites or quantizes are saved as model.onnx + model.onnx.data,
    readable like the network file itself."""
    out = tmp_path / "repository"
    export(ExportOptions(out=out, preset="tiny", precision="int8"))
    for name in specs.ONNX_NETWORKS:
        path = repository.network_file(out, name)
        weights = network_files.data_file(path)
        assert weights.is_file() and weights.stat().st_mode & 0o777 == path.stat().st_mode & 0o777, name
        graph = onnx.load(str(path), load_external_data=False).graph
        assert any(t.data_location == onnx.TensorProto.EXTERNAL for t in graph.initializer), name
        assert onnx_export.onnx_bytes(path) == path.stat().st_size + weights.stat().st_size

"""Granularity verdicts on ST's zoo and on tiny converted models; arena planner; per-layer SQNR; CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.tiny_tflite import calibration_images, tiny_models
from workbench.cli import main
from workbench.errors import WorkbenchError
from workbench.inspect import activation_arena, inspect_model, layer_sqnr, match_tensors, weight_granularity
from workbench.tflite_graph import GraphOp, GraphTensor, TFLiteGraph, read_graph


@pytest.fixture(scope="module")
def tiny():
    return tiny_models()


@pytest.fixture(scope="module")
def calib_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("calib")
    for i, x in enumerate(calibration_images(6, seed=11)):
        Image.fromarray(np.round(x[0] * 255).astype(np.uint8)).save(folder / f"{i:02d}.png")
    return folder


# (file, verdict, per-channel, per-tensor, single-channel): counts as in the zoo's MANIFEST.md files
ZOO_CASES = [
    ("pose_estimation/yolov8n_256_quant_pc_uf_pose_coco-st.tflite", "per-channel", 69, 0, 4),
    ("pose_estimation/yolov8n_256_quant_pt_uf_pose_coco-st.tflite", "per-tensor", 0, 69, 4),
    ("pose_estimation/yolov8n_192_quant_pc_uf_pose_coco-st.tflite", "per-tensor", 0, 69, 4),  # mislabelled pc
    ("object_detection/yolov8n_320_quant_pc_uf_od_coco-person-st.tflite", "per-channel", 60, 0, 4),
    (
        "object_detection/yolov8n_256_quant_pc_uf_od_coco-person.tflite",
        "per-tensor",
        0,
        60,
        4,
    ),  # mislabelled pc
    ("segmentation/yolov8n_256_quant_pc_ii_seg_coco-st.tflite", "per-tensor", 0, 76, 1),
    ("object_detection_ssd/ssd_mobilenet_v1_025_192_int8.tflite", "per-channel", 46, 0, 0),
]


@pytest.mark.zoo
@pytest.mark.parametrize("name,verdict,pc,pt,single", ZOO_CASES)
def test_zoo_granularity_verdicts(zoo_dir, name, verdict, pc, pt, single):
    w = weight_granularity(read_graph(zoo_dir / "st" / name))
    assert (w.verdict, w.per_channel, w.per_tensor, w.single_channel) == (verdict, pc, pt, single)
    assert w.float32 == w.float16 == 0


@pytest.mark.zoo
def test_zoo_single_channel_weights_are_one_output_channel_convs(zoo_dir):
    """The 4 convs that are not per-channel in the genuine pc file have one output channel."""
    graph = read_graph(zoo_dir / "st/pose_estimation/yolov8n_256_quant_pc_uf_pose_coco-st.tflite")
    weights = [graph.tensors[op.inputs[1]] for op in graph.ops if op.op == "CONV_2D"]
    single = [w for w in weights if w.scales_len == 1]
    assert len(single) == 4 and all(w.shape[0] == 1 for w in single)
    assert all(w.scales_len == w.shape[0] for w in weights if w.scales_len > 1)


@pytest.mark.zoo
def test_zoo_inspect_result(zoo_dir):
    r = inspect_model(zoo_dir / "st/object_detection_ssd/ssd_mobilenet_v1_025_192_int8.tflite")
    assert r.size_bytes == 595664 and r.sha256.startswith("7fc992b34c2a")
    assert r.input.dtype == "uint8" and r.input.zero_point == 127
    assert r.op_histogram["CONV_2D"] == 31 and r.op_histogram["DEPTHWISE_CONV_2D"] == 15
    a = r.arena
    assert a.largest_tensor_bytes <= a.lower_bound_bytes <= a.arena_bytes <= a.naive_bytes
    assert a.largest_tensor_bytes >= 96 * 96 * 16  # first depthwise output, int8 (stride-2 stem of 192)
    json.dumps(r.to_dict(), allow_nan=False)


def test_tiny_models_scale_counts_and_verdicts(tiny):
    for key, verdict in [("int8-per-channel", "per-channel"), ("int8-per-tensor", "per-tensor")]:
        graph = read_graph(tiny[key])
        for op in graph.ops:
            if op.op in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
                w = graph.tensors[op.inputs[1]]
                channels = w.shape[3] if op.op == "DEPTHWISE_CONV_2D" else w.shape[0]
                assert w.dtype == "int8"
                assert w.scales_len == (channels if verdict == "per-channel" else 1), (key, op.op)
        assert weight_granularity(graph).verdict == verdict
    assert weight_granularity(read_graph(tiny["fp16"])).to_dict() == {
        "verdict": "fp16", "per_channel": 0, "per_tensor": 0, "single_channel": 0,
        "float32": 0, "float16": 4, "total": 4,
    }  # fmt: skip
    assert weight_granularity(read_graph(tiny["fp32"])).verdict == "float"


def _graph(
    tensors: list[tuple[str, int]], ops: list[tuple[list[int], list[int]]], inputs, outputs
) -> TFLiteGraph:
    gt = [GraphTensor(i, n, (size,), "uint8", False, 0, 0) for i, (n, size) in enumerate(tensors)]
    go = [GraphOp(k, "ADD", tuple(i), tuple(o)) for k, (i, o) in enumerate(ops)]
    return TFLiteGraph(Path("synthetic.tflite"), gt, go, tuple(inputs), tuple(outputs))


def test_arena_greedy_by_size_on_a_graph_with_a_skip_connection():
    # in(100) -op0-> a(50) -op1-> b(200); op2(b, a) -> out(10). Live: {in,a}=150, {a,b}=250, {a,b,out}=260.
    g = _graph(
        [("in", 100), ("a", 50), ("b", 200), ("out", 10)], [([0], [1]), ([1], [2]), ([2, 1], [3])], [0], [3]
    )
    a = activation_arena(g, alignment=1)
    assert (a.arena_bytes, a.lower_bound_bytes, a.naive_bytes, a.largest_tensor_bytes) == (260, 260, 360, 200)
    # alignment rounds every tensor up
    assert activation_arena(g, alignment=64).naive_bytes == 128 + 64 + 256 + 64


def test_arena_reuses_memory_along_a_chain():
    # a chain of five 100-byte tensors needs only two live at a time
    g = _graph([(f"t{i}", 100) for i in range(5)], [([i], [i + 1]) for i in range(4)], [0], [4])
    a = activation_arena(g, alignment=1)
    assert (a.arena_bytes, a.lower_bound_bytes, a.naive_bytes) == (200, 200, 500)


def test_arena_leaves_out_tensors_folded_from_constants():
    # w16(300, constant) -DEQUANTIZE-> w32(600); op1(in, w32) -> out(100): w32 is weights, not activations
    tensors = [("in", 100), ("w16", 300), ("w32", 600), ("out", 100)]
    gt = [GraphTensor(i, n, (size,), "uint8", n == "w16", 0, 0) for i, (n, size) in enumerate(tensors)]
    ops = [GraphOp(0, "DEQUANTIZE", (1,), (2,)), GraphOp(1, "CONV_2D", (0, 2), (3,))]
    a = activation_arena(TFLiteGraph(Path("fp16.tflite"), gt, ops, (0,), (3,)), alignment=1)
    assert (a.arena_bytes, a.naive_bytes, a.tensors, a.folded_weight_bytes) == (200, 200, 2, 600)


def test_fp16_arena_is_the_fp32_arena(tiny):
    fp32, fp16 = (activation_arena(read_graph(tiny[k])) for k in ("fp32", "fp16"))
    assert fp16.arena_bytes == fp32.arena_bytes
    assert fp16.folded_weight_bytes > 0 and fp32.folded_weight_bytes == 0


def test_tensor_matching_pairs_renamed_outputs(tiny):
    graph, ref = read_graph(tiny["int8-per-channel"]), read_graph(tiny["fp32"])
    pairs = match_tensors(graph, ref)
    assert len(pairs) == 5  # every compute op: conv, depthwise, conv, mean, fc
    for t, r in pairs:
        assert graph.tensors[t].shape == ref.tensors[r].shape
        assert graph.ops[graph.producers[t]].op == ref.ops[ref.producers[r]].op
    names = {graph.tensors[t].name: ref.tensors[r].name for t, r in pairs}
    assert (
        names["StatefulPartitionedCall_1:01"] == "StatefulPartitionedCall_1:0"
    )  # int8 twin of the float output


def test_layer_sqnr_orders_schemes_sensibly(tiny):
    images = [np.round(x[0] * 255).astype(np.uint8) for x in calibration_images(4, seed=7)]
    by_scheme = {
        k: layer_sqnr(tiny[k], tiny["fp32"], images)
        for k in ("fp32", "fp16", "int8-per-channel", "int8-per-tensor")
    }
    assert all(math.isinf(s.sqnr_db) and s.sqnr_db > 0 for s in by_scheme["fp32"])  # itself: identical
    worst = {k: v[0].sqnr_db for k, v in by_scheme.items()}
    assert [s.sqnr_db for s in by_scheme["int8-per-channel"]] == sorted(
        s.sqnr_db for s in by_scheme["int8-per-channel"]
    )
    # int8 is tens of dB (a wrong pairing or dequantization would give ~0 dB); fp16 far better;
    # per-tensor worse than per-channel on this net's uneven channel ranges
    assert 25 < worst["int8-per-tensor"] < worst["int8-per-channel"] < worst["fp16"] - 10


def test_inspect_model_with_reference_and_json(tiny, calib_dir):
    r = inspect_model(tiny["int8-per-tensor"], reference=tiny["fp32"], calib_images=calib_dir, calib_count=3)
    assert r.calib_images == 3 and r.reference == str(tiny["fp32"])
    assert len(r.sqnr) == 5 and r.worst_sqnr_db == r.sqnr[0].sqnr_db
    df = r.to_pandas()
    assert list(df["sqnr_db"]) == sorted(df["sqnr_db"])
    d = json.loads(json.dumps(r.to_dict(), allow_nan=False))
    assert d["weights"]["verdict"] == "per-tensor" and len(d["sqnr"]) == 5
    self_check = inspect_model(tiny["fp32"], reference=tiny["fp32"], calib_images=calib_dir, calib_count=2)
    assert self_check.to_dict()["worst_sqnr_db"] is None  # +inf has no JSON form


def test_inspect_errors(tiny, tmp_path):
    with pytest.raises(WorkbenchError, match="needs calibration images"):
        inspect_model(tiny["int8-per-channel"], reference=tiny["fp32"])
    with pytest.raises(WorkbenchError, match="image folder not found"):
        inspect_model(tiny["int8-per-channel"], reference=tiny["fp32"], calib_images=tmp_path / "none")
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(WorkbenchError, match="junk.tflite: not a TFLite flatbuffer"):
        read_graph(junk)


def test_cli_inspect_json_table_and_errors(tiny, calib_dir, tmp_path, capsys):
    out = tmp_path / "inspect" / "r.json"
    code = main(["inspect", str(tiny["int8-per-channel"]), "--reference", str(tiny["fp32"]),
                 "--calib", str(calib_dir), "--calib-count", "2", "--json", "--out", str(out)])  # fmt: skip
    printed = json.loads(capsys.readouterr().out)
    assert code == 0 and printed == json.loads(out.read_text())
    assert printed["weights"]["verdict"] == "per-channel" and len(printed["sqnr"]) == 5
    assert main(["inspect", str(tiny["fp16"])]) == 0
    table = capsys.readouterr().out
    assert "fp16" in table and "arena" in table
    missing = tmp_path / "missing.tflite"
    assert main(["inspect", str(missing), "--out", str(tmp_path / "x.json")]) == 2
    assert f"{missing}: model file not found" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_read_graph_parses_each_content_once(tiny, tmp_path, monkeypatch):
    """A file read again (the benchmark step reads each file up to five times) is not parsed again;
    a file rewritten in place, even to the same size within one clock tick, is."""
    import os
    import shutil

    from workbench import tflite_graph

    parsed = []
    parse = tflite_graph._parse_graph
    monkeypatch.setattr(
        tflite_graph, "_parse_graph", lambda path, data: parsed.append(path) or parse(path, data)
    )
    monkeypatch.setattr(tflite_graph, "_cache", type(tflite_graph._cache)())
    fp32, int8 = tmp_path / "fp32.tflite", tmp_path / "int8.tflite"
    shutil.copyfile(tiny["fp32"], fp32)
    shutil.copyfile(tiny["int8-per-channel"], int8)
    first = read_graph(fp32)
    assert read_graph(fp32) is first and len(parsed) == 1
    copy = tmp_path / "copy.tflite"
    shutil.copyfile(fp32, copy)
    same = read_graph(copy)  # same bytes, other name: the parse is shared, the path is its own
    assert len(parsed) == 1 and same.path == copy and same.tensors is first.tensors and first.path == fp32

    stat = fp32.stat()
    data = int8.read_bytes()
    with open(fp32, "r+b") as f:  # another model, written into the same inode, the old mtime kept
        f.truncate(0)
        f.write(data)
    os.utime(fp32, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    changed = read_graph(fp32)
    assert len(parsed) == 2 and changed is not first
    assert (
        weight_granularity(changed).to_dict()
        == weight_granularity(read_graph(tiny["int8-per-channel"])).to_dict()
    )
    fp32.write_bytes(b"\x00" * 64)
    with pytest.raises(WorkbenchError, match="not a TFLite flatbuffer"):
        read_graph(fp32)


def test_layer_sqnr_of_several_files_runs_the_reference_once_per_image(tiny, monkeypatch):
    """The benchmark step scores the fp16 and int8 files of one export against its fp32 file
    together: the reference runs once per image, and each file gets what it gets alone."""
    from workbench.runtime import TFLiteModel
    from workbench.sqnr import layer_sqnr_many

    images = [np.round(x[0] * 255).astype(np.uint8) for x in calibration_images(3, seed=9)]
    files = [tiny[k] for k in ("fp16", "int8-per-channel", "int8-per-tensor", "int8-ii")]
    alone = [layer_sqnr(f, tiny["fp32"], images) for f in files]
    runs = []
    run = TFLiteModel.run
    monkeypatch.setattr(TFLiteModel, "run", lambda self, x: runs.append(self.path) or run(self, x))
    together = layer_sqnr_many(files, tiny["fp32"], images)
    assert together == alone
    assert runs.count(tiny["fp32"]) == len(images)  # not once per file and image
    assert all(runs.count(f) == len(images) for f in files)

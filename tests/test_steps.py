"""The report steps on ST's zoo files (no training): variants parsed from names, scheme read from
weights, and a complete results table — the offline zoo-tiny config end to end."""

import pandas as pd
import pytest

from workbench import steps
from workbench.config import RunConfig, Task, resolve_path
from workbench.errors import WorkbenchError
from workbench.zoo import zoo_variants

pytestmark = pytest.mark.zoo


def test_zoo_variants_take_the_scheme_from_the_weights_not_the_name(zoo_dir):
    variants = {v.name: v for v in zoo_variants(zoo_dir / "st", Task.POSE)}
    assert set(variants) == {
        "yolov8n_192_quant_pc_uf_pose_coco-st",
        "yolov8n_256_quant_pc_uf_pose_coco-st",
        "yolov8n_256_quant_pt_uf_pose_coco-st",
        "yolov8n_320_quant_pc_uf_pose_coco-st",
    }
    assert variants["yolov8n_256_quant_pc_uf_pose_coco-st"].scheme == "int8-per-channel"
    assert variants["yolov8n_256_quant_pt_uf_pose_coco-st"].scheme == "int8-per-tensor"
    assert variants["yolov8n_192_quant_pc_uf_pose_coco-st"].scheme == "int8-per-tensor"  # mislabelled pc
    assert {v.imgsz for v in variants.values()} == {192, 256, 320}
    assert all(v.io == "uf" and v.source == "zoo" for v in variants.values())


def test_zoo_tiny_config_fills_the_results_table(zoo_dir, tiny_coco, tmp_path):
    cfg = RunConfig.from_yaml(
        resolve_path("configs/zoo-tiny.yaml"),
        model=str(zoo_dir / "st"),
        ann=str(tiny_coco / "instances_train2017_small.json"),
        images=str(tiny_coco / "train_2017_small"),
        bench_runs=3,
    )
    plan = steps.preflight(cfg)
    retrained = steps.retrain(plan, tmp_path)
    assert retrained["models"] == [] and retrained["zoo"] == [str(zoo_dir / "st")]
    variants = steps.quantize(plan, tmp_path)
    assert len(variants) == 8 and {v.task for v in variants} == {"detect"}
    steps.evaluate(plan, tmp_path)
    steps.benchmark(plan, tmp_path)
    table = steps.compare(plan, tmp_path)
    assert len(pd.read_csv(tmp_path / "results.csv")) == 8
    ap = table.set_index("variant")["ap"]
    # a wrong letterbox/coordinate convention drops far below these
    assert ap["yolov8n_256_quant_pc_uf_od_coco-person-st"] > 0.3
    assert ap["yolov8n_320_quant_pt_uf_od_coco-person-st"] > 0.3
    assert (table["metric"] == "bbox").all() and table["latency_ms_median"].gt(0).all()
    assert (tmp_path / "plots" / "frontier_bbox.png").is_file()


def test_a_step_before_its_inputs_says_which_notebook_to_run(tmp_path):
    with pytest.raises(WorkbenchError, match="'variants' has no results"):
        steps.load_variants(tmp_path)

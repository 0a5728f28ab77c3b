from pathlib import Path

import pytest

from workbench.cli import main
from workbench.config import IOType, RunConfig, Scheme, validate_imgsz
from workbench.errors import WorkbenchError


@pytest.mark.parametrize("size", [64, 96, 192, 256, 320, 1280])
def test_valid_image_sizes(size):
    assert RunConfig(imgsz=[size]).imgsz == [size]


@pytest.mark.parametrize("size", [32, 100, 250, 1312, -256, "big", 256.5])
def test_invalid_image_sizes_are_refused(size):
    with pytest.raises(WorkbenchError, match="image size"):
        RunConfig(imgsz=[size])


def test_unknown_key_lists_valid_ones(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("imgsz: [256]\nresolution: 320\n")
    with pytest.raises(WorkbenchError) as err:
        RunConfig.from_yaml(path)
    message = str(err.value)
    assert str(path) in message and "resolution" in message
    assert "valid keys" in message and "imgsz" in message and "schemes" in message


def test_yaml_and_papermill_parameters_give_the_same_config(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("imgsz: [192, 256]\nschemes: [fp32, int8-per-tensor]\nseed: 3\n")
    from_yaml = RunConfig.from_yaml(path)
    from_params = RunConfig.from_params({"imgsz": [192, 256], "schemes": "fp32,int8-per-tensor", "seed": 3})
    assert from_yaml == from_params
    assert from_yaml.hash == from_params.hash
    assert from_yaml.schemes == [Scheme.FP32, Scheme.INT8_PER_TENSOR]
    overridden = RunConfig.from_params({"config": str(path), "seed": 4})
    assert overridden.seed == 4 and overridden.imgsz == [192, 256]


def test_hash_is_stable_and_content_sensitive():
    a, b = RunConfig(imgsz=[256]), RunConfig(imgsz=[256])
    assert a.hash == b.hash == RunConfig.from_dict(a.to_dict()).hash
    assert a.hash != RunConfig(imgsz=[320]).hash
    assert a.hash != RunConfig(imgsz=[256], io="ii").hash
    assert a.hash == RunConfig(imgsz=[256], name="other").hash  # the name labels, it does not change results


def test_recipes_are_canonical_and_part_of_the_hash():
    # hashes of earlier runs: canonicalising "+"-joined recipes in registry order must not move them
    assert RunConfig().hash == "a6c381db395c"
    given = RunConfig(recipes=["calib-all+split-head", "qat,split-levels"])
    assert given.recipes == ["split-head+calib-all", "split-levels+qat"]
    assert (
        given.hash == RunConfig(recipes=["split-head+calib-all", "split-levels+qat"]).hash == "e70324bdb6e3"
    )
    with pytest.raises(WorkbenchError, match="unknown recipe"):
        RunConfig(recipes=["nope"])
    with pytest.raises(WorkbenchError, match="must be distinct"):
        RunConfig(recipes=["split-head", "split-head"])


def test_the_recipe_registry_follows_the_recipe_vocabulary():
    from workbench.recipe_names import RECIPE_NAMES
    from workbench.recipes import RECIPES, register

    assert tuple(RECIPES) == RECIPE_NAMES
    with pytest.raises(ValueError, match="not next"):
        register("split-head", "registered twice")(lambda plan: None)


def test_enum_values_are_validated():
    with pytest.raises(WorkbenchError, match="int9"):
        RunConfig(schemes=["int9"])
    assert RunConfig(io="ii").io is IOType.II
    with pytest.raises(WorkbenchError, match="image size"):
        validate_imgsz(33)


def test_committed_configs_load():
    root = Path(__file__).resolve().parent.parent / "configs"
    for path in sorted(root.glob("*.yaml")):
        RunConfig.from_yaml(path)


def test_cli_reports_a_bad_config_and_exits_2(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("imgsz: [250]\n")
    assert main(["train", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "multiple of 32" in err

"""The split-channels recipe: per-tensor convolutions split by channel range (workbench.recipes.split_channels)."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest

from workbench.errors import WorkbenchError
from workbench.recipes import applies, parse_recipes
from workbench.recipes.channel_spaces import trace_channels
from workbench.recipes.split_channels import (
    MIN_GAIN,
    _run_module,
    channel_groups,
    contiguous_runs,
    noise_gain,
    split_model,
)


def _brute_force_cost(amax: np.ndarray, groups: int) -> float:
    """Least sum of n·max² over every way to cut the sorted channels into at most ``groups`` runs."""
    a = np.sort(amax)
    best = len(a) * a[-1] ** 2
    for k in range(2, groups + 1):
        for cuts in itertools.combinations(range(1, len(a)), k - 1):
            bounds = [0, *cuts, len(a)]
            best = min(best, sum((bounds[i + 1] - bounds[i]) * a[bounds[i + 1] - 1] ** 2 for i in range(k)))
    return best


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("groups", [1, 2, 3])
def test_channel_groups_is_the_least_noise_partition(seed, groups):
    amax = np.random.default_rng(seed).lognormal(0, 1.5, 11)
    runs = channel_groups(amax, groups)
    assert sorted(np.concatenate(runs).tolist()) == list(range(11))  # every channel once
    assert len(runs) <= groups
    cost = sum(len(r) * amax[r].max() ** 2 for r in runs)
    assert cost == pytest.approx(_brute_force_cost(amax, groups))
    assert noise_gain(amax, runs) == pytest.approx(len(amax) * amax.max() ** 2 / cost)


def _brute_force_contiguous_cost(
    amax: np.ndarray, groups: int, align: int = 1, penalty: float = 0.0
) -> float:
    n, best = len(amax), np.inf
    for count in range(1, groups + 1):
        for cuts in itertools.combinations(range(align, n, align), count - 1):
            bounds = [0, *cuts, n]
            cost = sum(
                (bounds[i + 1] - bounds[i]) * float(amax[bounds[i] : bounds[i + 1]].max()) ** 2
                for i in range(count)
            )
            best = min(best, cost + penalty * (count - 1) * n * float(amax.max()) ** 2)
    return best


@pytest.mark.parametrize("seed", range(40))
def test_contiguous_runs_on_a_fixed_order_equal_brute_force(seed):
    rng = np.random.default_rng(seed)
    amax = rng.lognormal(0.0, 1.0, int(rng.integers(1, 9)))
    groups = int(rng.integers(1, 5))
    runs = contiguous_runs(amax, groups)
    assert np.array_equal(np.concatenate(runs), np.arange(len(amax)))  # segments, in order
    assert len(runs) <= groups
    cost = sum(len(r) * float(amax[r].max()) ** 2 for r in runs)
    assert cost == pytest.approx(_brute_force_contiguous_cost(amax, groups))


@pytest.mark.parametrize("seed", range(40))
def test_aligned_contiguous_runs_equal_brute_force(seed):
    rng = np.random.default_rng(seed)
    amax = rng.lognormal(0.0, 1.0, int(rng.integers(1, 14)))
    groups, align = int(rng.integers(1, 5)), int(rng.integers(1, 5))
    penalty = float(rng.choice([0.0, 0.05, 0.3]))
    runs = contiguous_runs(amax, groups, align, penalty)
    assert np.array_equal(np.concatenate(runs), np.arange(len(amax)))  # segments, in order
    assert len(runs) <= groups
    assert all(r[0] % align == 0 for r in runs)  # each run starts on a block boundary
    cost = sum(len(r) * float(amax[r].max()) ** 2 for r in runs)
    cost += penalty * (len(runs) - 1) * len(amax) * float(amax.max()) ** 2
    assert cost == pytest.approx(_brute_force_contiguous_cost(amax, groups, align, penalty))


def test_channel_groups_keeps_one_run_when_ranges_are_equal():
    assert len(channel_groups(np.ones(8), 3)) == 1  # more runs cannot lower the noise
    assert len(channel_groups(np.array([2.0]), 3)) == 1


@pytest.mark.parametrize("depthwise", [False, True])
def test_run_conv_computes_the_same_outputs(depthwise):
    import torch

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8 if depthwise else 1)
    with torch.no_grad():
        conv.weight.mul_(torch.logspace(-2, 0, 8)[torch.randperm(8)].view(8, 1, 1, 1))  # ranges spread 100x
    amax = conv.weight.detach().abs().flatten(1).amax(1).double().numpy()
    x = torch.randn(2, 8, 10, 10)
    with torch.no_grad():
        want = conv(x)
    if depthwise:
        runs = channel_groups(amax, 3)
    else:  # ungrouped parts are contiguous: sort the rows first, as a channel space's order does
        order = np.argsort(amax, kind="stable")
        with torch.no_grad():
            conv.weight.copy_(conv.weight[order])
            conv.bias.copy_(conv.bias[order])
        want, amax = want[:, order], amax[order]
        runs = contiguous_runs(amax, 3)
        with pytest.raises(ValueError, match="contiguous"):
            _run_module()(conv, [np.array([0, 2]), np.array([1, *range(3, 8)])])
    assert len(runs) == 3
    split = _run_module()(conv, runs)
    torch.testing.assert_close(split(x), want, atol=1e-6, rtol=1e-5)
    # each part's weights span only its own run's range: its per-tensor scale is that run's
    for part, run in zip(split.parts, runs, strict=True):
        assert float(part.weight.abs().max()) == pytest.approx(float(amax[run].max()))


def _traced_export(model, head: str = "levels"):
    """Set Ultralytics' export flags and head edit, as the family's split-channels edit does."""
    import contextlib

    from workbench.heads import split_head

    for m in model.modules():
        if hasattr(m, "export"):
            m.export = True
    return split_head(levels=head == "levels") if head != "single" else contextlib.nullcontext()


def _split_copy(base, imgsz: int, min_gain: float = MIN_GAIN):
    from workbench.families.yolo import _split_channels
    from workbench.recipes.edits import ExportEdits

    model = copy.deepcopy(base)
    _split_channels(model, ExportEdits(head="levels", split_channels=min_gain), imgsz)
    return model


def _assert_same_outputs(base, model, imgsz: int) -> None:
    import torch

    x = torch.rand(2, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), _traced_export(base), _traced_export(model):
        ref, got = base(x), model(x)
    assert len(ref) == len(got) > 4
    for r, g in zip(ref, got, strict=True):
        torch.testing.assert_close(g, r, atol=1e-4, rtol=1e-4)


def _no_gather(model) -> None:
    """No module of the split network gathers channels: its only new modules concatenate or sum."""
    for m in model.modules():
        assert not hasattr(m, "restore")
    run_conv = _run_module().__name__
    assert sum(type(m).__name__ == run_conv for m in model.modules()) > 10


@pytest.fixture(scope="module")
def split_synth():
    """The synthetic checkpoint, fused, and a copy with split-channels applied."""
    from ultralytics import YOLO

    from tests.conftest import CHECKPOINT

    base = YOLO(str(CHECKPOINT)).model.fuse(verbose=False).eval()
    with pytest.MonkeyPatch.context() as patch:  # its convs are too narrow for ALIGN-channel runs
        patch.setattr("workbench.recipes.split_channels.ALIGN", 1)
        return base, _split_copy(base, 128)


def test_split_model_leaves_the_float_network_unchanged(split_synth):
    base, model = split_synth
    _no_gather(model)
    _assert_same_outputs(base, model, 128)


@pytest.mark.slow
def test_split_model_is_exact_on_yolo11n_pose():
    from ultralytics import YOLO

    from workbench.locations import weights_dir

    path = weights_dir() / "ultralytics" / "yolo11n-pose.pt"
    if not path.is_file():
        pytest.skip(f"yolo11n-pose.pt not found under {weights_dir()} (set WORKBENCH_WEIGHTS_DIR)")
    base = YOLO(str(path)).model.fuse(verbose=False).eval()
    model = _split_copy(base, 256)
    _no_gather(model)
    _assert_same_outputs(base, model, 256)


def _residual_net():
    """conv a → (b reads a) → a + b → conv c → view: a and b share one space, c's output is pinned."""
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 12, 1), nn.Conv2d(12, 12, 3, padding=1)
            self.d, self.c = nn.Conv2d(12, 12, 3, padding=1, groups=12), nn.Conv2d(12, 6, 1)
            self.e = nn.Conv2d(6, 6, 1)

        def forward(self, x):
            y = torch.relu(self.a(x))
            y = y + self.b(y)
            left, right = self.d(y).chunk(2, 1)
            z = self.c(torch.cat([right, left * 2], 1))
            return self.e(z).view(z.shape[0], -1)

    torch.manual_seed(3)
    net = Net().eval()
    with torch.no_grad():  # a and b want other orders: b's ranges interleave a's
        ranges = torch.logspace(-2, 0, 12)
        net.a.weight.mul_(ranges.view(12, 1, 1, 1) / net.a.weight.abs().amax((1, 2, 3), keepdim=True))
        net.b.weight.mul_(
            ranges[[0, 6, 1, 7, 2, 8, 3, 9, 4, 10, 5, 11]].view(12, 1, 1, 1)
            / net.b.weight.abs().amax((1, 2, 3), keepdim=True)
        )
        net.c.weight.mul_(
            torch.logspace(-2, 0, 6).view(6, 1, 1, 1) / net.c.weight.abs().amax((1, 2, 3), keepdim=True)
        )
    return net


def _row_permutation(before, after) -> list[int]:
    """The p with after[k] = before[p[k]] for weight rows (its input columns may be permuted too:
    rows are matched by their sorted values)."""
    import torch

    flat_b, flat_a = before.flatten(1).sort(1).values, after.flatten(1).sort(1).values
    return [int(torch.cdist(row[None], flat_b).argmin()) for row in flat_a]


def test_shared_order_is_respected_across_a_residual_a_chunk_and_a_pinned_output():
    import torch

    base = _residual_net()
    traced = trace_channels(base, torch.zeros(1, 3, 8, 8))
    shared = [sorted({b.writer for b in blocks if b.writer}) for blocks in traced.spaces]
    assert ["a", "b"] in shared  # the residual's writers share one space
    # the chunk cuts that space in two blocks of 6: a's order may permute within each only
    assert sorted((b.start, b.size) for blocks in traced.spaces for b in blocks if b.writer == "a") == [
        (0, 6),
        (6, 6),
    ]
    pinned = {
        w
        for blocks, p in zip(traced.spaces, traced.pinned, strict=True)
        if p
        for w in (b.writer for b in blocks)
    }
    assert "e" in pinned and "c" not in pinned  # e is read by a view; c only by e
    model = copy.deepcopy(base)
    report = split_model(model, torch.zeros(1, 3, 8, 8), min_gain=1.01, align=1)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(model(x), base(x), atol=1e-5, rtol=1e-5)
    run_conv = _run_module()

    def weight(name):
        m = getattr(model, name)
        return torch.cat([p.weight for p in m.parts]) if isinstance(m, run_conv) else m.weight

    perm_a = _row_permutation(base.a.weight, weight("a"))
    assert perm_a == _row_permutation(base.b.weight, weight("b"))  # one order for both writers
    assert sorted(perm_a[:6]) == list(range(6))  # within the chunk's blocks
    assert _row_permutation(base.e.weight, weight("e")) == list(range(6))  # pinned: identity
    # the shared order costs a and b more noise than each alone, never less
    for name in ("a", "b"):
        assert report.convs[name]["shared"] >= report.convs[name]["free"] - 1e-12
    assert report.totals()["shared"] > report.totals()["free"]
    assert report.totals()["applied"] < report.totals()["whole"]


def test_split_channels_refusals(pose256, synth_eval_set, tmp_path):
    from workbench.jobs import quantize_with_recipes

    assert applies("split-levels+split-channels", "int8-per-tensor")
    assert not applies("split-channels", "int8-per-channel")
    with pytest.raises(WorkbenchError, match="use it without them"):
        parse_recipes("split-channels,qat")
    with pytest.raises(WorkbenchError, match="use it without them"):
        parse_recipes("split-channels+bias-correct")
    out = tmp_path / "pc.tflite"
    with pytest.raises(WorkbenchError, match="use it with int8-per-tensor"):
        quantize_with_recipes(
            pose256["saved_model"], "int8-per-channel", out, calib=synth_eval_set.train_images,
            calib_count=4, recipes="split-channels",
        )  # fmt: skip
    assert not out.exists()


def _sqnr_db(model_path, reference_path, batches) -> float:
    from workbench.runtime import TFLiteModel

    model, reference = TFLiteModel(model_path), TFLiteModel(reference_path)
    signal = noise = 0.0
    for x in batches:
        for got, ref in zip(model.run(x), reference.run(x), strict=True):
            signal += float(np.sum(ref.astype(np.float64) ** 2))
            noise += float(np.sum((got.astype(np.float64) - ref) ** 2))
    return 10 * np.log10(signal / noise)


def test_split_model_lowers_per_tensor_weight_rounding_error(split_synth):
    """With every conv's weights rounded to per-tensor int8, the split network stays nearer the float one."""
    import torch

    base, model = split_synth

    def rounded(net):
        net = copy.deepcopy(net)
        with torch.no_grad():
            for conv in (m for m in net.modules() if isinstance(m, torch.nn.Conv2d)):
                scale = conv.weight.abs().max().clamp_min(1e-12) / 127
                conv.weight.copy_(torch.round(conv.weight / scale) * scale)
        return net

    x = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(2))
    with torch.no_grad(), _traced_export(base), _traced_export(model):
        ref = base(x)
        errors = [
            sum(float(((r - g) ** 2).mean()) for r, g in zip(ref, rounded(net)(x), strict=True))
            for net in (base, model)
        ]
    assert errors[1] < errors[0] / 2, errors  # at least 3 dB less output error


@pytest.mark.slow
def test_split_channels_file_is_per_tensor_and_exact_in_float(pose256, synth_eval_set, tmp_path):
    """The re-export converts to the same float outputs as the plain one, and to an all-int8 per-tensor file."""
    from workbench.calibration import calibration_batches
    from workbench.exported import ExportResult
    from workbench.jobs import quantize_with_recipes
    from workbench.quantize import quantize
    from workbench.tflite_graph import read_graph

    result = quantize_with_recipes(
        pose256["saved_model"], "int8-per-tensor", tmp_path / "pt-split.tflite", io="uf",
        calib=synth_eval_set.train_images, calib_count=32, recipes="split-channels",
    )  # fmt: skip
    assert (result.all_int8, result.granularity) == (True, "per-tensor")
    folder = next(
        p for p in pose256["saved_model"].parent.iterdir() if p.name.endswith("+split-channels-a16")
    )
    assert ExportResult.load(folder).split_channels
    graph = read_graph(result.path)
    plain = read_graph(pose256["int8-per-tensor"])
    assert graph.op_histogram()["CONV_2D"] > plain.op_histogram()["CONV_2D"]  # the convs really were split
    assert "GATHER" not in graph.op_histogram()  # channel order restored by permuting weights
    assert set(graph.op_histogram()) <= set(plain.op_histogram())  # no op kind the plain file lacks
    batches = calibration_batches(synth_eval_set.val_images, 256, 6)
    fp32 = quantize(folder, "fp32", tmp_path / "split-fp32.tflite")
    assert _sqnr_db(fp32.path, pose256["fp32"], batches) > 60  # concat and permuted weights are exact
    # the int8 file tracks the float model (a wrong channel order would not); on this synthetic
    # checkpoint its outputs are as near float as the plain per-tensor file's (README)
    assert _sqnr_db(result.path, pose256["fp32"], batches) > 25


def test_weight_quantization_error_shows_what_the_split_gives_back():
    """Per layer: per-tensor ≤ split-channels ≤ per-channel SQNR, and the split gains where it splits."""
    from tests.conftest import CHECKPOINT
    from workbench.quantize import weight_quantization_error

    errors = weight_quantization_error(CHECKPOINT)
    assert (errors.split_channels_db >= errors.per_tensor_db - 0.01).all()
    assert (errors.split_channels_db <= errors.per_channel_db + 0.01).all()
    gained = errors.split_channels_db - errors.per_tensor_db
    assert (gained > 1.0).sum() > 10  # 10·log10(1.5) = 1.8 dB at least where a conv is split


def test_min_gain_is_the_cost_knob_and_the_export_records_it():
    import dataclasses

    import torch

    from workbench.recipes import build_plan

    plan = build_plan("split-levels,split-channels", 1, "int8-per-tensor")
    assert (plan.export.split_channels, plan.export.key) == (MIN_GAIN, "levels-head+split-channels-a16")
    assert dataclasses.replace(plan.export, split_channels=3.0).key == "levels-head+split-channels3-a16"
    counts = []
    for gain in (1.01, 1e9):
        model = _residual_net()
        report = split_model(model, torch.zeros(1, 3, 8, 8), min_gain=gain, align=1)
        counts.append(sum(isinstance(m, _run_module()) for m in model.modules()))
        assert counts[-1] == report.split
    assert counts[0] >= 3 and counts[1] == 0  # a higher threshold splits fewer convolutions

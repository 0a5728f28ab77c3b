"""Fine-tuning validates the new weights once: Ultralytics' second validation of the same weights
(``final_eval`` on ``best.pt``) is skipped only when ``best.pt`` holds the epoch just validated."""

from __future__ import annotations

from pathlib import Path

import pytest

from workbench.train import _validating_once

CHECKPOINT = Path(__file__).resolve().parent.parent / "data" / "weights" / "yolov8n-pose-synth.pt"


class _Trainer:
    """The part of Ultralytics' BaseTrainer that ``_validating_once`` relies on."""

    def __init__(self, folder: Path, fitness: list[float]):
        self.best, self.last = folder / "best.pt", folder / "last.pt"
        self.epoch, self.fitness, self.best_fitness = 0, None, None
        self._fitness, self.calls = fitness, []

    def validate(self):
        self.calls.append(f"validate {self.epoch}")
        self.fitness = self._fitness[self.epoch]
        self.best_fitness = max(self.best_fitness or -1.0, self.fitness)
        return {"metrics/mAP50-95(P)": self.fitness}, self.fitness

    def final_eval(self):
        self.calls.append("final_eval")


def _train(trainer, epochs: int, validate: set[int]) -> None:
    for epoch in range(epochs):
        trainer.epoch = epoch
        if epoch in validate:
            trainer.validate()
        if trainer.best_fitness == trainer.fitness:  # Ultralytics' save_model
            trainer.best.write_bytes(b"best")
        trainer.last.write_bytes(b"last")
    trainer.final_eval()


@pytest.mark.parametrize(
    ("fitness", "validate", "second_validation"),
    [
        ([0.7], {0}, False),  # one epoch, validated: best.pt is it
        ([0.6, 0.7], {1}, False),  # val=False over two epochs: the last is validated and best
        ([0.8, 0.7], {0, 1}, True),  # best.pt is epoch 0, the metrics are of epoch 1
        ([0.7, 0.7], {0}, True),  # the last epoch was not validated
    ],
)
def test_final_eval_runs_only_when_best_pt_is_not_what_was_validated(
    tmp_path, monkeypatch, fitness, validate, second_validation
):
    import ultralytics.utils.torch_utils as torch_utils

    stripped = []
    monkeypatch.setattr(torch_utils, "strip_optimizer", lambda f, **kw: stripped.append(Path(f).name) or {})
    trainer = _validating_once(_Trainer)(tmp_path, fitness)
    _train(trainer, len(fitness), validate)
    assert ("final_eval" in trainer.calls) is second_validation
    if not second_validation:  # the checkpoints are still finalised as Ultralytics does
        assert stripped == ["last.pt", "best.pt"]


@pytest.mark.slow
def test_fine_tune_validates_once_and_writes_the_same_weights(tmp_path, monkeypatch):
    import torch
    from ultralytics.engine.validator import BaseValidator

    from workbench import train as train_module
    from workbench.config import RunConfig
    from workbench.data.prepare import prepare_dataset

    cfg = RunConfig(
        model=str(CHECKPOINT), imgsz=[128], synth_preset="easy", synth_train=8, synth_val=16,
        synth_imgsz=160, epochs=1, train_imgsz=160, batch=4,
    )  # fmt: skip
    dataset = prepare_dataset(cfg, progress=False)
    calls = []
    validator_call = BaseValidator.__call__

    def counted(self, *args, **kwargs):
        calls.append(1)
        return validator_call(self, *args, **kwargs)

    monkeypatch.setattr(BaseValidator, "__call__", counted)
    once = train_module.train_from_config(cfg, dataset.data_yaml, CHECKPOINT, tmp_path / "once")
    assert len(calls) == 1
    calls.clear()
    monkeypatch.setattr(train_module, "_validating_once", lambda trainer: trainer)  # Ultralytics' own
    twice = train_module.train_from_config(cfg, dataset.data_yaml, CHECKPOINT, tmp_path / "twice")
    assert len(calls) == 2

    a, b = (torch.load(r.weights, map_location="cpu", weights_only=False) for r in (once, twice))
    assert a["optimizer"] is None and b["optimizer"] is None  # both stripped
    sa, sb = a["model"].state_dict(), b["model"].state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    # the kept metrics are of the fp32 EMA, rounded to 5 digits; best.pt holds it in fp16
    assert twice.map50_95 > 0.2 and once.map50_95 == pytest.approx(twice.map50_95, abs=1e-3)

"""One image, several model files: ground truth and each file's keypoints drawn side by side.

What a reader sees in the tour: the same real photo through the fp32 and the int8 file, with each
person's OKS against the ground truth, so "int8 loses 0.09 AP" becomes visible joints.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from workbench.data.coco import COCO_SKELETON, load_coco
from workbench.data.images import load_image
from workbench.metrics.oks import oks


def _draw_people(ax, keypoints: np.ndarray, colour: str) -> None:
    for person in keypoints:
        seen = person[:, 2] > 0.5
        for a, b in np.array(COCO_SKELETON) - 1:  # COCO numbers keypoints from 1
            if seen[a] and seen[b]:
                ax.plot(person[[a, b], 0], person[[a, b], 1], color=colour, linewidth=1.5)
        ax.scatter(person[seen, 0], person[seen, 1], s=9, color=colour, zorder=3)


def keypoints_side_by_side(
    models: Mapping[str, str | Path],
    ann: str | Path,
    images: str | Path,
    image_id: int,
    conf: float = 0.25,
) -> Figure:
    """Ground truth, then each model's detections (``conf`` and up) on one COCO image.

    Each panel's title gives the mean OKS of its best match per ground-truth person.
    """
    from workbench.decode import decode
    from workbench.runtime import TFLiteModel, read_tflite_metadata

    dataset = load_coco(ann, images, task="pose")
    entry = dataset.image_by_id[image_id]
    image = load_image(dataset.image_path(entry))
    people = [a for a in dataset.annotations_by_image[image_id] if a.get("num_keypoints", 0) > 0]
    truth = np.array([a["keypoints"] for a in people], dtype=np.float64).reshape(len(people), 17, 3)
    fig = Figure(figsize=(4.2 * (len(models) + 1), 4.6))
    panels = fig.subplots(1, len(models) + 1)
    panels[0].imshow(image)
    _draw_people(panels[0], np.where(truth[..., 2:] > 0, truth, 0), "#2ca02c")
    panels[0].set_title(f"ground truth ({len(people)} people)")
    for ax, (label, path) in zip(panels[1:], models.items(), strict=True):
        model = TFLiteModel(path)
        (outputs, transform) = model(image)
        meta = read_tflite_metadata(path).get("workbench", {})
        det = decode(outputs, "pose", transform, conf=conf, iou=0.7, normalized=meta.get("normalized"))
        kpts = det.keypoints if det.keypoints is not None else np.zeros((0, 17, 3))
        scores = [
            max((float(oks(k, t, a["area"])) for k in kpts), default=0.0)
            for t, a in zip(truth, people, strict=True)
        ]
        ax.imshow(image)
        _draw_people(ax, kpts, "#d62728")
        ax.set_title(f"{label}: {len(det)} found, mean OKS {np.mean(scores) if scores else float('nan'):.2f}")
    for ax in panels:
        ax.axis("off")
    fig.tight_layout()
    return fig

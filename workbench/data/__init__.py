"""Datasets: COCO I/O, COCO-Person subsets, YOLO conversion, synthetic people, calibration sets."""

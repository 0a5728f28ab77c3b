"""ST's CPU-only boards of the SSD card (seed 004): every op on the CPU, latency fitted to ST's figures.

=============== ===================================================== ===========================
target          board ST measured on (seed 004)                       runtime ST names
=============== ===================================================== ===========================
``stm32h7``     STM32H747I-DISCO, 1 Cortex-M7 at 400 MHz              STM32Cube.AI 10.0.0
``stm32mp157``  STM32MP157F-DK2, 2 Cortex-A7 at 800 MHz                TFLite 2.11.0, X-LINUX-AI 5.1.0
``stm32mp135``  STM32MP135F-DK2, 1 Cortex-A7 at 1000 MHz               TFLite 2.11.0, X-LINUX-AI 5.1.0
=============== ===================================================== ===========================

The mechanism of :mod:`workbench.targets.st` (a power law in the MACs fitted to published
figures, with its leave-one-out error), fitted to ST's 3 published int8 SSD MobileNet v1 0.25
figures per board (192/224/256; MACs counted on the workbench's per-channel conversions of ST's
``.h5``, the card's files' sources). **One architecture at three sizes**: the leave-one-out error
says how well the model interpolates across input sizes of that network, nothing about other
networks (YOLOv8 runs other kernels at another MAC efficiency). ST publishes no float figure for
these boards, so a file with float MACs is refused, not extrapolated (``int8_only``).

Memory: H7's ``sram_bytes`` is the greedy arena, checked against ST's H7 "Activation RAM" (seed
004; ``benchmarks/results/targets.json``). The MP1 boards run Linux from DDR; ST publishes no RAM
figure for them.
"""

from __future__ import annotations

from workbench.targets.st import PublishedPoint, StBoardTarget

SSD_CARD = "ST's SSD MobileNet v1 0.25 card in ../shared/seeds (seed 004): int8 per-channel, 3 sizes"
SSD_MMACS = {192: 39.9, 224: 59.1, 256: 71.6}  # the .h5 conversions' MACs (tests check them)
PUBLISHED_MS = {  # seed 004: "Reference MCU / MPU inference time", int8 per-channel
    "stm32h7": {192: 149.18, 224: 218.99, 256: 267.18},
    "stm32mp157": {192: 67.80, 224: 100.20, 256: 119.00},
    "stm32mp135": {192: 95.36, 224: 139.00, 256: 168.80},
}
# published activation RAM / greedy arena on the 3 SSD conversions (benchmarks/targets.py; tests
# check the range holds)
H7_RAM_RATIO = (0.93, 0.97)
H7_SRAM = (
    "estimate: peak live activations of the .tflite (greedy arena, TFLite Micro's planner) plus a "
    "buffer per constant output (ST's I/O-allocated option); ST's published H7 activation RAM "
    f"(STM32Cube.AI, seed 004) is {H7_RAM_RATIO[0]}x to {H7_RAM_RATIO[1]}x this figure on its 3 SSD models"
)
MP1_SRAM = (
    "estimate: peak live activations of the .tflite (greedy arena, TFLite Micro's planner); ST "
    "publishes no MP1 RAM figure (DDR-based Linux board), so it is unchecked"
)
DESCRIPTIONS = {
    "stm32h7": "STM32H7 Cortex-M7 400 MHz (CPU only): latency fitted to ST's 3 SSD MobileNet figures (one network only)",
    "stm32mp157": "STM32MP157 2x Cortex-A7 800 MHz (CPU only): latency fitted to ST's 3 SSD MobileNet figures (one network only)",
    "stm32mp135": "STM32MP135 1x Cortex-A7 1 GHz (CPU only): latency fitted to ST's 3 SSD MobileNet figures (one network only)",
}


def place_cpu(graph, op, granularity: dict[int, int]) -> str:
    """Every op on the CPU: these boards have no accelerator (seed 004: "1 CPU", "2 CPU", %CPU 100)."""
    return "cpu"


def _points(board: str) -> tuple[PublishedPoint, ...]:
    return tuple(
        PublishedPoint(f"st_ssd_mobilenet_v1_025_{imgsz}_int8.tflite", ms, {"cpu": SSD_MMACS[imgsz]})
        for imgsz, ms in PUBLISHED_MS[board].items()
    )


CPU_BOARDS = tuple(
    StBoardTarget(
        board,
        DESCRIPTIONS[board],
        _points(board),
        place_cpu,
        H7_SRAM if board == "stm32h7" else MP1_SRAM,
        fitted_on=SSD_CARD,
        accelerator=False,
        int8_only=True,
        io_buffers=board == "stm32h7",
    )  # fmt: skip
    for board in PUBLISHED_MS
)

"""Accelerator presets shared by the energy and inference-cost models.

This CPU measured as a :class:`Hardware`: :func:`scalelab.simulations.calibration.cpu_hardware`.

Peaks are dense (no structured sparsity) 16-bit tensor-core throughput:
bf16 where the part supports it, fp16 tensor cores for the V100 (which has no
bf16). Bandwidth is HBM bandwidth; ``tdp_w`` is the board's maximum power.

Memory: every datasheet states capacity as "GB" (32, 40, 80, 141 GB), and HBM
capacity is built from stacks of binary size, so all presets read that number
as GiB (``n * 2**30`` bytes): the A100 80GB exposes exactly 80 GiB (81,920 MiB
in ``nvidia-smi``). Bandwidth and FLOP/s stay decimal, as the datasheets give them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Hardware:
    """One accelerator (or CPU) as the roofline model sees it."""

    name: str
    peak_flops: float  # FLOP/s, dense 16-bit tensor math (fp32 for a CPU measured here)
    bandwidth_bytes_per_s: float  # main-memory bandwidth, bytes/s
    memory_bytes: float | None  # device memory, bytes (None: unknown)
    tdp_w: float | None  # board power, watts (None: unknown, e.g. a CPU measured in a VM)
    source: str = ""

    def __post_init__(self) -> None:
        for field_name in ("peak_flops", "bandwidth_bytes_per_s", "memory_bytes", "tdp_w"):
            value = getattr(self, field_name)
            if value is None and field_name in ("memory_bytes", "tdp_w"):
                continue
            if not (isinstance(value, (int, float)) and value > 0 and value < float("inf")):
                raise ValueError(f"{field_name} must be a positive finite number, got {value!r}")



GB = 1e9
GiB = 2**30

HARDWARE: dict[str, Hardware] = {
    "v100": Hardware(
        name="NVIDIA V100 SXM2 32GB",
        peak_flops=125e12,  # fp16 tensor cores; the V100 has no bf16
        bandwidth_bytes_per_s=900 * GB,
        memory_bytes=32 * GiB,
        tdp_w=300.0,
        source="NVIDIA Tesla V100 datasheet (2017): 125 TFLOPS tensor, 900 GB/s HBM2, 300 W SXM2",
    ),
    "a100-40gb": Hardware(
        name="NVIDIA A100 SXM4 40GB",
        peak_flops=312e12,
        bandwidth_bytes_per_s=1555 * GB,
        memory_bytes=40 * GiB,
        tdp_w=400.0,
        source="NVIDIA A100 Tensor Core GPU datasheet (2020): 312 TFLOPS bf16 dense, 1,555 GB/s, 400 W",
    ),
    "a100-80gb": Hardware(
        name="NVIDIA A100 SXM4 80GB",
        peak_flops=312e12,
        bandwidth_bytes_per_s=2039 * GB,
        memory_bytes=80 * GiB,
        tdp_w=400.0,
        source="NVIDIA A100 Tensor Core GPU datasheet (2021): 312 TFLOPS bf16 dense, 2,039 GB/s, 400 W",
    ),
    "h100-sxm": Hardware(
        name="NVIDIA H100 SXM5 80GB",
        peak_flops=989e12,
        bandwidth_bytes_per_s=3350 * GB,
        memory_bytes=80 * GiB,
        tdp_w=700.0,
        source="NVIDIA H100 Tensor Core GPU datasheet: 989 TFLOPS bf16 dense (1,979 with sparsity), 3.35 TB/s, 700 W",
    ),
    "h200": Hardware(
        name="NVIDIA H200 SXM 141GB",
        peak_flops=989e12,
        bandwidth_bytes_per_s=4800 * GB,
        memory_bytes=141 * GiB,
        tdp_w=700.0,
        source="NVIDIA H200 Tensor Core GPU datasheet: 989 TFLOPS bf16 dense, 4.8 TB/s, 141 GB HBM3e, up to 700 W",
    ),
}

#: Short names accepted wherever a preset is looked up by name.
ALIASES = {"a100": "a100-80gb", "h100": "h100-sxm", "v100-sxm2": "v100"}


def get_hardware(name: str | Hardware) -> Hardware:
    """Return the preset called ``name`` (or an alias such as ``"h100"``); ``Hardware`` passes through."""
    if isinstance(name, Hardware):
        return name
    if not isinstance(name, str):
        raise TypeError(f"hardware must be a preset name or a Hardware, got {type(name).__name__}")
    key = ALIASES.get(name.lower(), name.lower())
    if key not in HARDWARE:
        known = ", ".join(sorted(HARDWARE) + sorted(ALIASES))
        raise ValueError(f"unknown hardware {name!r}; known: {known}")
    return HARDWARE[key]

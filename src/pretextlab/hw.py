"""What this machine does best, measured rather than assumed: device, threads, precision, layout."""

from __future__ import annotations

import os
import time
from functools import lru_cache

import torch

from .dist import local_world_size


def available_cores() -> int:
    """Cores this process may actually use (cgroup/affinity aware, unlike os.cpu_count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS
        return max(1, os.cpu_count() or 1)


def setup_threads() -> int:
    """PRETEXTLAB_THREADS, else this machine's cores shared by the processes torchrun started on it."""
    env = os.environ.get("PRETEXTLAB_THREADS", "")
    n = int(env) if env.isdigit() and int(env) > 0 else max(1, available_cores() // local_world_size())
    torch.set_num_threads(n)
    return n


def pick_device(name: str = "auto") -> torch.device:
    """CUDA when present (auto), else the CPU; on CUDA, let cuDNN and matmuls pick their fastest kernels."""
    import re

    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", name):
        from .errors import UserError

        raise UserError(f"--device {name} is unknown; use auto, cpu or cuda (cuda:N for one GPU of several)")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        from .errors import UserError

        raise UserError(f"--device {name} asked for, but no CUDA GPU is visible; use --device auto or cpu")
    device = torch.device(name)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # input shapes repeat every step: tune convolutions once
        torch.set_float32_matmul_precision("high")  # TF32 for what autocast leaves in fp32
    return device


def cpu_capability() -> str:
    return torch.backends.cpu.get_cpu_capability()


@lru_cache(maxsize=None)
def cpu_bf16_speedup() -> float:
    """Ratio of bf16 to fp32 matmul throughput on this CPU (>1 means bf16 is faster).

    Only CPUs with native bf16 (AVX512-BF16 / AMX) run it faster; elsewhere it is emulated and
    several times slower, so `--precision auto` measures instead of trusting a flag.
    """
    native = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    if not torch.backends.mkldnn.is_available() or not native():
        return 0.0
    n = 1024

    def rate(dtype: torch.dtype) -> float:
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        a @ b
        t = time.perf_counter()
        for _ in range(3):
            a @ b
        return 3 / (time.perf_counter() - t)

    return rate(torch.bfloat16) / rate(torch.float32)


def pick_precision(name: str, device: torch.device) -> str:
    """'fp32', 'bf16' or 'fp16'. auto: bf16/fp16 on CUDA; bf16 on CPU only when measured faster."""
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_bf16_speedup() > 1.2 else "fp32"


def autocast(device: torch.device, precision: str):
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def machine_info() -> dict:
    import platform

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        "cpu_capability": cpu_capability(),
        "cores": available_cores(),
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    for mod in ("torchvision", "torchmetrics", "numpy", "matplotlib", "tensorboard"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:
            pass
    return info


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor()

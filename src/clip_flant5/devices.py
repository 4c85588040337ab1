"""What a job actually got from the scheduler: GPU count and names, a matmul on each device, nvidia-smi.

The `gpu_smoke` workflow target runs this with a training job's resources before any long job is queued: a
site whose GPU request ends up as several one-GPU copies of the job (the slurm plugin's known bug when
`tasks_per_gpu` is not 0), or with no CUDA build of torch in the job's environment, fails here in a minute
rather than after days in the queue.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess

from .errors import UserError

# Environment variables that tell how the scheduler placed the job.
SCHEDULER_VARIABLES = (
    "CUDA_VISIBLE_DEVICES",
    "SLURM_JOB_ID",
    "SLURM_JOB_NODELIST",
    "SLURM_NNODES",
    "SLURM_NTASKS",
    "SLURM_PROCID",
    "SLURM_GPUS_ON_NODE",
    "SLURM_CPUS_PER_GPU",
)


class DeviceCheckError(UserError):
    pass


def nvidia_smi() -> str | None:
    """`nvidia-smi -L` output, or None where the tool is not installed."""
    if shutil.which("nvidia-smi") is None:
        return None
    result = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60)
    return (result.stdout + result.stderr).strip()


def check_devices(expected_gpus: int) -> dict:
    """Report the visible devices and run a small matmul on each; raise if the count is not `expected_gpus`."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    devices = []
    for index in range(count):
        with torch.cuda.device(index):
            a = torch.randn(1024, 1024, device="cuda")
            checksum = float((a @ a.T).trace())
        devices.append({"index": index, "name": torch.cuda.get_device_name(index), "matmul_trace": checksum})
    report = {
        "host": socket.gethostname(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "expected_gpus": expected_gpus,
        "visible_gpus": count,
        "devices": devices,
        "nvidia_smi": nvidia_smi(),
        "environment": {name: os.environ[name] for name in SCHEDULER_VARIABLES if name in os.environ},
    }
    if count != expected_gpus:
        hint = (
            "torch has no CUDA build in this environment (install the CUDA wheel, or set CONDA_OVERRIDE_CUDA "
            "when conda builds the env on a CPU login node)"
            if torch.version.cuda is None and expected_gpus
            else "check the job's GPU request (resources gpu/gres, tasks_per_gpu: 0) and CUDA_VISIBLE_DEVICES"
        )
        raise DeviceCheckError(
            f"expected {expected_gpus} GPU(s) on {report['host']}, torch sees {count} "
            f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')}): {hint}"
        )
    return report

"""What a training or scoring job asks a cluster for, and how it starts its processes.

A config `resources` block (`gpus` per node, `nodes`, `cpus_per_gpu` or `cpus`, `runtime` in minutes, `mem_mb`
per node) becomes the Slurm executor plugin's resources, the job's threads, and its launch line: one plain process
on CPU, `torchrun --standalone` on one node, `srun` + `torchrun` with a c10d rendezvous on several. The workflow
(rules/common.smk) asks these functions; they know nothing of Snakemake.
"""

from __future__ import annotations

from .errors import UserError

# Every resource a job may declare; a job leaves out (None) those that do not apply to it.
RESOURCE_KEYS = ("gpu", "gres", "nodes", "tasks", "mpi", "tasks_per_gpu", "cpus_per_gpu", "runtime", "mem_mb")
# Snakemake cannot leave these unset for some jobs of a rule and set for others.
ALL_OR_NONE = ("runtime", "mem_mb")
RENDEZVOUS_PORT = 29500  # torchrun's c10d port on the first node of a multi-node job (CLIP_FLANT5_RDZV_PORT overrides)
SMOKE_RUNTIME_MINUTES = 10  # the GPU check runs with a training job's resources but this time limit
CPU_LAUNCH = "DS_ACCELERATOR=cpu python -m clip_flant5"


def slurm_resources(spec: dict) -> dict:
    """The slurm executor plugin's resources for a config `resources` block (None: not declared).

    One node: `gpu` (the plugin's total, --gpus) and one task; `tasks_per_gpu: 0` stops the plugin from starting
    one copy of the job per GPU (its issues 316/459). Several nodes: one launcher task per node (`mpi: srun`,
    `tasks` = nodes, `gres` per node); the job's command starts torchrun on each node itself. Keys the config
    leaves unset (runtime, mem_mb, cpus_per_gpu) are left to the partition's defaults.
    """
    gpus, nodes = spec.get("gpus", 0), spec.get("nodes", 1)
    resources = {"nodes": nodes, "runtime": spec.get("runtime"), "mem_mb": spec.get("mem_mb")}
    if gpus:
        resources.update(cpus_per_gpu=spec.get("cpus_per_gpu"), tasks_per_gpu=0)
        if nodes > 1:
            resources.update(mpi="srun", tasks=nodes, gres=f"gpu:{gpus}")
        else:
            resources["gpu"] = gpus
    return resources


def declared_keys(blocks: dict[str, dict]) -> list[str]:
    """The resources a rule declares whose jobs use one of `blocks` (config key -> block): those some block sets,
    so a rule without them keeps the profile's default-resources. `runtime`/`mem_mb`: every block or none."""
    keys = {key for block in blocks.values() for key, value in slurm_resources(block).items() if value is not None}
    for key in ALL_OR_NONE:
        unset = [name for name, block in blocks.items() if key not in block]
        if key in keys and unset:
            raise UserError(
                f"config: `{key}` is set in some resources blocks but not in {', '.join(unset)}: "
                "set it in every one (or in none, to use the profile's default-resources)"
            )
    return [key for key in RESOURCE_KEYS if key in keys]


def job_threads(spec: dict, cores: int) -> int:
    """Threads of a job (torch splits them among the job's processes on a node).

    A GPU job gets its CPUs from Slurm as `cpus_per_gpu` x GPUs (one mechanism: the plugin then passes
    --cpus-per-gpu, never --cpus-per-task with it); without `cpus_per_gpu`, one. A CPU job: `cpus`, else `cores`
    (the cores given to Snakemake: the demo's `snakemake --cores 2`).
    """
    gpus = spec.get("gpus", 0)
    if gpus:
        return gpus * spec["cpus_per_gpu"] if "cpus_per_gpu" in spec else 1
    return spec.get("cpus", cores)


def node_step(spec: dict) -> str:
    """srun of one task per node of a multi-node job, with the node's GPUs and CPUs (a step gets neither by
    default: its task would be pinned to one CPU)."""
    nodes, gpus = spec["nodes"], spec["gpus"]
    step = f"srun --nodes={nodes} --ntasks={nodes} --ntasks-per-node=1 --gres=gpu:{gpus} --kill-on-bad-exit=1"
    if "cpus_per_gpu" in spec:
        step += f" --cpus-per-task={spec['cpus_per_gpu'] * gpus}"
    return step


def launch_command(spec: dict) -> str:
    """How a training job starts `python -m clip_flant5`: one process per GPU over its nodes, or one on CPU."""
    gpus, nodes = spec.get("gpus", 0), spec.get("nodes", 1)
    if gpus == 0:
        return CPU_LAUNCH
    if nodes == 1:
        return f"torchrun --standalone --nproc_per_node={gpus} --module clip_flant5"
    # The rendezvous host is the job's first node, resolved by the batch script (running there) before srun
    # starts the per-node tasks, so all of them get the same endpoint.
    first_host = '$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)'
    return (
        f"{node_step(spec)} torchrun --nnodes={nodes} --nproc_per_node={gpus} --rdzv_id=$SLURM_JOB_ID "
        f"--rdzv_backend=c10d --rdzv_endpoint={first_host}:${{CLIP_FLANT5_RDZV_PORT:-{RENDEZVOUS_PORT}}} "
        "--module clip_flant5"
    )


def smoke_spec(spec: dict) -> dict:
    """A training job's resources with the GPU check's short time limit."""
    return spec | {"runtime": SMOKE_RUNTIME_MINUTES}


def device_check_command(spec: dict) -> str:
    """check-devices on every node of the job (one task each), then once more for the report."""
    check = f"clip-flant5 check-devices --expect-gpus {spec.get('gpus', 0)}"
    if spec.get("nodes", 1) == 1:
        return check
    return f"{node_step(spec)} {check} && {check}"

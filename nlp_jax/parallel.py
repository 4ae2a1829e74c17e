"""Device mesh, logical-axis rules, batch placement and multi-host start-up.

Parameters are annotated with logical axis names in the model (`embed`, `heads`, `mlp`, ...).
`config.mesh.rules` maps each name to a mesh axis, so data parallel, FSDP and tensor parallel are
config changes:

    data parallel    mesh.data=-1                         (everything replicated, batch split)
    FSDP             mesh.fsdp=-1   (`embed` -> fsdp: params and optimizer state sharded)
    tensor parallel  mesh.tensor=N  (`heads`, `mlp`, `vocab` -> tensor)

The batch is split over `data` and `fsdp` together. XLA (GSPMD) inserts the collectives.
"""
from __future__ import annotations

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

# logical axis -> mesh axis (None: replicated). `embed_out` is the second hidden-size axis of a
# square [hidden, hidden] kernel: a tensor cannot be split twice over the same mesh axis.
DEFAULT_RULES = (
    ("embed", "fsdp"),
    ("embed_out", None),
    ("heads", "tensor"),
    ("kv", None),
    ("mlp", "tensor"),
    ("vocab", "tensor"),
    ("norm", None),
)


def initialize_distributed(coordinator_address=None, num_processes=None, process_id=None):
    """Starts JAX's multi-controller runtime: one Python process per host.

    With no arguments JAX detects the cluster itself where it can (Cloud TPU, SLURM, ...)."""
    kwargs = dict(coordinator_address=coordinator_address, num_processes=num_processes,
                  process_id=process_id)
    jax.distributed.initialize(**{k: v for k, v in kwargs.items() if v is not None})


def make_mesh(mesh_cfg, devices=None) -> jax.sharding.Mesh:
    """A (data, fsdp, tensor) mesh from `config.mesh`; one axis may be -1 (all remaining devices).

    `devices` defaults to all devices of all processes."""
    n = len(devices) if devices is not None else jax.device_count()
    shape = [int(mesh_cfg.get(a, 1)) for a in MESH_AXES]
    if shape.count(-1) > 1:
        raise ValueError(f"mesh: at most one of {MESH_AXES} may be -1, got {shape}")
    if -1 in shape:
        known = int(np.prod([s for s in shape if s != -1]))
        if n % known:
            raise ValueError(f"mesh: {n} devices cannot be split by {shape}; "
                             f"make the product of the fixed axes divide {n}")
        shape[shape.index(-1)] = n // known
    if int(np.prod(shape)) != n:
        raise ValueError(f"mesh: data*fsdp*tensor = {int(np.prod(shape))} but there are {n} devices; "
                         "set the axes so their product is the device count (or one of them to -1)")
    return jax.make_mesh(tuple(shape), MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES),
                         devices=devices)


def rules_from_config(mesh_cfg) -> dict:
    rules = dict(DEFAULT_RULES)
    rules.update(dict(mesh_cfg.get("rules", ()) or ()))
    return rules


def logical_to_mesh(spec: P, shape, mesh, rules: dict) -> P:
    """Maps a PartitionSpec of logical names to mesh axes.

    An axis whose size the mesh axis does not divide stays replicated (e.g. a 2-way NSP head on a
    4-way tensor axis), as does a mesh axis already used by an earlier dimension."""
    out, used = [], set()
    for name, size in zip(tuple(spec) + (None,) * (len(shape) - len(spec)), shape):
        axis = rules.get(name) if name is not None else None
        if axis is None or axis in used or size % mesh.shape[axis]:
            out.append(None)
        else:
            out.append(axis)
            used.add(axis)
    return P(*out)


def param_shardings(abstract_state, mesh, rules: dict):
    """NamedShardings for an nnx.State of abstract Params, as a pure dict like `to_pure_dict()`."""
    from flax import nnx  # imported here so this module stays light for data-only users

    specs = nnx.to_pure_dict(nnx.get_partition_spec(abstract_state))
    shapes = nnx.to_pure_dict(abstract_state)
    return jax.tree.map(
        lambda spec, x: NamedSharding(mesh, logical_to_mesh(spec, x.shape, mesh, rules)),
        specs, shapes, is_leaf=lambda s: isinstance(s, P))


def batch_sharding(mesh, stacked: bool = False) -> NamedSharding:
    """Batch dimension split over data and fsdp, the rest replicated. stacked: the batch dimension
    is the second, after a leading steps axis (train.steps_per_execution)."""
    return NamedSharding(mesh, P(None, BATCH_AXES) if stacked else P(BATCH_AXES))


def replicated(mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def global_batch(local_batch: dict, mesh, stacked: bool = False) -> dict:
    """This process's rows of a batch (numpy) -> global jax.Arrays laid out along the batch axes."""
    sharding = batch_sharding(mesh, stacked)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
            for k, v in local_batch.items()}

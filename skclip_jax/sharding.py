"""Device mesh, parameter and batch shardings, and global batches assembled from per-process data.

One mesh with axes ("data", "fsdp"). The batch is split over both axes (every device holds different clips);
parameters are replicated or, for large leaves when asked, split on "fsdp" so a BERT-base and its Adam moments fit.
"""

import math
from collections.abc import Mapping, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

MESH_AXES = ("data", "fsdp")
BATCH_AXES = ("data", "fsdp")
# Leaves smaller than this stay replicated: splitting them saves nothing and costs a collective.
MIN_SHARDED_SIZE = 2**14


def resolve_mesh_shape(mesh_shape: Sequence[int], num_devices: int) -> tuple[int, int]:
    """Fills one -1 in (data, fsdp) so the product is num_devices; raises with the numbers when it can't."""
    shape = [int(s) for s in mesh_shape]
    if len(shape) != 2:
        raise ValueError(f"mesh_shape must have 2 entries (data, fsdp), got {tuple(mesh_shape)}")
    if shape.count(-1) > 1 or any(s == 0 or s < -1 for s in shape):
        raise ValueError(f"mesh_shape {tuple(mesh_shape)}: use positive sizes and at most one -1")
    if -1 in shape:
        known = math.prod(s for s in shape if s != -1)
        if num_devices % known:
            raise ValueError(
                f"mesh_shape {tuple(mesh_shape)} does not divide the {num_devices} devices"
            )
        shape[shape.index(-1)] = num_devices // known
    if math.prod(shape) != num_devices:
        raise ValueError(
            f"mesh_shape {tuple(shape)} uses {math.prod(shape)} devices but {num_devices} are present; "
            "set --config.mesh_shape so that data * fsdp equals the device count (or use -1)."
        )
    return shape[0], shape[1]


def make_mesh(
    mesh_shape: Sequence[int] = (-1, 1), devices: Sequence[jax.Device] | None = None
) -> Mesh:
    """A ("data", "fsdp") mesh over all devices, with Auto axes (Explicit axes break HF BERT's embedding gather)."""
    devices = list(devices) if devices is not None else jax.devices()
    shape = resolve_mesh_shape(mesh_shape, len(devices))
    return jax.make_mesh(
        shape, MESH_AXES, axis_types=(AxisType.Auto, AxisType.Auto), devices=devices
    )


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over every device of the mesh."""
    return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def fsdp_spec(shape: Sequence[int], fsdp_size: int) -> P:
    """Splits the largest axis divisible by fsdp_size on "fsdp"; small or indivisible leaves stay replicated."""
    if fsdp_size <= 1 or math.prod(shape) < MIN_SHARDED_SIZE:
        return P()
    for axis in sorted(range(len(shape)), key=lambda a: -shape[a]):
        if shape[axis] % fsdp_size == 0:
            spec = [None] * len(shape)
            spec[axis] = "fsdp"
            return P(*spec)
    return P()


def state_shardings(mesh: Mesh, abstract_state, shard_params: bool):
    """NamedShardings for every leaf of a (abstract) train state: fsdp-split when asked, else replicated."""
    fsdp_size = mesh.shape["fsdp"]

    def leaf_sharding(leaf):
        shape = getattr(leaf, "shape", ())
        spec = fsdp_spec(shape, fsdp_size) if shard_params else P()
        return NamedSharding(mesh, spec)

    return jax.tree.map(leaf_sharding, abstract_state)


def check_batch_divisible(global_batch: int, mesh: Mesh, what: str = "batch_size") -> None:
    """Refuses a global batch that the devices and processes cannot split evenly, naming the numbers."""
    devices = mesh.devices.size
    if global_batch % devices:
        raise ValueError(
            f"{what}={global_batch} is not divisible by the {devices} devices of the mesh "
            f"{dict(mesh.shape)}; pick a multiple of {devices}."
        )
    if global_batch % jax.process_count():
        raise ValueError(
            f"{what}={global_batch} is not divisible by the {jax.process_count()} processes."
        )


def make_global_batch(mesh: Mesh, local_batch: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
    """Turns this process's slice of the global batch into global arrays split over the mesh."""
    sharding = batch_sharding(mesh)
    return {
        k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
        for k, v in local_batch.items()
    }


def with_shardings(abstract_tree, shardings):
    """ShapeDtypeStructs carrying shardings: a restore target that lands every leaf where it belongs."""
    return jax.tree.map(
        lambda leaf, s: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=s),
        abstract_tree,
        shardings,
    )

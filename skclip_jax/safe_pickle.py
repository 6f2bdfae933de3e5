"""Reads PYSKL pickles without running code from them: a pickle is a program, and a downloaded one may be hostile.

`pickle.load` imports and calls whatever global a file names (`os.system`, `builtins.exec`, ...). PYSKL
annotation files hold only builtin containers and scalars, NumPy arrays, dtypes and scalars, so `load` admits
the globals that rebuild those (`ALLOWED`) and refuses any other in one line naming the file and the global,
before it is imported or called. `predict` and `data_prep.pyskl` read pickles through it.
"""

from __future__ import annotations

import _compat_pickle
import os
import pickle
from typing import Any

# (module, name) pairs a PYSKL file may name. NumPy 1.x pickles say numpy.core, NumPy 2.x numpy._core;
# _frombuffer rebuilds arrays pickled with protocol 5 (pickle.HIGHEST_PROTOCOL, as data_prep.video writes
# them), _codecs.encode the bytes of protocol-2 pickles. Each only builds data from data: no global that
# reads attributes, imports, opens files or evaluates text (getattr, eval, os.*, subprocess.*) is here.
ALLOWED = frozenset(
    [
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        *(
            (f"numpy.{core}.{module}", name)
            for core in ("core", "_core")
            for module, name in (
                ("multiarray", "_reconstruct"),
                ("multiarray", "scalar"),
                ("numeric", "_frombuffer"),
            )
        ),
        ("_codecs", "encode"),
        ("collections", "OrderedDict"),
        ("collections", "defaultdict"),
        # Containers and scalar types (also a defaultdict's factory): calling them builds data only.
        *(
            ("builtins", name)
            for name in (
                "set",
                "frozenset",
                "list",
                "dict",
                "tuple",
                "int",
                "float",
                "complex",
                "str",
                "bytes",
                "bytearray",
                "bool",
                "slice",
            )
        ),
    ]
)
# NumPy 2 reads numpy.core through a deprecation shim; the pickles name the same functions.
_RENAMED = {
    "numpy.core.multiarray": "numpy._core.multiarray",
    "numpy.core.numeric": "numpy._core.numeric",
}


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle names a global that a PYSKL file never holds: refused, nothing of it was run."""


class _PysklUnpickler(pickle.Unpickler):
    """An Unpickler whose only importable globals are ALLOWED."""

    def __init__(self, file, path: str):
        super().__init__(file)
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        # Protocols 0-2 name Python 2's modules (__builtin__.list), which pickle maps to Python 3's.
        key = _compat_pickle.NAME_MAPPING.get((module, name))
        key = key or (_compat_pickle.IMPORT_MAPPING.get(module, module), name)
        if key != (module, name) and key in ALLOWED:
            return super().find_class(module, name)
        if (module, name) not in ALLOWED:
            raise UnsafePickleError(
                f"{self._path}: refused global {module}.{name}: a PYSKL pickle holds only containers, "
                "numbers, strings and NumPy arrays, so this file may run code; it was not loaded"
            )
        if module in _RENAMED:
            try:
                return super().find_class(_RENAMED[module], name)
            except (ImportError, AttributeError):
                pass  # NumPy 1.x: the name as written
        return super().find_class(module, name)


def load(path: str | os.PathLike) -> Any:
    """The object pickled in `path`, built from allowed globals only.

    Raises:
      UnsafePickleError: the file names any other global (the message names the file and the global).
      OSError, pickle.UnpicklingError, EOFError, ...: as `pickle.load` for unreadable or truncated files.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        return _PysklUnpickler(f, path).load()

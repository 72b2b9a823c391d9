"""The tensors of a TorchScript archive (OpenAI's CLIP releases are such archives), read without running any of it.

`torch.jit.load` compiles the archive's `code/` and calls the `__setstate__` methods it defines, so a
crafted archive runs whatever its author wrote. This reader never compiles or calls anything from the
file: the archive is a zip of a pickle (`data.pkl`, the module tree) and raw tensor storages
(`data/N`), and the pickle is read by an unpickler that knows exactly these things:

- tensors, rebuilt from their storages after checking that the declared sizes fit the stored bytes;
- TorchScript module objects (`__torch__.*` classes), kept as inert attribute holders;
- plain containers and values (dicts, lists, tuples, numbers, strings).

Anything else in the pickle (another class, a function, an object whose state only code can restore,
which is what `__setstate__` is for) is refused with a one-line `UserInputError`.
"""

from __future__ import annotations

import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path, PurePosixPath

import torch

from medclip_ad.errors import UserInputError
from medclip_ad.limits import MAX_ARCHIVE_PICKLE_BYTES, MAX_NESTING_DEPTH

# The storage classes TorchScript names in its pickles, and the dtype of each.
STORAGE_DTYPES: dict[str, torch.dtype] = {
    "FloatStorage": torch.float32, "HalfStorage": torch.float16, "BFloat16Storage": torch.bfloat16,
    "DoubleStorage": torch.float64, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}
TORCHSCRIPT_PREFIX = "__torch__"
# What TorchScript's own classes are called in a pickle: C++ custom classes run native code when built.
_CUSTOM_CLASS_PREFIX = "__torch__.torch.classes"


class ArchiveRefused(Exception):
    """Something in the archive that only code could rebuild; the message says what."""


class ScriptObject:
    """A TorchScript module or object from the pickle: its attributes, nothing that can run."""

    def __init__(self, qualified_name: str) -> None:
        self.qualified_name = qualified_name
        self.attributes: dict[str, object] = {}

    def __setstate__(self, state: object) -> None:
        if not isinstance(state, dict):
            raise ArchiveRefused(f"{self.qualified_name} restores its state with code (__setstate__)")
        self.attributes = dict(state)


def is_torchscript_archive(path: Path) -> bool:
    """A zip holding TorchScript code or constants (what `torch.jit.save` writes), by its member names."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("constants.pkl") or "/code/" in name for name in archive.namelist())


def read_torchscript_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the archive's module tree under its dotted attribute name (`visual.conv1.weight`)."""
    try:
        with zipfile.ZipFile(path) as archive:
            root = _archive_root(archive)
            _refuse_setstate_code(archive, root)
            tree = _ArchiveUnpickler(archive, root).load_data()
    except ArchiveRefused as refusal:
        raise UserInputError(f"{path}: refused TorchScript archive: {refusal}; it may only hold tensors and "
                             "plain values") from None
    except (zipfile.BadZipFile, pickle.UnpicklingError, EOFError, ValueError, KeyError, TypeError,
            RecursionError) as error:
        raise UserInputError(f"{path}: not a readable TorchScript archive ({type(error).__name__}: "
                             f"{str(error).splitlines()[0][:160] if str(error) else 'no detail'})") from None
    tensors: dict[str, torch.Tensor] = {}
    _collect_tensors(tree, "", tensors, set(), 0)
    return tensors


def _archive_root(archive: zipfile.ZipFile) -> str:
    """The archive's single top-level folder, under which `data.pkl` lies."""
    roots = {PurePosixPath(name).parts[0] for name in archive.namelist() if PurePosixPath(name).parts}
    candidates = [root for root in roots if f"{root}/data.pkl" in archive.namelist()]
    if len(candidates) != 1:
        raise ArchiveRefused("no single data.pkl at the top of the archive")
    return candidates[0]


def _refuse_setstate_code(archive: zipfile.ZipFile, root: str) -> None:
    """`torch.jit.load` would run these methods; their presence marks an archive that is more than weights."""
    for info in archive.infolist():
        if info.filename.startswith(f"{root}/code/") and info.filename.endswith(".py"):
            if info.file_size > MAX_ARCHIVE_PICKLE_BYTES:
                raise ArchiveRefused(f"code file {info.filename} is {info.file_size:,} bytes")
            if b"def __setstate__" in archive.read(info):
                raise ArchiveRefused(f"{info.filename} defines __setstate__, code that would run on loading")


class _ArchiveUnpickler(pickle.Unpickler):
    """Resolves only tensor rebuilding, storages, OrderedDict and TorchScript object names."""

    def __init__(self, archive: zipfile.ZipFile, root: str) -> None:
        self._archive, self._root = archive, root
        info = self._member(f"{root}/data.pkl")
        if info.file_size > MAX_ARCHIVE_PICKLE_BYTES:
            raise ArchiveRefused(f"data.pkl is {info.file_size:,} bytes, the limit is {MAX_ARCHIVE_PICKLE_BYTES:,}")
        self._file = archive.open(info)
        super().__init__(self._file)
        self._storages: dict[str, torch.Tensor] = {}

    def load_data(self) -> object:
        with self._file:
            return self.load()

    def find_class(self, module: str, name: str) -> object:
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if module == "torch" and name in STORAGE_DTYPES:
            return STORAGE_DTYPES[name]
        if module == "torch.jit._pickle" and name in _PICKLE_IDENTITIES:
            return _PICKLE_IDENTITIES[name]
        if (module == TORCHSCRIPT_PREFIX or module.startswith(f"{TORCHSCRIPT_PREFIX}.")) \
                and not module.startswith(_CUSTOM_CLASS_PREFIX):
            return _script_class(f"{module}.{name}")
        raise ArchiveRefused(f"names {module}.{name}, which is not a tensor or a plain value")

    def persistent_load(self, pid: object) -> torch.Tensor:
        """A storage reference ('storage', dtype, key, location, numel) becomes a flat tensor of its bytes."""
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], torch.dtype)):
            raise ArchiveRefused(f"unknown persistent reference {str(pid)[:80]}")
        _, dtype, key, _, numel = pid
        key = str(key)
        if key not in self._storages:
            self._storages[key] = self._read_storage(key, dtype, int(numel))
        return self._storages[key]

    def _read_storage(self, key: str, dtype: torch.dtype, numel: int) -> torch.Tensor:
        """The storage's bytes, after checking its declared size against the stored member."""
        info = self._member(f"{self._root}/data/{key}")
        expected = numel * torch.empty((), dtype=dtype).element_size()
        if info.compress_type != zipfile.ZIP_STORED or info.file_size != expected:
            raise ArchiveRefused(f"storage {key} declares {expected:,} bytes, the archive stores "
                                 f"{info.file_size:,} (compressed: {info.compress_type != zipfile.ZIP_STORED})")
        data = bytearray(self._archive.read(info))
        if len(data) != expected:
            raise ArchiveRefused(f"storage {key} is cut short")
        return torch.frombuffer(data, dtype=dtype) if expected else torch.empty(0, dtype=dtype)

    def _member(self, name: str) -> zipfile.ZipInfo:
        try:
            return self._archive.getinfo(name)
        except KeyError:
            raise ArchiveRefused(f"{name} is missing") from None


def _rebuild_tensor(storage: torch.Tensor, offset: int, size: tuple, stride: tuple, *_: object) -> torch.Tensor:
    """A tensor view of a storage, refused when the declared shape reaches past the storage's end."""
    if not isinstance(storage, torch.Tensor) or storage.dim() != 1:
        raise ArchiveRefused("a tensor is not built on a stored storage")
    size, stride = tuple(int(n) for n in size), tuple(int(n) for n in stride)
    if len(size) != len(stride) or offset < 0 or any(n < 0 for n in size + stride):
        raise ArchiveRefused(f"a tensor has an invalid layout (size {size}, stride {stride}, offset {offset})")
    if all(size):
        last = offset + sum((n - 1) * step for n, step in zip(size, stride))
        if last >= storage.numel():
            raise ArchiveRefused(f"a tensor of size {size} reaches past its storage of {storage.numel():,} values")
    return storage.as_strided(size, stride, offset)


def _identity(value: object, *_: object) -> object:
    return value


# TorchScript pickles typed lists and tagged containers through these helpers; each only returns its input.
_PICKLE_IDENTITIES = {name: _identity for name in ("restore_type_tag", "build_intlist", "build_floatlist",
                                                   "build_boollist", "build_tensorlist", "build_doublelist")}


def _script_class(qualified_name: str) -> type:
    """A class the unpickler can instantiate for one TorchScript type: an inert `ScriptObject`."""

    def new(cls: type, *_: object) -> ScriptObject:
        return ScriptObject(qualified_name)

    return type("ScriptType", (), {"__new__": new})


def _collect_tensors(node: object, prefix: str, out: dict[str, torch.Tensor], seen: set[int], depth: int) -> None:
    """Walk module attributes (not lists or other values) and keep the tensors under dotted names."""
    if depth > MAX_NESTING_DEPTH or id(node) in seen:
        return
    seen.add(id(node))
    for name, value in node.attributes.items() if isinstance(node, ScriptObject) else ():
        if isinstance(value, torch.Tensor):
            out[f"{prefix}{name}"] = value
        elif isinstance(value, ScriptObject):
            _collect_tensors(value, f"{prefix}{name}.", out, seen, depth + 1)

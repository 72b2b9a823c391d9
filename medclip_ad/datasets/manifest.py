"""The dataset manifest: which images (or volumes) a dataset has, their labels and their masks.

The format is AnomalyCLIP's `meta.json` (`{"train": {cls: [...]}, "test": {cls: [...]}}`, entries with
`img_path`, `mask_path`, `cls_name`, `specie_name`, `anomaly`), so manifests and the reference code's
meta files are interchangeable. Two optional keys are added: `root`, the folder the entry paths are
relative to (absolute, or relative to the manifest file), and `dataset`, the name it was prepared from.
A meta.json without `root` has its entries relative to its own folder, as the reference code assumes.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Literal

from medclip_ad.errors import UserInputError
from medclip_ad.io.json_documents import parse_json
from medclip_ad.io.atomic import atomic_write

SPLITS: tuple[str, ...] = ("train", "test")
ENTRY_KINDS: tuple[str, ...] = ("image", "volume")
ENTRY_KEYS: tuple[str, ...] = ("img_path", "mask_path", "cls_name", "specie_name", "anomaly")


@dataclass(frozen=True)
class ManifestEntry:
    """One image or volume: paths relative to the manifest root, `mask_path` "" when it has no mask."""

    img_path: str
    mask_path: str
    cls_name: str
    specie_name: str
    anomaly: int
    kind: Literal["image", "volume"] = "image"

    @property
    def has_mask(self) -> bool:
        return self.mask_path != ""

    def to_json(self) -> dict[str, object]:
        """The meta.json record; `kind` is only written for volumes so image manifests stay byte-compatible."""
        record: dict[str, object] = {"img_path": self.img_path, "mask_path": self.mask_path,
                                     "cls_name": self.cls_name, "specie_name": self.specie_name,
                                     "anomaly": self.anomaly}
        if self.kind != "image":
            record["kind"] = self.kind
        return record

    @classmethod
    def from_json(cls, record: object, where: str) -> ManifestEntry:
        """Validate one record; `where` names it (file, split, class, index) in the error message."""
        if not isinstance(record, dict):
            raise UserInputError(f"{where}: expected an object with {', '.join(ENTRY_KEYS)}")
        missing = [key for key in ENTRY_KEYS if key not in record]
        if missing:
            raise UserInputError(f"{where}: missing {', '.join(missing)}")
        anomaly = record["anomaly"]
        if anomaly not in (0, 1) or isinstance(anomaly, float):
            raise UserInputError(f"{where}: anomaly must be 0 or 1, got {anomaly!r}")
        kind = record.get("kind", "image")
        if kind not in ENTRY_KINDS:
            raise UserInputError(f"{where}: kind must be one of {', '.join(ENTRY_KINDS)}, got {kind!r}")
        text_fields = {key: record[key] for key in ENTRY_KEYS if key != "anomaly"}
        for key, value in text_fields.items():
            if not isinstance(value, str):
                raise UserInputError(f"{where}: {key} must be a string, got {value!r}")
        return cls(anomaly=int(anomaly), kind=kind, **text_fields)


def _empty_splits() -> dict[str, dict[str, list[ManifestEntry]]]:
    return {split: {} for split in SPLITS}


@dataclass
class Manifest:
    """A dataset's entries per split and class, with the absolute folder their paths are relative to."""

    root: Path
    splits: dict[str, dict[str, list[ManifestEntry]]] = field(default_factory=_empty_splits)
    dataset: str = ""

    @classmethod
    def from_entries(cls, root: Path, test: Iterable[ManifestEntry], train: Iterable[ManifestEntry] = (),
                     dataset: str = "") -> Manifest:
        """Group flat entry lists by class (first-seen order), the way layouts produce them."""
        manifest = cls(root=Path(os.path.abspath(root)), dataset=dataset)
        for split, entries in (("train", train), ("test", test)):
            for entry in entries:
                manifest.splits[split].setdefault(entry.cls_name, []).append(entry)
        return manifest

    @classmethod
    def load(cls, path: Path) -> Manifest:
        """Read a manifest or an AnomalyCLIP meta.json, reporting any malformed part as one clear line."""
        path = Path(path)
        try:
            data = parse_json(path.read_text(encoding="utf-8"), path)
        except FileNotFoundError:
            raise UserInputError(f"{path}: manifest not found") from None
        except (OSError, UnicodeDecodeError) as error:
            raise UserInputError(f"{path}: cannot read manifest ({error})") from None
        except json.JSONDecodeError as error:
            raise UserInputError(f"{path}: not valid JSON (line {error.lineno}: {error.msg})") from None
        if not isinstance(data, dict) or not isinstance(data.get("test"), dict):
            raise UserInputError(f"{path}: not a manifest (expected an object with a \"test\" object of classes)")
        root = data.get("root", ".")
        if not isinstance(root, str):
            raise UserInputError(f"{path}: root must be a string path, got {root!r}")
        dataset = data.get("dataset", "")
        manifest = cls(root=Path(os.path.abspath(path.parent / root)),
                       dataset=dataset if isinstance(dataset, str) else "")
        for split in SPLITS:
            classes = data.get(split, {})
            if not isinstance(classes, dict):
                raise UserInputError(f"{path}: \"{split}\" must be an object of classes")
            for cls_name, records in classes.items():
                if not isinstance(records, list):
                    raise UserInputError(f"{path}: {split}/{cls_name} must be a list of entries")
                manifest.splits[split][cls_name] = [
                    ManifestEntry.from_json(record, f"{path}: {split}/{cls_name}[{index}]")
                    for index, record in enumerate(records)]
        return manifest

    def save(self, path: Path) -> None:
        """Write atomically so an interrupted run never leaves half a manifest."""
        path = Path(path)
        data: dict[str, object] = {"root": self._stored_root(path)}
        if self.dataset:
            data["dataset"] = self.dataset
        for split in SPLITS:
            data[split] = {cls_name: [entry.to_json() for entry in entries]
                           for cls_name, entries in self.splits[split].items()}
        with atomic_write(path) as temporary, open(temporary, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=1)
            handle.write("\n")

    def _stored_root(self, path: Path) -> str:
        """Relative when the data lies under the manifest's folder (the tree moves as one), else absolute."""
        manifest_dir = os.path.abspath(path.parent)
        root = os.path.abspath(self.root)
        if os.path.commonpath([manifest_dir, root]) == manifest_dir:
            return Path(os.path.relpath(root, manifest_dir)).as_posix()
        return root

    def entries(self, split: str = "test") -> list[ManifestEntry]:
        """All entries of a split, class by class (AnomalyCLIP trains and evaluates on "test")."""
        return [entry for entries in self._split(split).values() for entry in entries]

    def classes(self, split: str = "test") -> list[str]:
        return list(self._split(split))

    def absolute(self, entry: ManifestEntry) -> ManifestEntry:
        """The entry with absolute paths (mask_path stays "" when there is no mask), ready to open."""
        mask_path = str(self.root / entry.mask_path) if entry.has_mask else ""
        return replace(entry, img_path=str(self.root / entry.img_path), mask_path=mask_path)

    def _split(self, split: str) -> dict[str, list[ManifestEntry]]:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        return self.splits[split]


def combine_manifests(manifests: Iterable[Manifest]) -> Manifest:
    """One manifest over several (training on several sets at once); same-named classes are concatenated.

    Paths are rewritten relative to the deepest folder the roots share, so every entry keeps pointing
    at the same file.
    """
    manifests = list(manifests)
    if not manifests:
        raise ValueError("combine_manifests needs at least one manifest")
    root = Path(os.path.commonpath([os.path.abspath(manifest.root) for manifest in manifests]))
    combined = Manifest(root=root, dataset="+".join(manifest.dataset for manifest in manifests if manifest.dataset))
    for manifest in manifests:
        for split in SPLITS:
            for cls_name, entries in manifest.splits[split].items():
                combined.splits[split].setdefault(cls_name, []).extend(
                    _rerooted(manifest.absolute(entry), root) for entry in entries)
    return combined


def _rerooted(entry: ManifestEntry, root: Path) -> ManifestEntry:
    def relative(path: str) -> str:
        return Path(os.path.relpath(path, root)).as_posix() if path else ""

    return replace(entry, img_path=relative(entry.img_path), mask_path=relative(entry.mask_path))

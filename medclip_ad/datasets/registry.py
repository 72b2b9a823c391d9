"""Every dataset `prepare-data` knows: its download layout, where it is published, and its known size.

The URLs are documentation only (nothing is ever downloaded); the counts are those of the evaluation
split as published, and a prepared dataset that differs gets a one-line warning, not an error, so
partial downloads and users' subsets still work.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from medclip_ad.datasets.industrial import mvtec, visa
from medclip_ad.datasets.labelled_images import brain_tumour_folders, headct, labelled_folders
from medclip_ad.datasets.manifest import Manifest
from medclip_ad.datasets.notices import warn_dataset
from medclip_ad.datasets.reference_meta import meta_json
from medclip_ad.datasets.segmented_images import clinicdb, colondb, colondb_endo, endo, isic2016, kvasir, tn3k
from medclip_ad.datasets.volumes import volume_folders
from medclip_ad.errors import UserInputError

LayoutBuilder = Callable[[str, Sequence[Path]], Manifest]


@dataclass(frozen=True)
class KnownCounts:
    """Size of a dataset's evaluation split as published."""

    normal: int
    anomalous: int

    @property
    def total(self) -> int:
        return self.normal + self.anomalous

    def describe(self) -> str:
        return f"{self.normal} normal + {self.anomalous} anomalous"


@dataclass(frozen=True)
class DatasetLayout:
    """How one dataset is published and how its download becomes a manifest."""

    name: str
    title: str
    source_url: str
    expected_layout: str
    build: LayoutBuilder
    counts: KnownCounts | None = None
    max_sources: int = 1


_LAYOUTS: tuple[DatasetLayout, ...] = (
    DatasetLayout("brainmri", "Brain MRI Images for Brain Tumor Detection (Kaggle)",
                  "https://www.kaggle.com/datasets/navoneel/brain-mri-images-for-brain-tumor-detection",
                  "yes/ (tumour) and no/ folders of images", brain_tumour_folders,
                  KnownCounts(normal=98, anomalous=155)),
    DatasetLayout("headct", "Head CT - hemorrhage (Kaggle)",
                  "https://www.kaggle.com/datasets/felipekitamura/head-ct-hemorrhage",
                  "labels.csv (id, hemorrhage) beside head_ct/ (or head_ct/head_ct/) of NNN.png", headct,
                  KnownCounts(normal=100, anomalous=100)),
    DatasetLayout("br35h", "Br35H :: Brain Tumor Detection 2020 (Kaggle)",
                  "https://www.kaggle.com/datasets/ahmedhamada0/brain-tumor-detection",
                  "yes/ (tumour) and no/ folders of images; pred/ is ignored", brain_tumour_folders,
                  KnownCounts(normal=1500, anomalous=1500)),
    DatasetLayout("isic2016", "ISIC 2016 challenge, Part 1 (lesion segmentation) test set",
                  "https://challenge.isic-archive.com/data/#2016",
                  "ISBI2016_ISIC_Part1_Test_Data/*.jpg, ISBI2016_ISIC_Part1_Test_GroundTruth/*_Segmentation.png",
                  isic2016, KnownCounts(normal=0, anomalous=379)),
    DatasetLayout("clinicdb", "CVC-ClinicDB", "https://polyp.grand-challenge.org/CVCClinicDB/",
                  "Original/ and 'Ground Truth'/ with the same file names", clinicdb,
                  KnownCounts(normal=0, anomalous=612)),
    DatasetLayout("colondb", "CVC-ColonDB (as distributed in PraNet's TestDataset)",
                  "https://github.com/DengPingFan/PraNet", "images/ and masks/ with the same file names", colondb,
                  KnownCounts(normal=0, anomalous=380)),
    DatasetLayout("kvasir", "Kvasir-SEG", "https://datasets.simula.no/kvasir-seg/",
                  "images/ and masks/ with the same file names", kvasir, KnownCounts(normal=0, anomalous=1000)),
    DatasetLayout("endo", "Endo test split of the AnomalyCLIP medical benchmark",
                  "https://github.com/zqhang/AnomalyCLIP",
                  "images/ and masks/ with a mask per image; an empty mask marks a normal image", endo,
                  KnownCounts(normal=163, anomalous=37)),
    DatasetLayout("tn3k", "TN3K thyroid nodule ultrasound (test split)",
                  "https://github.com/haifangong/TRFE-Net-for-thyroid-nodule-segmentation",
                  "test-image/ and test-mask/ with the same file names", tn3k,
                  KnownCounts(normal=0, anomalous=614)),
    DatasetLayout("mvtec", "MVTec AD", "https://www.mvtec.com/company/research/datasets/mvtec-ad",
                  "<class>/test/<defect>/*.png, <class>/ground_truth/<defect>/*_mask.png, <class>/train/good/",
                  mvtec, KnownCounts(normal=467, anomalous=1258)),
    DatasetLayout("visa", "VisA (Visual Anomaly)", "https://github.com/amazon-science/spot-diff",
                  "split_csv/1cls.csv (object,split,label,image,mask) beside the class folders", visa,
                  KnownCounts(normal=962, anomalous=1200)),
    DatasetLayout("colondb+endo", "Medical auxiliary training set: CVC-ColonDB + the normal Endo images", "",
                  "a ColonDB folder and an Endo folder (as above), or their parent holding *ColonDB* and *Endo*",
                  colondb_endo, KnownCounts(normal=163, anomalous=380), max_sources=2),
    DatasetLayout("folder", "Your own images", "", "normal/ and/or abnormal/, optional masks/ matched by name",
                  labelled_folders),
    DatasetLayout("volumes", "Your own NIfTI volumes or DICOM series", "",
                  "normal/ and/or abnormal/ of NIfTI files or DICOM series folders, optional masks/ (NIfTI)",
                  volume_folders),
    DatasetLayout("meta", "An existing AnomalyCLIP meta.json", "",
                  "the meta.json file itself (entries relative to its folder)", meta_json),
)

DATASETS: dict[str, DatasetLayout] = {layout.name: layout for layout in _LAYOUTS}


def prepare_dataset(name: str, sources: Sequence[Path]) -> Manifest:
    """Build the manifest of a downloaded dataset; a size unlike the published one is a `DatasetWarning`."""
    if name not in DATASETS:
        raise UserInputError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    layout = DATASETS[name]
    if not 1 <= len(sources) <= layout.max_sources:
        raise UserInputError(f"{name} takes at most {layout.max_sources} --source path(s), got {len(sources)}")
    manifest = layout.build(name, [Path(source) for source in sources])
    manifest.dataset = manifest.dataset or name
    if layout.counts is not None:
        check_counts(layout, manifest)
    return manifest


def check_counts(layout: DatasetLayout, manifest: Manifest) -> None:
    """Warn (one line: dataset, expected, found) when the test split differs from the published size."""
    entries = manifest.entries("test")
    found = KnownCounts(normal=sum(1 for entry in entries if not entry.anomaly),
                        anomalous=sum(1 for entry in entries if entry.anomaly))
    if found != layout.counts:
        warn_dataset(f"{layout.name}: expected {layout.counts.total} images ({layout.counts.describe()}), "
                     f"found {found.total} ({found.describe()})")

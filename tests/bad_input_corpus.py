"""A corpus of bad and awkward inputs for the command line, built on the fly in a scratch folder.

Each entry writes its inputs into `Workspace.inputs` and returns the argv of one `medclip-ad` command and
the text its error line must contain (the file or the option at fault). The test runs every entry through
`medclip_ad.cli.main.main` and checks what a user would: a non-zero exit, no traceback, one error line
naming the culprit, no partial case folder, and inputs left byte-identical.

Groups: dicom, nifti, image, checkpoint, manifest, path, option. Files are small (a 128 x 128 CT slice,
8 x 8 x 4 volumes), so the whole corpus costs seconds once the tiny model is loaded.
"""

from __future__ import annotations

import copy
import gzip
import json
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import tifffile
import torch
from medclip_ad.methods.checkpoint import FORMAT_NAME
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian, JPEGBaseline8Bit, generate_uid
from safetensors.torch import save_file

FAST = ["--clip-weights", "random:tiny", "--method", "ensemble", "--image-size", "224", "--device", "cpu"]
TINY = ["--clip-weights", "random:tiny", "--image-size", "224", "--device", "cpu"]
TINY_TEXT_WIDTH = 128


@dataclass(frozen=True)
class Workspace:
    """A fresh scratch folder per entry: inputs go in `inputs`, outputs in `out`."""

    root: Path

    @property
    def inputs(self) -> Path:
        return self.root / "inputs"

    @property
    def out(self) -> Path:
        return self.root / "out"

    def infer(self, *inputs: Path | str, extra: tuple[str, ...] = (), fast: tuple[str, ...] = tuple(FAST)) -> list[str]:
        return ["infer", *map(str, inputs), "--out", str(self.out), *fast, *extra]

    def evaluate(self, *manifests: Path, extra: tuple[str, ...] = ()) -> list[str]:
        return ["evaluate", "--manifest", *map(str, manifests), "--out", str(self.out), *FAST, *extra]


@dataclass(frozen=True)
class Trial:
    """What to run and what its error line must name; `written`: good inputs beside the bad one, whose
    case folders may appear."""

    argv: list[str]
    names: str
    written: tuple[str, ...] = ()


@dataclass(frozen=True)
class BadInput:
    id: str
    group: str
    build: Callable[[Workspace], Trial]


CORPUS: list[BadInput] = []


def register(group: str, name: str, build: Callable[[Workspace], Trial]) -> None:
    CORPUS.append(BadInput(f"{group}:{name}", group, build))


def entry(group: str) -> Callable:
    def add(build: Callable[[Workspace], Trial]) -> Callable[[Workspace], Trial]:
        register(group, build.__name__, build)
        return build
    return add


def reuse_tiny_model(patch: pytest.MonkeyPatch, tiny_backbone) -> None:
    """Within `patch`: `random:tiny` is `tiny_backbone`, and each detector configuration is built once
    (commands build theirs per call; in one test process, seconds saved per command)."""
    from medclip_ad.inference import predictor
    from medclip_ad.modeling import clip_backbone

    original = clip_backbone.load_clip

    def load_clip(weights: str, activation: str = "auto", *args):
        if weights == "random:tiny" and activation in ("auto", tiny_backbone.activation):
            return tiny_backbone
        return original(weights, activation, *args)

    patch.setattr(clip_backbone, "load_clip", load_clip)  # the registry imports it when it builds
    predictors: dict = {}

    build = predictor.AnomalyPredictor

    def cached_predictor(config, backbone=None):
        if config not in predictors:
            predictors[config] = build(config, backbone)
        return predictors[config]

    patch.setattr(predictor, "AnomalyPredictor", cached_predictor)  # the commands import it when they run


# ---------------------------------------------------------------- helpers that write valid inputs

def ct_slice() -> pydicom.Dataset:
    return pydicom.dcmread(get_testdata_file("CT_small.dcm", download=False))


def multi_frame() -> pydicom.Dataset:
    return pydicom.dcmread(get_testdata_file("emri_small.dcm", download=False))


def save_dicom(ds: pydicom.Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def good_png(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (24, 20), dtype=np.uint8)).save(path)
    return path


def nifti_bytes(array: np.ndarray | None = None, affine: np.ndarray | None = None) -> bytearray:
    """An uncompressed single-file NIfTI-1 as bytes, to patch header fields in place."""
    array = np.arange(8 * 8 * 4, dtype=np.float32).reshape(8, 8, 4) if array is None else array
    image = nib.Nifti1Image(array, np.diag([1.0, 1.0, 2.0, 1.0]) if affine is None else affine)
    return bytearray(image.to_bytes())


def write_bytes(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(data))
    return path


def series(folder: Path, n: int, positions: list[float] | None = None) -> list[Path]:
    """`n` slices of the CT template in one series, at z = positions (default 0, 2.5, 5, ...)."""
    uid = generate_uid()
    paths = []
    for k, z in enumerate(positions or [2.5 * k for k in range(n)]):
        ds = ct_slice()
        ds.SeriesInstanceUID = uid
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.ImagePositionPatient = [0.0, 0.0, float(z)]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.InstanceNumber = k + 1
        paths.append(save_dicom(ds, folder / f"slice{k:02d}.dcm"))
    return paths


# ---------------------------------------------------------------- DICOM

def _dicom_header_entry(name: str, edit: Callable[[pydicom.Dataset], None]) -> None:
    def build(ws: Workspace) -> Trial:
        ds = ct_slice()
        edit(ds)
        path = save_dicom(ds, ws.inputs / f"{name}.dcm")
        return Trial(ws.infer(path), path.name)
    register("dicom", name, build)


def _set(keyword: str, value: object) -> Callable[[pydicom.Dataset], None]:
    def edit(ds: pydicom.Dataset) -> None:
        setattr(ds, keyword, value)
    return edit


def _delete(keyword: str) -> Callable[[pydicom.Dataset], None]:
    def edit(ds: pydicom.Dataset) -> None:
        delattr(ds, keyword)
    return edit


def _raw(tag: int, vr: str, text: bytes) -> Callable[[pydicom.Dataset], None]:
    """A header value written as raw bytes, so values pydicom would refuse to set still reach the file."""
    def edit(ds: pydicom.Dataset) -> None:
        ds[tag] = pydicom.dataelem.RawDataElement(pydicom.tag.Tag(tag), vr, len(text), text, 0, False, True)
    return edit


def _pixel_bytes(fraction: float) -> Callable[[pydicom.Dataset], None]:
    def edit(ds: pydicom.Dataset) -> None:
        ds.PixelData = ds.PixelData[: int(len(ds.PixelData) * fraction) // 2 * 2]
    return edit


def with_transfer_syntax(ds: pydicom.Dataset, path: Path, uid: str) -> Path:
    """Save `ds` with native pixels but a file meta header that claims another transfer syntax (pydicom
    would refuse to write that combination itself)."""
    save_dicom(ds, path)
    data = path.read_bytes()
    meta_end = 132 + 12 + int(pydicom.dcmread(path).file_meta.FileMetaInformationGroupLength)
    meta = copy.deepcopy(ds.file_meta)
    meta.TransferSyntaxUID = uid
    header = BytesIO()
    write_file_meta_info(header, meta, enforce_standard=True)
    return write_bytes(path, data[:132] + header.getvalue() + data[meta_end:])


def _transfer_syntax_entry(name: str, uid: str) -> None:
    def build(ws: Workspace) -> Trial:
        path = with_transfer_syntax(ct_slice(), ws.inputs / f"{name}.dcm", uid)
        return Trial(ws.infer(path), path.name)
    register("dicom", name, build)


for _name, _uid in (("jpeg_syntax_on_native_pixels", JPEGBaseline8Bit), ("unknown_transfer_syntax", "1.2.3.4.5.6.7"),
                    ("deflated_syntax_on_plain_bytes", DeflatedExplicitVRLittleEndian),
                    ("big_endian_syntax_on_little_endian_bytes", "1.2.840.10008.1.2.2")):
    _transfer_syntax_entry(_name, _uid)


for _name, _edit in {
    "rows_zero": _set("Rows", 0),
    "columns_zero": _set("Columns", 0),
    "rows_missing": _delete("Rows"),
    "columns_larger_than_the_pixel_data": _set("Columns", 4096),
    "rows_larger_than_the_pixel_data": _set("Rows", 129),
    "claims_20_frames_holds_one": _set("NumberOfFrames", 20),
    "number_of_frames_zero": _set("NumberOfFrames", 0),
    "number_of_frames_negative": _raw(0x00280008, "IS", b"-3"),
    "number_of_frames_text": _raw(0x00280008, "IS", b"abc "),
    "rows_text": _raw(0x00280010, "US", b"ab"),
    "bits_allocated_zero": _set("BitsAllocated", 0),
    "bits_allocated_twelve": _set("BitsAllocated", 12),
    "bits_allocated_sixty_four_for_sixteen_bit_data": _set("BitsAllocated", 64),
    "samples_per_pixel_three_on_grey_data": _set("SamplesPerPixel", 3),
    "samples_per_pixel_zero": _set("SamplesPerPixel", 0),
    "photometric_nonsense": _set("PhotometricInterpretation", "PURPLE"),
    "pixel_data_half_missing": _pixel_bytes(0.5),
    "pixel_data_empty": _pixel_bytes(0.0),
    "orientation_all_zero": _set("ImageOrientationPatient", [0, 0, 0, 0, 0, 0]),
    "orientation_parallel_axes": _set("ImageOrientationPatient", [1, 0, 0, 1, 0, 0]),
    "orientation_nan": _raw(0x00200037, "DS", b"nan\\0\\0\\0\\1\\0 "),
    "orientation_text": _raw(0x00200037, "DS", b"a\\b\\c\\d\\e\\f "),
    "pixel_spacing_negative": _set("PixelSpacing", [-0.5, 0.5]),
    "pixel_spacing_nan": _raw(0x00280030, "DS", b"nan\\nan "),
    "position_text": _raw(0x00200032, "DS", b"x\\y\\z "),
    "rescale_slope_nan": _raw(0x00281053, "DS", b"nan "),
}.items():
    _dicom_header_entry(_name, _edit)


def _cut(fraction: float | int, name: str) -> None:
    def build(ws: Workspace) -> Trial:
        data = save_dicom(ct_slice(), ws.inputs / "whole.dcm").read_bytes()
        (ws.inputs / "whole.dcm").unlink()
        size = fraction if isinstance(fraction, int) else int(len(data) * fraction)
        path = write_bytes(ws.inputs / f"{name}.dcm", data[:size])
        return Trial(ws.infer(path), path.name)
    register("dicom", name, build)


for _fraction, _name in ((0.6, "cut_in_the_pixel_data"), (300, "cut_in_the_header"), (132, "marker_only"),
                         (0.999, "one_byte_short")):
    _cut(_fraction, _name)


@entry("dicom")
def text_named_dcm(ws: Workspace) -> Trial:
    path = write_bytes(ws.inputs / "notes.dcm", b"this is not a DICOM file\n")
    return Trial(ws.infer(path), path.name)


@entry("dicom")
def empty_dcm(ws: Workspace) -> Trial:
    path = write_bytes(ws.inputs / "empty.dcm", b"")
    return Trial(ws.infer(path), path.name)


@entry("dicom")
def marker_then_garbage(ws: Workspace) -> Trial:
    path = write_bytes(ws.inputs / "garbage.dcm", b"\0" * 128 + b"DICM" + os.urandom(64))
    return Trial(ws.infer(path), path.name)


@entry("dicom")
def multi_frame_claims_20_frames_holds_10(ws: Workspace) -> Trial:
    ds = multi_frame()
    ds.NumberOfFrames = 20
    path = save_dicom(ds, ws.inputs / "frames.dcm")
    return Trial(ws.infer(path), path.name)


@entry("dicom")
def multi_frame_claims_5_frames_holds_10(ws: Workspace) -> Trial:
    ds = multi_frame()
    ds.NumberOfFrames = 5
    ds.PixelData = ds.PixelData[:100]
    path = save_dicom(ds, ws.inputs / "short_frames.dcm")
    return Trial(ws.infer(path), path.name)


@entry("dicom")
def series_with_a_repeated_position(ws: Workspace) -> Trial:
    series(ws.inputs / "study", 3, [0.0, 2.5, 2.5])
    return Trial(ws.infer(ws.inputs / "study"), "study")


@entry("dicom")
def series_with_a_missing_slice(ws: Workspace) -> Trial:
    series(ws.inputs / "study", 4, [0.0, 2.5, 5.0, 10.0])
    return Trial(ws.infer(ws.inputs / "study"), "study")


@entry("dicom")
def series_with_a_cut_slice(ws: Workspace) -> Trial:
    paths = series(ws.inputs / "study", 4)
    write_bytes(paths[1], paths[1].read_bytes()[:2000])
    return Trial(ws.infer(ws.inputs / "study"), paths[1].name)


@entry("dicom")
def dicomdir_only(ws: Workspace) -> Trial:
    ds = pydicom.dcmread(get_testdata_file("DICOMDIR", download=False))
    save_dicom(ds, ws.inputs / "disc" / "DICOMDIR")
    return Trial(ws.infer(ws.inputs / "disc"), "disc")


def _fifo(name: str, fifo: str, given_directly: bool) -> None:
    """A named pipe (reading one blocks forever): named as an input, or in a folder beside a good image."""
    def build(ws: Workspace) -> Trial:
        ws.inputs.mkdir(parents=True)
        os.mkfifo(ws.inputs / fifo)
        if given_directly:
            return Trial(ws.infer(ws.inputs / fifo), fifo)
        good_png(ws.inputs / "good.png")
        return Trial(ws.infer(ws.inputs), fifo, written=("good",))
    register("dicom", name, build)


for _name, _fifo_name, _direct in (("fifo_named_dcm_beside_a_good_image", "pipe.dcm", False),
                                   ("fifo_named_dcm_given_directly", "pipe.dcm", True),
                                   ("fifo_without_a_suffix_in_a_folder", "IM0001", False)):
    _fifo(_name, _fifo_name, _direct)


@entry("dicom")
def dicom_out_on_a_png(ws: Workspace) -> Trial:
    path = good_png(ws.inputs / "photo.png")
    return Trial(ws.infer(path, extra=("--dicom-out", "parametric-map")), "photo.png")


# ---------------------------------------------------------------- NIfTI

# NIfTI-1 header offsets (bytes): dim[8] int16 at 40, datatype int16 at 70, bitpix int16 at 72,
# pixdim[8] float32 at 76, vox_offset float32 at 108, qform_code/sform_code int16 at 252/254,
# srow_x/y/z float32[4] at 280/296/312, magic at 344.
def _patch(data: bytearray, offset: int, fmt: str, *values: float) -> bytearray:
    struct.pack_into("<" + fmt, data, offset, *values)
    return data


def _nifti_entry(name: str, make: Callable[[], bytes], suffix: str = ".nii", extra: tuple[str, ...] = ()) -> None:
    def build(ws: Workspace) -> Trial:
        path = write_bytes(ws.inputs / f"{name}{suffix}", make())
        return Trial(ws.infer(path, extra=extra), path.name)
    register("nifti", name, build)


def _sform(matrix: np.ndarray) -> Callable[[], bytes]:
    def make() -> bytes:
        data = nifti_bytes()
        _patch(data, 252, "hh", 0, 1)
        for row in range(3):
            _patch(data, 280 + 16 * row, "4f", *matrix[row])
        return data
    return make


def _datatype(code: int, bitpix: int) -> Callable[[], bytes]:
    return lambda: _patch(nifti_bytes(), 70, "hh", code, bitpix)


def _dims(*dims: int) -> Callable[[], bytes]:
    return lambda: _patch(nifti_bytes(), 40, f"{len(dims)}h", *dims)


_NAN_ROWS = np.full((3, 4), np.nan)
_SINGULAR_ROWS = np.array([[1.0, 0, 0, 0], [2.0, 0, 0, 0], [0, 0, 1.0, 0]])
_INF_ROWS = np.array([[np.inf, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0]])

for _name, _make, _suffix, _extra in (
    ("empty", lambda: b"", ".nii", ()),
    ("text", lambda: b"not a volume\n" * 40, ".nii", ()),
    ("empty_gz", lambda: b"", ".nii.gz", ()),
    ("gzip_of_text", lambda: gzip.compress(b"not a volume\n" * 40), ".nii.gz", ()),
    ("gzip_cut_short", lambda: gzip.compress(bytes(nifti_bytes()))[:200], ".nii.gz", ()),
    ("plain_bytes_named_gz", lambda: bytes(nifti_bytes())[:300] + b"\0", ".nii.gz", ()),
    ("header_only", lambda: bytes(nifti_bytes())[:348], ".nii", ()),
    ("data_cut_short", lambda: bytes(nifti_bytes())[:600], ".nii", ()),
    ("magic_wrong", lambda: _patch(nifti_bytes(), 344, "4s", b"xyz\0"), ".nii", ()),
    ("datatype_binary", _datatype(1, 1), ".nii", ()),
    ("datatype_unknown", _datatype(9999, 32), ".nii", ()),
    ("datatype_complex", _datatype(32, 64), ".nii", ()),
    ("datatype_rgb", _datatype(128, 24), ".nii", ()),
    ("datatype_float128", _datatype(1536, 128), ".nii", ()),
    ("dim0_zero", _dims(0, 8, 8, 4), ".nii", ()),
    ("dim0_nine", _dims(9, 8, 8, 4), ".nii", ()),
    ("dim0_negative", _dims(-1, 8, 8, 4), ".nii", ()),
    ("negative_dimension", _dims(3, 8, -8, 4), ".nii", ()),
    ("two_negative_dimensions", _dims(3, -8, -8, 4), ".nii", ()),
    ("zero_dimension", _dims(3, 8, 8, 0), ".nii", ()),
    ("huge_dimensions", _dims(3, 32000, 32000, 32000), ".nii", ()),
    ("vox_offset_beyond_the_file", lambda: _patch(nifti_bytes(), 108, "f", 1e7), ".nii", ()),
    ("vox_offset_negative", lambda: _patch(nifti_bytes(), 108, "f", -1000.0), ".nii", ()),
    ("nan_sform", _sform(_NAN_ROWS), ".nii", ()),
    ("singular_sform", _sform(_SINGULAR_ROWS), ".nii", ()),
    ("infinite_sform", _sform(_INF_ROWS), ".nii", ()),
    ("nan_pixdim_without_sform", lambda: _patch(_patch(nifti_bytes(), 252, "hh", 1, 0), 80, "f", np.nan), ".nii", ()),
    ("every_voxel_nan", lambda: nifti_bytes(np.full((8, 8, 4), np.nan, np.float32)), ".nii", ()),
    ("every_voxel_infinite", lambda: nifti_bytes(np.full((8, 8, 4), np.inf, np.float32)), ".nii", ()),
    ("five_dimensions", lambda: nifti_bytes(np.zeros((4, 4, 4, 2, 2), np.float32)), ".nii", ()),
    ("four_dimensions_without_volume_index", lambda: nifti_bytes(np.zeros((4, 4, 4, 3), np.float32)), ".nii", ()),
    ("volume_index_out_of_range", lambda: nifti_bytes(np.zeros((4, 4, 4, 3), np.float32)), ".nii",
     ("--volume-index", "7")),
):
    _nifti_entry(_name, _make, _suffix, _extra)


@entry("nifti")
def folder_named_nii(ws: Workspace) -> Trial:
    (ws.inputs / "scan.nii").mkdir(parents=True)
    return Trial(ws.infer(ws.inputs / "scan.nii"), "scan.nii")


# ---------------------------------------------------------------- 2-D images

def _png_bytes() -> bytes:
    buffer = BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _jpeg_bytes() -> bytes:
    buffer = BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims a size its data does not hold (a decompression bomb's header)."""
    import zlib

    data = bytearray(_png_bytes())
    struct.pack_into(">II", data, 16, width, height)
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    return bytes(data)


def _image_entry(name: str, suffix: str, make: Callable[[Path], None]) -> None:
    def build(ws: Workspace) -> Trial:
        path = ws.inputs / f"{name}{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        make(path)
        return Trial(ws.infer(path), path.name)
    register("image", name, build)


def _bytes(data: Callable[[], bytes]) -> Callable[[Path], None]:
    return lambda path: write_bytes(path, data())


for _name, _suffix, _make in (
    ("empty_png", ".png", _bytes(lambda: b"")),
    ("text_png", ".png", _bytes(lambda: b"hello\n")),
    ("cut_png", ".png", _bytes(lambda: _png_bytes()[:120])),
    ("cut_jpeg", ".jpg", _bytes(lambda: _jpeg_bytes()[:300])),
    ("jpeg_header_only", ".jpeg", _bytes(lambda: _jpeg_bytes()[:20])),
    ("png_claiming_a_huge_size", ".png", _bytes(lambda: _png_claiming(200000, 200000))),
    ("png_claiming_zero_width", ".png", _bytes(lambda: _png_claiming(0, 40))),
    ("garbage_tiff", ".tif", _bytes(lambda: b"II*\0" + os.urandom(60))),
    ("cut_tiff", ".tiff", _bytes(lambda: b"II*\0\x08\0\0\0")),
    ("garbage_bmp", ".bmp", _bytes(lambda: b"BM" + os.urandom(40))),
    ("tiff_all_nan", ".tif", lambda p: tifffile.imwrite(p, np.full((16, 16), np.nan, np.float32))),
    ("tiff_five_samples", ".tif", lambda p: tifffile.imwrite(p, np.zeros((16, 16, 5), np.uint8),
                                                             photometric="minisblack", planarconfig="contig")),
    ("tiff_two_samples", ".tif", lambda p: tifffile.imwrite(p, np.zeros((16, 16, 2), np.uint16),
                                                            photometric="minisblack", planarconfig="contig")),
    ("tiff_four_dimensions", ".tif", lambda p: tifffile.imwrite(p, np.zeros((2, 3, 16, 16), np.uint8),
                                                               photometric="minisblack")),
    ("tiff_complex", ".tif", lambda p: tifffile.imwrite(p, np.zeros((16, 16), np.complex64))),
):
    _image_entry(_name, _suffix, _make)


@entry("image")
def folder_named_png(ws: Workspace) -> Trial:
    (ws.inputs / "photo.png").mkdir(parents=True)
    return Trial(ws.infer(ws.inputs / "photo.png"), "photo.png")


@entry("image")
def png_with_a_newline_in_its_name(ws: Workspace) -> Trial:
    path = write_bytes(ws.inputs / "bad\nname.png", b"not a png")
    return Trial(ws.infer(path), "bad\\nname.png")


@entry("image")
def png_with_an_escape_sequence_in_its_name(ws: Workspace) -> Trial:
    path = write_bytes(ws.inputs / "red\x1b[31mname.png", b"not a png")
    return Trial(ws.infer(path), "red\\x1b[31mname.png")


@entry("image")
def cut_png_beside_a_good_one(ws: Workspace) -> Trial:
    good_png(ws.inputs / "good.png")
    write_bytes(ws.inputs / "cut.png", _png_bytes()[:120])
    return Trial(ws.infer(ws.inputs), "cut.png", written=("good",))


# ---------------------------------------------------------------- checkpoints

def _prompt_tensors(n_ctx: int = 12, depth: int = 9, width: int = TINY_TEXT_WIDTH, length: int = 4) -> dict:
    tensors = {"ctx_normal": torch.zeros(n_ctx, width), "ctx_abnormal": torch.zeros(n_ctx, width)}
    tensors.update({f"deep_prompts.{i}": torch.zeros(length, width) for i in range(depth - 1)})
    return tensors


def _safetensors(path: Path, tensors: dict, metadata: dict | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT_NAME, "format_version": 1, "method": "anomalyclip"} if metadata is None else metadata
    save_file(tensors, str(path), metadata={k: json.dumps(v) for k, v in meta.items()})
    return path


def _prompts_entry(name: str, make: Callable[[Path], None], suffix: str = ".safetensors",
                   method: tuple[str, ...] = ()) -> None:
    def build(ws: Workspace) -> Trial:
        ws.inputs.mkdir(parents=True, exist_ok=True)
        image = good_png(ws.inputs / "image.png")
        path = ws.inputs / f"{name}{suffix}"
        make(path)
        return Trial(ws.infer(image, extra=("--prompts", str(path), *method), fast=tuple(TINY)), path.name)
    register("checkpoint", name, build)


def _with(tensors: Callable[[], dict], metadata: dict | None = None) -> Callable[[Path], None]:
    return lambda path: _safetensors(path, tensors(), metadata)


def _changed(**changes: torch.Tensor) -> Callable[[], dict]:
    def make() -> dict:
        tensors = _prompt_tensors()
        tensors.update(changes)
        return {k: v for k, v in tensors.items() if v is not None and v.numel() >= 0}
    return make


def _without(name: str) -> Callable[[], dict]:
    return lambda: {k: v for k, v in _prompt_tensors().items() if k != name}


def _nan_prompts() -> dict:
    tensors = _prompt_tensors()
    tensors["ctx_abnormal"][3, 5] = float("nan")
    return tensors


def _inf_deep_prompt() -> dict:
    tensors = _prompt_tensors()
    tensors["deep_prompts.2"][0, 0] = float("inf")
    return tensors


def _pth(payload: object) -> Callable[[Path], None]:
    return lambda path: torch.save(payload, path)


_REFERENCE_WIDTH = TINY_TEXT_WIDTH
for _name, _make, _suffix, _method in (
    ("missing", lambda p: None, ".safetensors", ()),
    ("empty", _bytes(lambda: b""), ".safetensors", ()),
    ("text", _bytes(lambda: b"prompts go here\n"), ".pt", ()),
    ("safetensors_garbage", _bytes(lambda: struct.pack("<Q", 10**12) + b"{"), ".safetensors", ()),
    ("safetensors_header_cut", _bytes(lambda: struct.pack("<Q", 400) + b'{"a":'), ".safetensors", ()),
    ("not_our_format", _with(_prompt_tensors, {}), ".safetensors", ()),
    ("lacks_ctx_normal", _with(_without("ctx_normal")), ".safetensors", ()),
    ("ctx_rank_one", _with(_changed(ctx_normal=torch.zeros(12))), ".safetensors", ()),
    ("ctx_rank_three", _with(_changed(ctx_normal=torch.zeros(1, 12, TINY_TEXT_WIDTH),
                                      ctx_abnormal=torch.zeros(1, 12, TINY_TEXT_WIDTH))), ".safetensors", ()),
    ("ctx_pair_of_different_shapes", _with(_changed(ctx_abnormal=torch.zeros(10, TINY_TEXT_WIDTH))),
     ".safetensors", ()),
    ("nan_prompt", _with(_nan_prompts), ".safetensors", ()),
    ("infinite_deep_prompt", _with(_inf_deep_prompt), ".safetensors", ()),
    ("integer_prompts", _with(_changed(ctx_normal=torch.zeros(12, TINY_TEXT_WIDTH, dtype=torch.int64),
                                       ctx_abnormal=torch.zeros(12, TINY_TEXT_WIDTH, dtype=torch.int64))),
     ".safetensors", ()),
    ("another_text_width", _with(lambda: _prompt_tensors(width=64)), ".safetensors", ()),
    ("too_many_context_tokens", _with(lambda: _prompt_tensors(n_ctx=80)), ".safetensors", ()),
    ("context_that_fills_the_sentence", _with(lambda: _prompt_tensors(n_ctx=74)), ".safetensors", ()),
    ("no_context_tokens", _with(lambda: _prompt_tensors(n_ctx=0)), ".safetensors", ()),
    ("more_deep_prompts_than_text_blocks", _with(lambda: _prompt_tensors(depth=20)), ".safetensors", ()),
    ("deep_prompt_longer_than_the_sentence", _with(lambda: _prompt_tensors(length=90)), ".safetensors", ()),
    ("deep_prompts_with_a_gap", _with(_changed(**{"deep_prompts.3": None})), ".safetensors", ()),
    ("deep_prompt_rank_one", _with(_changed(**{"deep_prompts.0": torch.zeros(4)})), ".safetensors", ()),
    ("recorded_method_nonsense", _with(_prompt_tensors, {"format": FORMAT_NAME, "method": "nonsense"}),
     ".safetensors", ()),
    ("rwda_checkpoint_with_prompt_tensors", _with(_prompt_tensors, {"format": FORMAT_NAME, "method": "rwda"}),
     ".safetensors", ()),
    ("anomalyclip_checkpoint_for_rwda", _with(_prompt_tensors), ".safetensors", ("--method", "rwda")),
    ("garbage_for_adaclip", _with(lambda: {"x": torch.zeros(3)}, {"format": FORMAT_NAME, "method": "adaclip"}),
     ".safetensors", ()),
    ("reference_with_lists", _pth({"prompt_learner": {"ctx_pos": [[0.0] * 8], "ctx_neg": [[0.0] * 8]}}), ".pth",
     ()),
    ("reference_learner_is_a_list", _pth({"prompt_learner": [1, 2, 3]}), ".pth", ()),
    ("reference_lacks_ctx_neg", _pth({"prompt_learner": {"ctx_pos": torch.zeros(1, 1, 12, _REFERENCE_WIDTH)}}),
     ".pth", ()),
    ("reference_scalar_context", _pth({"prompt_learner": {"ctx_pos": torch.tensor(1.0),
                                                          "ctx_neg": torch.tensor(1.0)}}), ".pth", ()),
    ("reference_nan_context", _pth({"prompt_learner": {"ctx_pos": torch.full((1, 1, 12, _REFERENCE_WIDTH), np.nan),
                                                       "ctx_neg": torch.zeros(1, 1, 12, _REFERENCE_WIDTH)}}),
     ".pth", ()),
    ("pickled_object", _pth({"prompt_learner": {"ctx_pos": Path("x")}}), ".pth", ()),
):
    _prompts_entry(_name, _make, _suffix, _method)


@entry("checkpoint")
def clip_weights_garbage(ws: Workspace) -> Trial:
    image = good_png(ws.inputs / "image.png")
    weights = write_bytes(ws.inputs / "clip.pt", b"PK\3\4 not really a zip")
    argv = ws.infer(image, fast=("--clip-weights", str(weights), "--method", "ensemble", "--device", "cpu"))
    return Trial(argv, weights.name)


@entry("checkpoint")
def clip_weights_with_nan(ws: Workspace) -> Trial:
    from medclip_ad.modeling.clip_backbone import load_clip

    image = good_png(ws.inputs / "image.png")
    state = {k: v.clone() for k, v in load_clip("random:tiny").model.state_dict().items()}
    state["visual.proj"][0, 0] = float("nan")
    weights = ws.inputs / "clip_nan.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(weights))
    argv = ws.infer(image, fast=("--clip-weights", str(weights), "--method", "ensemble", "--image-size", "224",
                                 "--device", "cpu"))
    return Trial(argv, weights.name)


def _import_entry(name: str, make: Callable[[Path], None], suffix: str = ".pth") -> None:
    def build(ws: Workspace) -> Trial:
        ws.inputs.mkdir(parents=True, exist_ok=True)
        path = ws.inputs / f"{name}{suffix}"
        make(path)
        return Trial(["import-checkpoint", str(path), "--out", str(ws.out / "prompts.safetensors")], path.name)
    register("checkpoint", f"import_{name}", build)


for _name, _make in (
    ("missing", lambda p: None),
    ("garbage", _bytes(lambda: os.urandom(100))),
    ("lists", _pth({"prompt_learner": {"ctx_pos": [[0.0] * 8], "ctx_neg": [[0.0] * 8]}})),
    ("too_many_context_tokens", _pth({"prompt_learner": {"ctx_pos": torch.zeros(1, 1, 90, 8),
                                                         "ctx_neg": torch.zeros(1, 1, 90, 8)}})),
    ("nan_context", _pth({"prompt_learner": {"ctx_pos": torch.full((1, 1, 12, 8), np.nan),
                                             "ctx_neg": torch.zeros(1, 1, 12, 8)}})),
    ("deep_prompt_of_another_width", _pth({"prompt_learner": {"ctx_pos": torch.zeros(1, 1, 12, 8),
                                                              "ctx_neg": torch.zeros(1, 1, 12, 8),
                                                              "compound_prompts_text.0": torch.zeros(4, 16)}})),
):
    _import_entry(_name, _make)


@entry("checkpoint")
def import_onto_an_existing_folder(ws: Workspace) -> Trial:
    source = ws.inputs / "ref.pth"
    ws.inputs.mkdir(parents=True)
    torch.save({"prompt_learner": {"ctx_pos": torch.zeros(1, 1, 12, 8), "ctx_neg": torch.zeros(1, 1, 12, 8)}}, source)
    (ws.out / "prompts.safetensors").mkdir(parents=True)
    return Trial(["import-checkpoint", str(source), "--out", str(ws.out / "prompts.safetensors"), "--overwrite"],
                 "prompts.safetensors")


# ---------------------------------------------------------------- manifests

def _manifest(ws: Workspace, test: object, name: str = "manifest.json", extra: dict | None = None) -> Path:
    path = ws.inputs / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"root": ".", "test": test, **(extra or {})}), encoding="utf-8")
    return path


def _record(image: str, anomaly: int = 0, mask: str = "", kind: str | None = None) -> dict:
    record = {"img_path": image, "mask_path": mask, "cls_name": "brain", "specie_name": "", "anomaly": anomaly}
    return {**record, "kind": kind} if kind else record


def _two_images(ws: Workspace) -> list[dict]:
    good_png(ws.inputs / "a.png", 1)
    good_png(ws.inputs / "b.png", 2)
    return [_record("a.png", 0), _record("b.png", 1)]


def _manifest_text(name: str, text: bytes) -> None:
    def build(ws: Workspace) -> Trial:
        path = write_bytes(ws.inputs / "manifest.json", text)
        return Trial(ws.evaluate(path), path.name)
    register("manifest", name, build)


for _name, _text in (("empty", b""), ("not_json", b"{test: [}"), ("a_list", b"[1, 2]"),
                     ("test_not_an_object", b'{"test": [1]}'), ("latin1", '{"test": {"é": []}}'.encode("latin-1")),
                     ("root_not_a_string", b'{"root": 3, "test": {}}'), ("nul_bytes", b"\0\0\0\0"),
                     ("class_not_a_list", b'{"test": {"brain": {"img_path": "a.png"}}}')):
    _manifest_text(_name, _text)


@entry("manifest")
def missing_manifest(ws: Workspace) -> Trial:
    return Trial(ws.evaluate(ws.inputs / "nowhere.json"), "nowhere.json")


@entry("manifest")
def entry_lacks_keys(ws: Workspace) -> Trial:
    return Trial(ws.evaluate(_manifest(ws, {"brain": [{"img_path": "a.png"}]})), "manifest.json")


@entry("manifest")
def anomaly_two(ws: Workspace) -> Trial:
    return Trial(ws.evaluate(_manifest(ws, {"brain": [_record("a.png", 2)]})), "manifest.json")


@entry("manifest")
def listed_image_missing(ws: Workspace) -> Trial:
    records = _two_images(ws) + [_record("gone.png", 1)]
    return Trial(ws.evaluate(_manifest(ws, {"brain": records})), "gone.png")


@entry("manifest")
def no_test_entries(ws: Workspace) -> Trial:
    return Trial(ws.evaluate(_manifest(ws, {"brain": []})), "manifest")


@entry("manifest")
def mixed_images_and_volumes(ws: Workspace) -> Trial:
    records = _two_images(ws)
    write_bytes(ws.inputs / "v.nii", nifti_bytes())
    records.append(_record("v.nii", 1, kind="volume"))
    return Trial(ws.evaluate(_manifest(ws, {"brain": records})), "mixes")


@entry("manifest")
def mask_of_another_size(ws: Workspace) -> Trial:
    records = _two_images(ws)
    Image.fromarray(np.zeros((10, 30), np.uint8)).save(ws.inputs / "b_mask.png")
    records[1] = _record("b.png", 1, "b_mask.png")
    return Trial(ws.evaluate(_manifest(ws, {"brain": records})), "b_mask.png")


@entry("manifest")
def mask_that_is_not_an_image(ws: Workspace) -> Trial:
    records = _two_images(ws)
    write_bytes(ws.inputs / "b_mask.png", b"not a mask")
    records[1] = _record("b.png", 1, "b_mask.png")
    return Trial(ws.evaluate(_manifest(ws, {"brain": records})), "b_mask.png")


@entry("manifest")
def listed_image_is_a_folder(ws: Workspace) -> Trial:
    records = _two_images(ws)
    (ws.inputs / "folder.png").mkdir()
    records.append(_record("folder.png", 1))
    return Trial(ws.evaluate(_manifest(ws, {"brain": records})), "folder.png")


@entry("manifest")
def listed_image_is_unreadable(ws: Workspace) -> Trial:
    records = _two_images(ws)
    write_bytes(ws.inputs / "broken.png", b"not an image")
    records.append(_record("broken.png", 1))
    return Trial(ws.evaluate(_manifest(ws, {"brain": records})), "broken.png")


@entry("manifest")
def evaluate_out_is_a_file(ws: Workspace) -> Trial:
    manifest = _manifest(ws, {"brain": _two_images(ws)})
    write_bytes(ws.out, b"a file where the report folder should go")
    return Trial(ws.evaluate(manifest), "out")


@entry("manifest")
def evaluate_report_file_is_a_folder(ws: Workspace) -> Trial:
    manifest = _manifest(ws, {"brain": _two_images(ws)})
    (ws.out / "results.md").mkdir(parents=True)
    return Trial(ws.evaluate(manifest, extra=("--overwrite",)), "results.md")


@entry("manifest")
def evaluate_top_k_zero(ws: Workspace) -> Trial:
    return Trial(ws.evaluate(_manifest(ws, {"brain": _two_images(ws)}), extra=("--top-k", "0")), "--top-k")


@entry("manifest")
def evaluate_image_size_zero(ws: Workspace) -> Trial:
    return Trial(ws.evaluate(_manifest(ws, {"brain": _two_images(ws)}), extra=("--image-size", "0")),
                 "--image-size")


def _headct(ws: Workspace, labels: bytes) -> Path:
    root = ws.inputs / "headct"
    for number in range(2):
        good_png(root / "head_ct" / f"{number:03d}.png", number)
    write_bytes(root / "labels.csv", labels)
    return root


@entry("manifest")
def labels_csv_in_latin1(ws: Workspace) -> Trial:
    root = _headct(ws, "id, hemorrhage\n0, 0\n1, 1\n# vérifié\n".encode("latin-1"))
    return Trial(["prepare-data", "headct", "--source", str(root), "--out", str(ws.out / "m.json")], "labels.csv")


@entry("manifest")
def labels_csv_in_utf16(ws: Workspace) -> Trial:
    root = _headct(ws, "id, hemorrhage\n0, 0\n1, 1\n".encode("utf-16"))
    return Trial(["prepare-data", "headct", "--source", str(root), "--out", str(ws.out / "m.json")], "labels.csv")


@entry("manifest")
def labels_csv_without_its_header(ws: Workspace) -> Trial:
    root = _headct(ws, b"0, 0\n1, 1\n")
    return Trial(["prepare-data", "headct", "--source", str(root), "--out", str(ws.out / "m.json")], "labels.csv")


@entry("manifest")
def prepare_source_missing(ws: Workspace) -> Trial:
    return Trial(["prepare-data", "headct", "--source", str(ws.inputs / "nowhere"), "--out", str(ws.out / "m.json")],
                 "nowhere")


@entry("manifest")
def prepare_out_is_a_folder(ws: Workspace) -> Trial:
    root = _headct(ws, b"id, hemorrhage\n0, 0\n1, 1\n")
    (ws.out / "m.json").mkdir(parents=True)
    return Trial(["prepare-data", "headct", "--source", str(root), "--out", str(ws.out / "m.json"), "--overwrite"],
                 "m.json")


# ---------------------------------------------------------------- paths

@entry("path")
def input_missing(ws: Workspace) -> Trial:
    return Trial(ws.infer(ws.inputs / "nowhere.png"), "nowhere.png")


@entry("path")
def empty_folder(ws: Workspace) -> Trial:
    ws.inputs.mkdir(parents=True)
    return Trial(ws.infer(ws.inputs), "inputs")


@entry("path")
def folder_of_hidden_files(ws: Workspace) -> Trial:
    good_png(ws.inputs / ".hidden.png")
    return Trial(ws.infer(ws.inputs), "inputs")


@entry("path")
def out_is_a_file(ws: Workspace) -> Trial:
    image = good_png(ws.inputs / "image.png")
    write_bytes(ws.out, b"a file")
    return Trial(ws.infer(image), "out")


@entry("path")
def out_below_a_file(ws: Workspace) -> Trial:
    image = good_png(ws.inputs / "image.png")
    blocker = write_bytes(ws.root / "blocker", b"a file")
    argv = ["infer", str(image), "--out", str(blocker / "results"), *FAST]
    return Trial(argv, "blocker")


@entry("path")
def case_folder_path_is_a_file(ws: Workspace) -> Trial:
    image = good_png(ws.inputs / "image.png")
    write_bytes(ws.out / "image", b"a file where the case folder goes")
    return Trial(ws.infer(image, extra=("--overwrite",)), "image")


def _links_beside_a_good_image(name: str, links: dict[str, str], culprit: str) -> None:
    """Symbolic links (name -> target, both relative to the workspace) in a folder with one good image."""
    def build(ws: Workspace) -> Trial:
        good_png(ws.inputs / "good.png")
        for link, target in links.items():
            os.symlink(ws.root / target, ws.root / link)
        return Trial(ws.infer(ws.inputs), culprit, written=("good",))
    register("path", name, build)


for _name, _links, _culprit in (
    ("symlink_loop_beside_a_good_image", {"inputs/loop_a.dcm": "inputs/loop_b.dcm",
                                          "inputs/loop_b.dcm": "inputs/loop_a.dcm"}, "loop_a.dcm"),
    ("symlink_loop_named_png", {"inputs/self.png": "inputs/self.png"}, "self.png"),
    ("dangling_link_beside_a_good_image", {"inputs/dangling.dcm": "gone.dcm"}, "dangling.dcm"),
    ("dangling_link_without_a_suffix", {"inputs/IM0002": "gone"}, "IM0002"),
):
    _links_beside_a_good_image(_name, _links, _culprit)


@entry("path")
def dangling_link_given_directly(ws: Workspace) -> Trial:
    ws.inputs.mkdir(parents=True)
    os.symlink(ws.root / "gone.nii", ws.inputs / "scan.nii")
    return Trial(ws.infer(ws.inputs / "scan.nii"), "scan.nii")


@entry("path")
def socket_named_png(ws: Workspace) -> Trial:
    import socket

    good_png(ws.inputs / "good.png")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(ws.inputs / "sock.png"))
    return Trial(ws.infer(ws.inputs), "sock.png", written=("good",))


@entry("path")
def device_file_given_directly(ws: Workspace) -> Trial:
    ws.inputs.mkdir(parents=True)
    return Trial(ws.infer("/dev/zero"), "/dev/zero")


@entry("path")
def control_characters_in_a_folder_name(ws: Workspace) -> Trial:
    folder = ws.inputs / "study\rOVERWRITTEN"
    folder.mkdir(parents=True)
    return Trial(ws.infer(folder), "study\\rOVERWRITTEN")


# ---------------------------------------------------------------- options

def _option_entry(name: str, option: str, values: tuple[str, ...]) -> None:
    def build(ws: Workspace) -> Trial:
        image = good_png(ws.inputs / "image.png")
        return Trial(ws.infer(image, extra=(option, *values)), option)
    register("option", name, build)


for _name, _option, _values in (
    ("image_size_zero", "--image-size", ("0",)),
    ("image_size_negative", "--image-size", ("-5",)),
    ("image_size_below_a_patch", "--image-size", ("10",)),
    ("image_size_huge", "--image-size", ("100000",)),
    ("top_k_zero", "--top-k", ("0",)),
    ("top_k_negative", "--top-k", ("-1",)),
    ("overlays_negative", "--overlays", ("-2",)),
    ("batch_size_zero", "--batch-size", ("0",)),
    ("batch_size_negative", "--batch-size", ("-3",)),
    ("layers_zero", "--layers", ("0",)),
    ("layers_beyond_the_model", "--layers", ("99",)),
    ("layers_negative", "--layers", ("-1",)),
    ("window_width_zero", "--window", ("0", "40")),
    ("window_width_negative", "--window", ("-400", "40")),
    ("window_nan", "--window", ("nan", "40")),
    ("window_infinite_level", "--window", ("400", "inf")),
    ("volume_index_negative", "--volume-index", ("-1",)),
    ("device_unknown", "--device", ("tpu",)),
    ("precision_fp16_on_cpu", "--precision", ("fp16",)),
    ("aggregation_unknown", "--aggregation", ("median",)),
    ("axis_unknown", "--axis", ("oblique",)),
    ("window_preset_unknown", "--window-preset", ("liver",)),
    ("top_k_not_a_number", "--top-k", ("five",)),
    ("window_and_preset_together", "--window-preset", ("brain", "--window", "80", "40")),
):
    _option_entry(_name, _option, _values)


@entry("option")
def random_preset_unknown(ws: Workspace) -> Trial:
    image = good_png(ws.inputs / "image.png")
    return Trial(ws.infer(image, fast=("--clip-weights", "random:nope", "--method", "ensemble", "--device", "cpu")),
                 "random:nope")


@entry("option")
def resume_and_overwrite_together(ws: Workspace) -> Trial:
    image = good_png(ws.inputs / "image.png")
    return Trial(ws.infer(image, extra=("--resume", "--overwrite")), "--resume")


def copy_corpus() -> list[BadInput]:
    """The registered entries, in a stable order (ids are unique)."""
    ids = [item.id for item in CORPUS]
    assert len(ids) == len(set(ids)), "corpus ids must be unique"
    return copy.copy(CORPUS)

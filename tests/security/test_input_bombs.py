"""Attack 4: small files that declare huge contents. Each bomb is read in a fresh subprocess whose address
space is capped (resource.setrlimit) a little above what the imports take, and whose peak memory is
measured: the read must end in one clear line having used almost nothing. The streaming limits (inflated
DICOM, upload budget) are lowered in the subprocess to 64 MiB so the bombs stay quick to build; what is
measured is that passing a limit costs no memory, which does not depend on its value."""

from __future__ import annotations

import gzip
import io
import json
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from attack_tools import assert_one_line
from pydicom.uid import DeflatedExplicitVRLittleEndian

pytestmark = pytest.mark.slow  # end-to-end tier: `pytest -m "not slow"` is the fast core tier

APP_DIR = Path(__file__).resolve().parents[2] / "app"
# Room the subprocess gets above its footprint after the imports; the bombs would need gigabytes.
HEADROOM_MB = 768
# What reading a bomb may add to the peak resident memory.
MAX_GROWTH_MB = 100
STREAM_LIMIT = 64 * 2**20
BOMB_BYTES = 256 * 2**20

_MEASURE = r"""
import json, resource, sys
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from medclip_ad import limits
limits.MAX_INFLATED_DICOM_BYTES = int(sys.argv[4])
from medclip_ad.errors import UserInputError
from medclip_ad.io.readers import read_study
from medclip_viewer.uploads import save_upload

def vm_bytes():
    for line in open("/proc/self/status"):
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024

limit = vm_bytes() + int(sys.argv[2]) * 2**20
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
path = Path(sys.argv[1])
try:
    if path.suffix == ".zip":
        save_upload([(path.name, path.read_bytes())], path.with_suffix(".unpacked"), int(sys.argv[4]))
    else:
        read_study(path)
    message = None
except UserInputError as error:
    message = str(error)
growth_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
print(json.dumps({"message": message, "growth_mb": growth_mb}))
"""


def _read_in_subprocess(path: Path) -> dict:
    result = subprocess.run([sys.executable, "-c", _MEASURE, str(path), str(HEADROOM_MB), str(APP_DIR),
                             str(STREAM_LIMIT)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _assert_refused_cheaply(path: Path, *words: str) -> None:
    outcome = _read_in_subprocess(path)
    assert outcome["message"] is not None, outcome
    assert_one_line(outcome["message"], str(path), *words)
    assert outcome["growth_mb"] < MAX_GROWTH_MB, outcome


def _deflated_dicom_bomb(path: Path, inflated_bytes: int) -> Path:
    """A valid deflated-transfer-syntax DICOM header followed by a deflate stream of zeros."""
    meta = pydicom.Dataset()
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = pydicom.uid.CTImageStorage
    meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    buffer = io.BytesIO()
    pydicom.filewriter.write_file_meta_info(buffer, pydicom.dataset.FileMetaDataset(meta), enforce_standard=True)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    chunk = bytes(2**24)
    body = b"".join(compressor.compress(chunk) for _ in range(inflated_bytes // len(chunk))) + compressor.flush()
    path.write_bytes(b"\0" * 128 + b"DICM" + buffer.getvalue() + body)
    return path


def test_a_deflated_dicom_bomb_is_refused_before_pydicom_inflates_it(tmp_path):
    bomb = _deflated_dicom_bomb(tmp_path / "bomb.dcm", BOMB_BYTES)
    assert bomb.stat().st_size < 2**20
    _assert_refused_cheaply(bomb, "deflated DICOM inflates to more than")


def _nifti_header(shape: tuple[int, ...], vox_offset: float) -> bytes:
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.uint8)
    header["vox_offset"] = vox_offset
    return header.binaryblock


def test_a_nifti_declaring_gigabytes_of_extensions_is_refused_from_its_header(tmp_path):
    bomb = tmp_path / "extensions.nii.gz"
    with gzip.open(bomb, "wb", compresslevel=9) as handle:
        handle.write(_nifti_header((8, 8, 8), 3 * 2**30))
        handle.write(struct.pack("<4b", 1, 0, 0, 0))
        for _ in range(4):  # the first 64 MiB of the 3 GiB of extensions it declares
            handle.write(bytes(2**24))
    _assert_refused_cheaply(bomb, "header extensions (vox_offset)")


def test_a_gzip_nifti_bomb_is_refused_from_its_declared_size(tmp_path):
    bomb = tmp_path / "zeros.nii.gz"
    with gzip.open(bomb, "wb", compresslevel=9) as handle:
        handle.write(_nifti_header((800, 800, 800), 352))
        handle.write(bytes(4))
        for _ in range(4):
            handle.write(bytes(2**24))  # the first 64 MiB of the 512 MB of zeros it declares
    _assert_refused_cheaply(bomb, "times its compressed size")


def test_an_uncompressed_nifti_declaring_more_than_it_holds_is_refused(tmp_path):
    short = tmp_path / "short.nii"
    short.write_bytes(_nifti_header((512, 512, 512), 352) + bytes(4) + bytes(1000))
    _assert_refused_cheaply(short, "truncated NIfTI file")


def test_a_zip_bomb_upload_is_stopped_by_its_budget(tmp_path):
    bomb = tmp_path / "series.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        with archive.open("slice.dcm", "w", force_zip64=True) as member:
            for _ in range(BOMB_BYTES // 2**24):
                member.write(bytes(2**24))
    outcome = _read_in_subprocess(bomb)
    assert_one_line(outcome["message"], "series.zip", "more than the 64.0 MB")
    assert outcome["growth_mb"] < MAX_GROWTH_MB, outcome
    assert not bomb.with_suffix(".unpacked").exists()


@pytest.mark.parametrize("depth", [100, 100_000])
def test_deep_json_is_one_line_not_a_recursion_error(tmp_path, depth):
    from medclip_ad.io.json_documents import read_json_file

    deep = tmp_path / "scores.json"
    deep.write_text("[" * depth + "]" * depth)
    with pytest.raises(Exception) as error:
        read_json_file(deep, "scores.json")
    assert type(error.value).__name__ == "UserInputError"
    assert_one_line(str(error.value), str(deep), "nested too deeply")

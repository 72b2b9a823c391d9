"""Every size limit that keeps a crafted or oversized input from exhausting the host, in one place.

Inputs come from PACS exports, uploads and downloaded archives; a file of a few megabytes can declare
gigabytes (a zip or gzip bomb, a deflated DICOM, a NIfTI whose header claims huge extensions). Each
limit below is checked against what the file *declares* before anything is inflated or allocated,
and streams that can lie (zip members, gzip) are counted while they are read. docs/security.md lists
them with the reasoning; the viewer's upload caps can be changed at launch (`--max-upload-mb`,
`--max-total-upload-mb`).
"""

from __future__ import annotations

MIB: int = 2**20
GIB: int = 2**30

# Volumes and images: at most this many voxels (pixels for 2-D images), refused before decoding.
# 2**29 float32 voxels are 2 GiB, e.g. 512 x 512 x 2048 slices or a 23k x 23k image.
MAX_VOXELS: int = 2**29

# A gzip or deflate stream (.nii.gz, deflated DICOM) may unpack to at most this many times its
# compressed size. Scans compress 2-5x and masks or mostly-empty volumes 100-300x; a bomb of zeros
# reaches 1000x.
MAX_INFLATE_RATIO: int = 500
# ... unless it unpacks to no more than this: small volumes of zeros (masks, test data) compress better
# than any scan, and a few hundred megabytes cannot exhaust a host that is allowed MAX_VOXELS.
MIN_INFLATE_CHECKED_BYTES: int = 256 * MIB
# A NIfTI header plus its extensions (`vox_offset`, where the voxels start) may take at most this many
# bytes; real extensions (CIFTI XML, AFNI attributes, DICOM headers) stay far below.
MAX_NIFTI_HEADER_BYTES: int = 64 * MIB
# A deflated-transfer-syntax DICOM file may inflate to at most this many bytes (the pixel data of the
# largest allowed volume at 16 bits, plus room for the header).
MAX_INFLATED_DICOM_BYTES: int = 2 * MAX_VOXELS + 64 * MIB

# JSON and safetensors metadata: containers nested deeper than this are refused (Python's parser
# recurses per level; no file this package writes goes past 5).
MAX_NESTING_DEPTH: int = 64
# A scores.json or manifest larger than this is not one this package wrote.
MAX_JSON_BYTES: int = 64 * MIB

# TorchScript weights archives: the pickled module tree (data.pkl) and each code file. OpenAI's
# ViT-L/14@336 holds a data.pkl of about 100 kB.
MAX_ARCHIVE_PICKLE_BYTES: int = 64 * MIB

# Zip uploads: unpacked size and member count per archive (a 2000-slice 512 x 512 CT is about 1 GiB).
MAX_UNZIPPED_BYTES: int = 4 * GIB
MAX_ZIP_MEMBERS: int = 20_000

# Viewer uploads: what one browser session may keep on the server, and all sessions together
# (unpacked archives included). Both can be changed at launch.
DEFAULT_MAX_SESSION_UPLOAD_BYTES: int = 4 * GIB
DEFAULT_MAX_TOTAL_UPLOAD_BYTES: int = 16 * GIB

# Viewer browsing: listings stop after this many entries, and look at most this deep below the root.
MAX_BROWSE_ENTRIES: int = 2000
MAX_BROWSE_DEPTH: int = 4
# Viewer model choices: at most this many files of the launch weights folder are offered.
MAX_WEIGHT_FILES: int = 500

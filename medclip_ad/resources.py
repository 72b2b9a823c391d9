"""Where the viewer and the MONAI bundle are, in an installed wheel and in a repository checkout alike.

The repository keeps them at the top (`app/`, `bundles/`); the wheel maps them into the package as
`medclip_ad/share/app/` and `medclip_ad/share/bundles/` (see pyproject.toml), so an installed package
finds them beside its own modules and a checkout (editable install, PYTHONPATH) finds them one level up.
"""

from __future__ import annotations

from pathlib import Path

from medclip_ad.errors import UserInputError

BUNDLE_NAME = "anomalyclip_zeroshot_medical"
_PACKAGE_DIR = Path(__file__).resolve().parent
# First the wheel's layout, then the repository's.
_ROOTS: tuple[Path, ...] = (_PACKAGE_DIR / "share", _PACKAGE_DIR.parent)


def _shipped(relative: str) -> Path:
    for root in _ROOTS:
        candidate = root / relative
        if candidate.exists():
            return candidate
    raise UserInputError(f"{relative}: not found beside the installed package ({_ROOTS[0]}) nor in a repository "
                         f"checkout ({_ROOTS[1]}); reinstall medclip-ad")


def viewer_script() -> Path:
    """The Streamlit script of the viewer (`streamlit run` takes a file, not a module)."""
    return _shipped("app/viewer.py")


def bundle_dir() -> Path:
    """The MONAI bundle's root folder (the one holding configs/, docs/ and models/)."""
    return _shipped(f"bundles/{BUNDLE_NAME}")

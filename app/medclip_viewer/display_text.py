"""Text that comes from files (DICOM tags, file and member names, scores.json fields), made safe to show.

Streamlit renders most strings as markdown: a PatientName of `![x](https://host/beacon)` would make the
browser fetch that image, and `**Case score 0.0000: normal**` would look like the viewer's own words.
Values from files are therefore shown with `st.text`, in tables (`st.dataframe`), or, where a widget
only takes markdown (alerts, labels), through `plain`, which escapes every character markdown,
Streamlit's directives (`:red[...]`, `:material/...:`) and LaTeX give a meaning to.
"""

from __future__ import annotations

import re

_MARKUP = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~:$&=^\"'])")
_LINE_BREAKS = re.compile(r"[\r\n\t\f\v]+")


def plain(text: object) -> str:
    """`text` as one line of markdown that displays exactly these characters."""
    return _MARKUP.sub(r"\\\1", _LINE_BREAKS.sub(" ", str(text)))


def unescape(markdown: str) -> str:
    """What `plain` was given (for tests and logs): the escapes removed again."""
    return re.sub(r"\\(.)", r"\1", markdown)

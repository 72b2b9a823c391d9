"""Who may use the viewer: an optional password, and a warning when the server listens on the network.

The viewer binds to 127.0.0.1 by default (.streamlit/config.toml), so only the machine itself can reach
it; a hospital publishes it through its reverse proxy (README, "Viewer access"). A password, when one
is configured (Streamlit secrets `viewer_password` or MEDCLIP_AD_VIEWER_PASSWORD), is asked once per
browser session and compared in constant time; nothing of the viewer is rendered before it is given.
"""

from __future__ import annotations

import hmac
import os

import streamlit as st
from streamlit.errors import StreamlitSecretNotFoundError

from medclip_viewer.launch import viewer_password
from medclip_viewer.state import KEY_PASSWORD

_AUTHENTICATED_KEY = "access.authenticated"
LOCAL_ADDRESSES = ("127.0.0.1", "localhost", "::1")


def require_password() -> None:
    """Stop the page here until the configured password has been given in this session."""
    password = viewer_password(_secrets(), os.environ)
    if password is None or st.session_state.get(_AUTHENTICATED_KEY):
        return
    st.title("medclip-ad viewer")
    typed = st.text_input("Password", type="password", key=KEY_PASSWORD)
    if typed and hmac.compare_digest(typed.encode("utf-8"), password.encode("utf-8")):
        st.session_state[_AUTHENTICATED_KEY] = True
        st.session_state.pop(KEY_PASSWORD, None)
        st.rerun()
    if typed:
        st.error("Wrong password.")
    st.stop()


def exposure_warning() -> None:
    """Say so when the server listens beyond this machine and no password protects it."""
    address = st.get_option("server.address") or ""
    if address in LOCAL_ADDRESSES or viewer_password(_secrets(), os.environ) is not None:
        return
    st.warning("This viewer listens on the network without a password: set MEDCLIP_AD_VIEWER_PASSWORD (or "
               "viewer_password in .streamlit/secrets.toml) or bind it to 127.0.0.1 behind a reverse proxy.")


def _secrets() -> dict:
    """Streamlit's secrets as a plain dict; none when no secrets file exists."""
    try:
        return dict(st.secrets)
    except (FileNotFoundError, OSError, KeyError, ValueError, StreamlitSecretNotFoundError):
        return {}

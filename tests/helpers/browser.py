"""Debian's headless Chromium driven by playwright, for tests that look at a page as a browser shows it.

Playwright drives the system ``chromium`` through ``executable_path``: nothing is downloaded (no
``playwright install``). :func:`chromium_path` installs the Debian package when it is missing and says
why when it cannot, so that a test can skip with that reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

#: Flags for a quiet, self-contained run (``--headless`` comes from playwright's ``headless=True``): no
#: sandbox (tests run as root), no GPU, and no background traffic (first-run pages, updates, sync).
CHROMIUM_ARGS = ("--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync")


def _find() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _apt_prefix() -> list[str] | None:
    """``[]`` as root, ``["sudo", "-n"]`` with password-less sudo, else None (cannot install)."""
    if os.geteuid() == 0:
        return []
    if shutil.which("sudo") and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0:
        return ["sudo", "-n"]
    return None


def chromium_path() -> tuple[Path | None, str]:
    """The chromium executable, installing Debian's ``chromium`` package when it is missing;
    ``(None, reason)`` when it is missing and cannot be installed."""
    found = _find()
    if found:
        return Path(found), ""
    prefix = _apt_prefix()
    if prefix is None or not shutil.which("apt-get"):
        return None, "chromium is not installed and cannot be: no apt-get, or not root and no password-less sudo"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [*prefix, "apt-get", "install", "-y", "-q", "chromium"]
    done = subprocess.run(install, capture_output=True, text=True, env=env)
    if done.returncode != 0:  # the package lists may be missing or old: refresh them once and retry
        subprocess.run([*prefix, "apt-get", "update", "-q"], capture_output=True, env=env)
        done = subprocess.run(install, capture_output=True, text=True, env=env)
    found = _find()
    if found:
        return Path(found), ""
    tail = " ".join((done.stderr or done.stdout).strip().splitlines()[-1:])
    return None, f"`apt-get install -y chromium` failed (exit {done.returncode}): {tail}"

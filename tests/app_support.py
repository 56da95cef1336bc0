"""Helpers of the tests that run lexalign's web apps as real processes (no tests of its own).

    free_port()            a free TCP port on 127.0.0.1 (lexalign.serve.launch's)
    start_app(argv, ...)   start a command (e.g. `lexalign annotate`), wait until its page answers 200
    stop_app(proc)         SIGTERM, then SIGKILL what is left
    chromium()             Debian's headless Chromium through Playwright (no browser download)
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests

from lexalign.serve.launch import free_port  # noqa: F401 - re-exported for the app tests

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"


def screenshot(page: Any, name: str) -> None:
    """Save the page as docs/screenshots/<name>.png when LEXALIGN_SCREENSHOTS names the folder (how the README's
    pictures are made: ``LEXALIGN_SCREENSHOTS=docs/screenshots pytest tests/test_chat_browser.py ...``)."""
    folder = os.environ.get("LEXALIGN_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"))


def start_app(argv: list[str], log: Path, port: int, env: dict[str, str], timeout_s: float = 120,
              new_session: bool = False) -> subprocess.Popen:
    """Run ``argv`` from the repository root with its output in ``log``; return once http://127.0.0.1:port/
    answers 200. A process that exits or stays silent fails the test with the end of its log."""
    with log.open("a") as out:
        proc = subprocess.Popen(argv, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=new_session)
    name = " ".join(argv[2:4])  # e.g. "lexalign.cli annotate"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{name} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200:
                return proc
        except requests.RequestException:
            pass
        time.sleep(0.5)
    stop_app(proc)
    pytest.fail(f"{name} did not answer within {timeout_s:.0f} s:\n{log.read_text()[-3000:]}")


def stop_app(proc: subprocess.Popen, timeout_s: float = 15) -> None:
    """SIGTERM (to the whole process group when it has its own), then SIGKILL after ``timeout_s``."""
    own_group = os.getpgid(proc.pid) == proc.pid if proc.poll() is None else False
    send = (lambda sig: os.killpg(proc.pid, sig)) if own_group else proc.send_signal
    try:
        send(signal.SIGTERM)
        proc.wait(timeout=timeout_s)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        proc.wait(timeout=timeout_s)


@contextmanager
def chromium() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (make browser, or apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield browser
        browser.close()

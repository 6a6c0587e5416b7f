"""Shared test fixtures.

Tests marked ``data`` use a real dataset. When it is not present they are
skipped, unless ``NEURALAB_REQUIRE_DATA=1`` (CI sets it), where a missing
dataset is a failure: CI must never go green by skipping its real-data tests.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
import torch


def require_dataset(name: str) -> None:
    """Skip (or fail under NEURALAB_REQUIRE_DATA=1) when dataset ``name`` is not found here."""
    from neuralab.data import locate
    from neuralab.errors import UserError

    try:
        locate(name)
    except UserError as err:
        if os.environ.get("NEURALAB_REQUIRE_DATA") == "1":
            pytest.fail(f"NEURALAB_REQUIRE_DATA=1 but {name} is missing: {err}")
        pytest.skip(f"{name} not present: {err}")


@pytest.fixture(autouse=True)
def _few_threads():
    """Keep each test on at most 2 threads: the CI machine has 2 cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(min(before, 2))
    yield
    torch.set_num_threads(before)


@pytest.fixture
def one_thread():
    """One thread, for tests that share the two cores with whatever else runs (and whose
    float sums must not depend on how work is split between threads)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


CHECK_SCRIPT = """<script>
window.addEventListener('error', e => document.body.setAttribute('data-errors', 'x'));
window.addEventListener('load', () => {
  const images = [...document.images];
  const bad = images.filter(i => !(i.complete && i.naturalWidth > 0)).length;
  document.body.setAttribute('data-images', images.length);
  document.body.setAttribute('data-bad-images', bad);
});
</script>"""


def chromium() -> str:
    """Debian's chromium; skipped without it (failed under NEURALAB_REQUIRE_BROWSER=1)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("NEURALAB_REQUIRE_BROWSER") == "1":
            pytest.fail("NEURALAB_REQUIRE_BROWSER=1 but chromium is not installed")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return found


def with_check_script(html: str) -> str:
    """The page with a script that records, once it has loaded, how many images it has, how
    many failed to decode, and whether any script error fired."""
    return html.replace("</body>", CHECK_SCRIPT + "</body>")


def open_in_chromium(browser: str, url: str) -> subprocess.CompletedProcess:
    """Headless chromium opens ``url``, runs its scripts and prints the resulting DOM."""
    return subprocess.run(
        [
            browser,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=10000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def page_health(proc: subprocess.CompletedProcess) -> tuple[int, int, list[str]]:
    """(images, images that failed to decode, errors: script errors and console messages) of
    a page opened by ``open_in_chromium`` with ``with_check_script``."""
    assert proc.returncode == 0, proc.stderr[-2000:]
    body = re.search(r"<body[^>]*>", proc.stdout).group(0)  # where the check script wrote
    images = int(re.search(r'data-images="(\d+)"', body).group(1))
    bad = int(re.search(r'data-bad-images="(\d+)"', body).group(1))
    errors = [line for line in proc.stderr.splitlines() if "CONSOLE" in line]
    if "data-errors" in body:
        errors.append("a script error fired")
    return images, bad, errors


def require_synthesizers() -> None:
    """Skip (or fail under NEURALAB_REQUIRE_DATA=1) when the speech synthesizers that build
    the speech sets (espeak-ng, flite, festival) are not installed."""
    from neuralab.data.speech import synthesizer_versions
    from neuralab.errors import UserError

    try:
        synthesizer_versions()
    except UserError as err:
        if os.environ.get("NEURALAB_REQUIRE_DATA") == "1":
            pytest.fail(f"NEURALAB_REQUIRE_DATA=1 but a synthesizer is missing: {err}")
        pytest.skip(str(err))

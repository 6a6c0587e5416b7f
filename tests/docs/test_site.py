"""The documentation site builds with ``--strict`` (as ``make docs`` does), its generated
references cannot drift from the code, and a real browser opens it.

The site is built once here, from mkdocs.yml, into a temporary directory. To keep the suite
short, only one notebook is executed while building (the others render without outputs);
``tests/notebooks`` executes every one, and ``make docs`` renders them all with their pictures.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import html
import http.server
import os
import re
import threading
from pathlib import Path

import pytest
from conftest import chromium, open_in_chromium, page_health, with_check_script

mkdocs_config = pytest.importorskip("mkdocs.config", reason="pip install 'neuralab[docs]'")
mkdocs_build = pytest.importorskip("mkdocs.commands.build")

ROOT = Path(__file__).resolve().parents[2]
EXECUTED = "05_adversarial_examples"  # the notebook executed here: one of the quickest
HEADING = re.compile(r'<h([1-6]) id="([^"]+)"[^>]*>(.*?)</h\1>', re.S)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    work = tmp_path_factory.mktemp("docs-runs")  # the executed notebook's runs land here
    cfg = mkdocs_config.load_config(str(ROOT / "mkdocs.yml"), site_dir=str(out), strict=True)
    jupyter = cfg.plugins["mkdocs-jupyter"].config
    assert jupyter["execute"] is True and jupyter["allow_errors"] is False
    notebooks = sorted((ROOT / "notebooks").glob("*.py"))
    jupyter["execute_ignore"] = [f"notebooks/{p.name}" for p in notebooks if p.stem != EXECUTED]
    before = Path.cwd()
    os.chdir(work)
    try:
        mkdocs_build.build(cfg)  # strict: any warning (a broken link, a missing page) aborts
    finally:
        os.chdir(before)
    return out


def sections(page: str) -> dict[str, str]:
    """Each heading's id -> the HTML from it to the next heading of the same or a higher
    level."""
    heads = list(HEADING.finditer(page))
    out = {}
    for i, h in enumerate(heads):
        level = int(h.group(1))
        end = next((n.start() for n in heads[i + 1 :] if int(n.group(1)) <= level), len(page))
        out[h.group(2)] = page[h.start() : end]
    return out


def heading_text(section: str) -> str:
    inner = HEADING.match(section).group(3)
    return html.unescape(re.sub(r"<[^>]+>", "", inner)).replace("¶", "").strip()


def commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name), sub
                yield from commands(sub, (*path, name))


def test_cli_reference_lists_every_subcommand_and_option(site):
    """Every subcommand of the parser that ``neuralab`` runs has its section in the built CLI
    page, and every one of its options appears there."""
    from neuralab.cli import build_parser

    page = sections((site / "reference/cli/index.html").read_text())
    by_title = {heading_text(s): s for s in page.values()}
    found = list(commands(build_parser()))
    assert len(found) > 20
    for path, sub in found:
        title = "neuralab " + " ".join(path)
        assert title in by_title, f"{title} is missing from the CLI reference"
        for action in sub._actions:
            for flag in action.option_strings:
                if flag not in ("-h", "--help"):
                    assert f"<code>{flag}</code>" in by_title[title], (title, flag)


def test_config_reference_lists_every_key(site):
    """Every key of every section of the training and RL configs, and every option of every
    registered model, is a row of the built config page."""
    from neuralab.config import RunConfig
    from neuralab.models import MODELS
    from neuralab.models.base import model_config_class
    from neuralab.rl.config import RLConfig

    page = (site / "reference/config/index.html").read_text()
    titled = [(heading_text(s), s) for s in sections(page).values()]
    runs = [s for t, s in titled if t in ("Training runs", "Reinforcement-learning runs")]
    assert len(runs) == 2
    for run_section, cls in zip(runs, (RunConfig, RLConfig), strict=True):
        inner = {heading_text(s): s for s in sections(run_section).values()}
        for f in dataclasses.fields(cls):
            value = getattr(cls(), f.name)
            if not dataclasses.is_dataclass(value):
                assert f"<code>{f.name}</code>" in run_section, (cls.__name__, f.name)
                continue
            for key in (g.name for g in dataclasses.fields(value) if g.name != "options"):
                assert f"<code>{key}</code>" in inner[f"[{f.name}]"], (cls.__name__, f.name, key)
    by_title = dict(titled)
    data_given = {"num_classes", "in_channels", "image_size", "mean", "std"}
    for name in MODELS.names():
        cls = model_config_class(name)
        assert f"<code>{name}</code>" in by_title[cls.__name__], name
        for f in dataclasses.fields(cls):
            if f.name not in data_given:
                assert f"<code>{f.name}</code>" in by_title[cls.__name__], (name, f.name)


def test_api_reference_documents_the_public_calls(site):
    """The API page holds the docstring of every public name of the modules a user imports."""
    import neuralab.attack
    import neuralab.config
    import neuralab.data
    import neuralab.train

    page = (site / "reference/api/index.html").read_text()
    for module in (neuralab.attack, neuralab.data, neuralab.train):
        for name in module.__all__:
            assert f'id="{module.__name__}.{name}"' in page, f"{module.__name__}.{name}"
    for name in ("create_model", "list_models", "load_model", "sample"):
        assert re.search(rf'id="neuralab\.[a-z.]+\.{name}"', page), name


@pytest.fixture(scope="module")
def served(site):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.browser
@pytest.mark.parametrize("page", ["index.html", f"notebooks/{EXECUTED}/index.html"])
def test_site_opens_in_headless_chromium(site, served, page):
    """Debian's chromium, headless, opens the index and an executed notebook's page over
    HTTP (as ``mkdocs serve`` or any web server would): every image decodes, no script error
    fires, nothing is logged to the console. The notebook page shows its plots."""
    browser = chromium()
    path = site / page
    text = path.read_text()
    if page != "index.html":
        assert text.count('src="data:image/png;base64,') >= 1, "the executed notebook's plots"
    path.write_text(with_check_script(text))
    images, bad, errors = page_health(open_in_chromium(browser, f"{served}/{page}"))
    assert bad == 0 and images >= (0 if page == "index.html" else 1), (images, bad)
    assert not errors, errors

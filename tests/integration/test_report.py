"""`neuralab report` and `neuralab compare`: what the pages hold, and that a real browser
opens the report with every image decoded and no console error (marked ``browser``)."""

from __future__ import annotations

import json
import re

import pytest
from conftest import chromium, open_in_chromium, page_health, with_check_script
from PIL import Image
from test_cli import TINY, neuralab


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two short digits runs that differ in the learning rate and the batch size, one of them
    attacked, so the report has curves, a confusion matrix and an attack to show."""
    cwd = tmp_path_factory.mktemp("report")
    for name, extra in (("a", []), ("b", ["optim.lr=5e-3", "train.batch_size=64"])):
        neuralab(
            "train", "digits_cnn", *TINY, "train.epochs=2", *extra, "--run-dir", f"runs/{name}",
            "--no-progress", cwd=cwd,
        )  # fmt: skip
    neuralab("attack", "runs/a", "--method", "fgsm", "--eps", "0.1", "--n", "50", cwd=cwd)
    return cwd


def test_report_is_one_self_contained_file(two_runs):
    """The report embeds every image as base64 data and loads nothing from anywhere else; it
    shows the results, curves, confusion matrix, the attack and the config."""
    cwd = two_runs
    out = json.loads(neuralab("report", "runs/a", "--json", cwd=cwd).stdout)
    page = (cwd / "runs/a/report.html").read_text()
    assert out["html"].endswith("report.html")
    sources = re.findall(r'src="([^"]*)"', page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "http://" not in page and "https://" not in page and "<script" not in page
    for text in ("Learning curves", "Test confusion", "fgsm", "test/acc", "optim.lr"):
        assert text in page, text


def test_compare_lists_exactly_the_differing_config_keys(two_runs):
    """compare names the config keys that differ (lr and batch size) and no others, with
    each run's value, and writes its page with the overlaid curves."""
    cwd = two_runs
    out = json.loads(neuralab("compare", "runs/a", "runs/b", "--json", cwd=cwd).stdout)
    assert set(out["differences"]) == {"optim.lr", "train.batch_size"}
    assert out["differences"]["train.batch_size"] == [32, 64]
    assert len(out["metrics"]["test/acc"]) == 2
    assert (cwd / "runs/a/compare.html").exists() and (cwd / "runs/a/compare.png").exists()
    assert not (cwd / "compare.html").exists()  # nothing written into the current directory
    again = neuralab("compare", "runs/a", "runs/b", cwd=cwd, check=False)
    assert again.returncode == 2 and "--force" in again.stderr  # never replaced silently
    table = neuralab("compare", "runs/a", "runs/b", "--force", cwd=cwd).stdout
    assert "optim.lr" in table.splitlines()[0] and "train.batch_size" in table.splitlines()[0]


def test_report_and_compare_user_errors(two_runs, tmp_path):
    """Not a run directory, or a single run to compare: one line, exit 2."""
    from test_cli import assert_user_error

    assert_user_error(neuralab("report", str(tmp_path), cwd=tmp_path, check=False), "no config")
    assert_user_error(
        neuralab("compare", "runs/a", cwd=two_runs, check=False), "at least two run directories"
    )
    out_dir = neuralab("report", "runs/a", "--out", str(tmp_path), cwd=two_runs, check=False)
    assert_user_error(out_dir, "is a directory")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.toml").write_text((two_runs / "runs/a/config.toml").read_text())
    (broken / "results.json").write_text('{"test/acc": 0.9')  # cut short
    assert_user_error(neuralab("report", str(broken), cwd=tmp_path, check=False), "is corrupt")
    assert_user_error(
        neuralab("compare", "runs/a", str(broken), cwd=two_runs, check=False), "is corrupt"
    )


def test_report_and_compare_take_reinforcement_learning_runs(tmp_path):
    """A reinforcement-learning run's config has algo and env, not data and model: its report
    and a comparison still work (they once said "unknown config key 'algo'")."""
    for name, lr in (("p1", 2.5e-4), ("p2", 1e-3)):
        run = tmp_path / name
        run.mkdir()
        (run / "config.toml").write_text(
            f'seed = 0\nalgo = "ppo"\n\n[env]\nid = "CartPole-v1"\n\n[optim]\nlr = {lr}\n'
        )
        (run / "results.json").write_text('{"eval/mean_return": 500.0, "env/steps": 99840}')
    page = neuralab("report", "p1", cwd=tmp_path).stdout
    assert "report" in page and "ppo on CartPole-v1" in (tmp_path / "p1/report.html").read_text()
    out = json.loads(neuralab("compare", "p1", "p2", "--json", cwd=tmp_path).stdout)
    assert set(out["differences"]) == {"optim.lr"}


def test_a_driving_runs_report_has_its_driving_table(tmp_path):
    """A driving run's report: its env steps, its driving metrics as a table (two cars' rates
    said to be over both), its returns and driving curves; no supervised learning curves."""
    run = tmp_path / "d"
    (run / "plots").mkdir(parents=True)
    (run / "config.toml").write_text('seed = 0\nalgo = "dqn"\n\n[env]\nid = "intersection-v0"\n')
    results = {"env/steps": 4800, "train/wall_s": 60.0, "eval/mean_return": 5.5,
               "eval/crash_rate": 0.29, "eval/success_rate": 0.6, "eval/mean_speed": 7.4,
               "eval/mean_distance": 68.7, "eval/lane_changes_per_km": 0.0,
               "eval/episodes": 100, "eval/vehicles": 2}  # fmt: skip
    (run / "results.json").write_text(json.dumps(results))
    (run / "metrics.jsonl").write_text('{"step": 16, "train/episode_return": 1.0}\n')
    for name in ("returns.png", "driving.png"):
        Image.new("RGB", (4, 4)).save(run / "plots" / name)
    neuralab("report", "d", cwd=tmp_path)
    page = (run / "report.html").read_text()
    assert "dqn on intersection-v0, 4800 env steps in 60.0 s" in page
    table = page[page.index("<h2>Driving</h2>") : page.index("<h2>Results</h2>")]
    cells = ["5.5", "29%", "60%", "7.4", "69", "0.0"]
    assert "".join(f"<td>{c}</td>" for c in cells) in table
    assert "100 greedy episodes of 2 vehicles" in table
    assert "<h2>Returns</h2>" in page and "<h2>Driving: crash rate and speed</h2>" in page
    assert "Learning curves" not in page and not (run / "plots/curves.png").exists()


@pytest.mark.browser
def test_report_opens_in_headless_chromium(two_runs):
    """Debian's chromium, headless, opens a copy of the report (with a probe script added)
    and decodes every embedded image; the page logs no console error."""
    browser = chromium()
    cwd = two_runs
    neuralab("report", "runs/a", cwd=cwd)
    page = (cwd / "runs/a/report.html").read_text()
    n_images = page.count("<img ")
    probe = cwd / "probe.html"
    probe.write_text(with_check_script(page))
    proc = open_in_chromium(browser, probe.as_uri())
    images, bad, errors = page_health(proc)
    assert images == n_images and n_images >= 3
    assert bad == 0 and not errors, errors

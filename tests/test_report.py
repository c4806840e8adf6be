"""The HTML report: self-contained, its heatmap values equal the telemetry, and it renders in a real Chromium."""

import re
import shutil
from pathlib import Path

import pytest
import torch

from ponder.adaptive import load, set_budget
from ponder.cli import main
from ponder.data import load_text
from ponder.eval.sweep import sweep
from ponder.stats import ComputeTrace

TOKENS = 40
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@pytest.fixture(scope="module")
def report(tmp_path_factory, tokenizer):
    """A small sweep (tiny Llama, teal) and its report page."""
    from conftest import tiny_model

    root = tmp_path_factory.mktemp("report")
    tiny_model("llama").save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    sweep(str(root / "base"), ["teal"], [1.0, 0.5], root / "sweep", windows=1, window_len=64, progress=False)
    argv = ["report", str(root / "sweep"), "--budget", "0.5", "--tokens", str(TOKENS), "--quiet"]
    assert main(argv) == 0
    return root / "sweep"


def expected_compute(sweep_dir: Path) -> list[float]:
    """Per-token mean compute straight from the telemetry, independent of the report code."""
    model, tokenizer = load(str(sweep_dir / "models" / "teal"))
    set_budget(model, 0.5)
    ids = tokenizer(load_text("wikitext2"), add_special_tokens=False).input_ids[:TOKENS]
    with torch.no_grad(), ComputeTrace(model) as trace:
        model(torch.tensor([ids]))
        return trace.pop().mean(dim=1).tolist()


def test_page_is_self_contained_and_matches_telemetry(report):
    page = (report / "report" / "index.html").read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # no network assets
    assert "<svg" in page and "| teal |" not in page  # inline plot, HTML table (not Markdown)
    values = [float(v) for v in re.findall(r'class="tok" data-index="\d+" data-compute="([0-9.]+)"', page)]
    assert values == pytest.approx(expected_compute(report), abs=1e-6)
    assert len(set(values)) > 1


def test_report_errors(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no sweep results" in capsys.readouterr().err


def test_report_renders_in_chromium(report, tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed (pip install -e '.[test]')")
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("Chromium is not installed: apt-get install chromium chromium-driver (as .ci/run does)")
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,1600"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        driver.get((report / "report" / "index.html").as_uri())
        tokens = driver.find_elements(By.CSS_SELECTOR, ".heatmap .tok")
        assert len(tokens) == TOKENS
        shown = [float(t.get_attribute("data-compute")) for t in tokens]
        assert shown == pytest.approx(expected_compute(report), abs=1e-6)
        ActionChains(driver).move_to_element(tokens[3]).perform()
        assert driver.find_element(By.ID, "detail").text.startswith("token 3 ")
        assert len(driver.find_elements(By.CSS_SELECTOR, "#layer-bars .bar")) == 2
        errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        assert errors == []
        screenshot = tmp_path / "report.png"
        assert driver.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 10_000
    finally:
        driver.quit()
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_generate_show_compute_streams_the_same_answer(report, capsys):
    model = str(report / "models" / "teal")
    argv = ["generate", model, "The river", "--raw", "--max-new-tokens", "12", "--budget", "0.5", "--quiet"]
    assert main(argv) == 0
    plain = capsys.readouterr().out.splitlines()[0]
    assert main([*argv, "--show-compute"]) == 0
    streamed = capsys.readouterr().out
    answer, stats = streamed.split("\n12 tokens in ")  # the answer (wrapped at token boundaries), then the stats
    assert answer.split() == plain.split()
    mean = float(re.search(r"mean FFN compute ([0-9.]+) of dense", stats).group(1))
    assert 0.2 < mean < 0.8  # the budget was in force

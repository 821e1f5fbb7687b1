"""The dashboard in real headless Chromium (Debian's, driven by Playwright) against the whole service: a catalog
of 2 models x 2 recipes runs on a real worker while the page polls; every cell must end succeeded showing the
API's numbers, each model's chart must plot its points with the recommendation marked, and the jobs page must
filter by state. A screenshot of the finished catalog goes to bench/results/."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.compress.conftest import build_random_llama
from tests.conftest import CORPUS, REPO, SHARED_MODEL

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FAST = {"calibration": {"samples": 8, "seq_len": 128}, "validation": {"seq_len": 128, "max_windows": 4}}
SCREENSHOT = REPO / "bench" / "results" / "dashboard-catalog.png"


@pytest.fixture(scope="module")
def browser():  # type: ignore[no-untyped-def]
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                              args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield instance
        instance.close()


def _enter_key(page, key: str) -> None:  # type: ignore[no-untyped-def]
    page.wait_for_selector("[data-testid=key-form]")
    page.fill("[data-testid=key-input]", key)
    page.click("[data-testid=key-form] button")


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.2f} MB"


def test_the_catalog_page_follows_a_catalog_to_its_recommendations(s3_stack, browser, tmp_path: Path) -> None:
    random_model = build_random_llama(tmp_path / "random-llama")
    catalog = {
        "name": "dashboard", "tolerance_pct": 50,
        "models": [{"uri": SHARED_MODEL.as_uri(), "name": "shakespeare", "eval_uri": (CORPUS / "eval.txt").as_uri()},
                   {"uri": random_model.as_uri(), "name": "random"}],
        "recipes": [
            {"name": "int4-g32", "recipe": {"modifiers": [{"method": "rtn", "bits": 4, "group_size": 32}], **FAST}},
            {"name": "int8", "recipe": {"modifiers": [{"method": "rtn", "bits": 8, "group_size": None}], **FAST}},
        ],
    }
    response = s3_stack.api.post("/v1/catalogs", json=catalog)
    assert response.status_code == 201, response.text
    catalog_id = response.json()["id"]
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{s3_stack.api.base_url}/#/catalogs/{catalog_id}")
    # API keys are required: the page asks for one, refuses a wrong one, and keeps the right one for the tab
    _enter_key(page, "srk_000000000000_" + "x" * 43)
    page.wait_for_selector("[data-testid=key-form] >> text=not valid")
    _enter_key(page, s3_stack.api_key)
    page.wait_for_selector("[data-testid=cell]")
    # the page polls: wait for every cell to reach a final state without reloading it
    page.wait_for_function("() => [...document.querySelectorAll('[data-testid=cell]')].length === 4 && "
                           "[...document.querySelectorAll('[data-testid=cell]')].every(c => "
                           "['succeeded', 'failed', 'cancelled'].includes(c.dataset.status))", timeout=600_000)
    view = s3_stack.api.get(f"/v1/catalogs/{catalog_id}").json()
    assert view["counts"] == {"succeeded": 4}, (view, s3_stack.worker.log_tail())
    page.wait_for_timeout(2500)  # one more poll, so the page shows the final reports
    for cell in view["cells"]:
        shown = page.locator(f"[data-testid=cell][data-model='{cell['model']}'][data-recipe='{cell['recipe']}']")
        assert shown.get_attribute("data-status") == "succeeded"
        assert shown.locator("[data-testid=size]").inner_text() == _megabytes(cell["size_bytes"])
        assert shown.locator("[data-testid=ppl]").inner_text() == f"{cell['ppl_after']:.3f}"
    for pick in view["recommendations"]:
        chart = page.locator(f"[data-testid=chart][data-model='{pick['model']}']")
        assert chart.locator("circle.point").count() == 2
        assert chart.locator("circle.recommended").get_attribute("data-recipe") == pick["recipe"]
        assert page.locator(f"[data-testid=recommendation][data-model='{pick['model']}']").inner_text().find(
            pick["recipe"]) >= 0
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)

    page.goto(f"{s3_stack.api.base_url}/#/jobs?catalog={catalog_id}")
    page.wait_for_selector("[data-testid=job-row]")
    assert page.locator("[data-testid=job-row]").count() == 4
    page.select_option("[data-testid=status-filter]", "failed")
    page.wait_for_function("() => document.querySelector('[data-testid=job-total]').innerText === '0 jobs'")
    assert page.locator("[data-testid=job-row]").count() == 0

    first_job = view["cells"][0]["job_id"]
    page.goto(f"{s3_stack.api.base_url}/#/jobs/{first_job}")
    page.wait_for_selector("[data-testid=timeline] [data-testid=stage]")
    assert page.locator("[data-testid=timeline] [data-testid=stage]").count() == 5  # fetch ... publish
    assert page.locator("[data-testid=report-perplexity-after]").inner_text() == f"{view['cells'][0]['ppl_after']:.3f}"
    assert page.locator("[data-testid=artifacts] li").count() > 0
    assert errors == []

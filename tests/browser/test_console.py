"""The console in a real browser (Debian's chromium driven by Playwright): log in, start the
diagnostics job, and watch its progress bar reach 100 % through the live event stream."""

import re

import pytest
from playwright.sync_api import expect, sync_playwright

from support import ARTIFACTS

CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, stack):
    context = browser.new_context(ignore_https_errors=True, base_url=stack.url)
    page = context.new_page()
    yield page
    context.close()


def log_in(page, stack, password=None):
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login"))
    page.fill("input[name=password]", password or stack.password)
    page.click("button[type=submit]")


def test_wrong_password_shows_the_reason(page, stack):
    log_in(page, stack, password="wrong")
    expect(page.locator("p.error")).to_have_text("wrong user name or password")
    stack.store().delete_prefix("auth/login-failures/")


def test_login_run_diagnostics_and_see_progress_reach_100(page, stack):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log_in(page, stack)
    row = page.locator(f'tr[data-node="{stack.node}"]')
    expect(row).to_contain_text("online")
    member = page.locator("#cluster-health tr[data-member]")
    expect(member).to_have_count(1)
    expect(member).to_contain_text("leader")
    expect(member.locator("td").nth(1)).to_have_text("voter")
    expect(page.locator("#quorum")).to_contain_text("1 of 1 voting members answer (1 needed): losing one more")
    page.screenshot(path=str(ARTIFACTS / "console-dashboard.png"), full_page=True)

    row.get_by_role("button", name="Run diagnostics").click()
    expect(page).to_have_url(re.compile(r"/jobs/\d{8}-"))
    job_row = page.locator("tr[data-job-id]")
    expect(job_row.locator(".job-state")).to_have_text("success", timeout=30_000)
    expect(job_row.locator(".job-progress")).to_have_text("100%")
    expect(job_row.locator(".bar")).to_have_attribute("aria-valuenow", "100")
    expect(job_row.locator(".fill")).to_have_attribute("style", re.compile(r"width: 100%"))
    expect(page.locator("#job-log li").last).to_have_text("finished")
    expect(page.locator("#job-log li")).to_contain_text([re.compile("^kernel: "), re.compile("store round trip")])
    expect(page.locator("pre.result")).to_contain_text("store_latency")
    expect(page.get_by_role("button", name="Abort")).to_have_count(0)
    page.screenshot(path=str(ARTIFACTS / "console-job.png"), full_page=True)


def test_jobs_page_follows_a_running_job_live(page, stack):
    log_in(page, stack)
    page.goto("/jobs")
    session = stack.session()
    job = session.post(f"{stack.url}/api/v1/nodes/{stack.node}/diagnostics", json={"samples": 4000}).json()
    row = page.locator(f'tr[data-job-id="{job["id"]}"]')     # appears without a reload
    expect(row.locator(".job-state")).to_have_text("running", timeout=20_000)
    seen_partial = row.locator(".job-progress").text_content()
    expect(row.locator(".job-state")).to_have_text("success", timeout=60_000)
    expect(row.locator(".job-progress")).to_have_text("100%")
    assert seen_partial != "100%"
    page.screenshot(path=str(ARTIFACTS / "console-jobs-live.png"), full_page=True)

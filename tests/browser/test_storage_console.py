"""The storage pages in a real browser: tick two free disks (loop devices on this host), make a
raid1 pool, add a volume, snapshot it, and see a refusal explained — all through the console."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect, sync_playwright

from support import ARTIFACTS, storage_stack

CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    with storage_stack(tmp_path_factory.mktemp("storage-console"), 2, 400) as (stack, loops):
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            context = browser.new_context(ignore_https_errors=True, base_url=stack.url)
            page = context.new_page()
            page.goto("/login")
            page.fill("input[name=password]", stack.password)
            page.click("button[type=submit]")
            yield stack, loops, page
            browser.close()


def wait_for_job(page):
    try:
        expect(page).to_have_url(re.compile(r"/jobs/\d{8}-"))
        expect(page.locator("tr[data-job-id] .job-state")).to_have_text("success", timeout=90_000)
    except AssertionError:        # keep what the page said for the record
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "console-storage-failed.png"), full_page=True)
        raise AssertionError(f"the job did not succeed; the page said: {page.inner_text('main')[:1500]}") from None


def test_create_a_pool_from_ticked_disks(rig):
    stack, loops, page = rig
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.goto("/storage")
    for disk_id in loops.ids():
        row = page.locator(f'tr[data-disk="{disk_id}"]')
        expect(row.locator("td.usage-free")).to_have_text("free")
        row.locator("input[type=checkbox]").check()
    page.screenshot(path=str(ARTIFACTS / "console-storage.png"), full_page=True)
    form = page.locator("#create-pool")
    form.locator("input[name=name]").fill("tank")
    form.locator("select[name=profile]").select_option("raid1")
    form.get_by_role("button", name="Create pool").click()
    wait_for_job(page)
    page.goto("/storage")
    expect(page.locator('tr[data-pool="tank"]')).to_contain_text("online")
    for disk_id in loops.ids():
        expect(page.locator(f'tr[data-disk="{disk_id}"] td.usage-pool')).to_have_text("pool")


def test_volume_and_snapshot_from_the_pool_page(rig):
    stack, loops, page = rig
    page.goto("/storage/pools/tank")
    expect(page.locator("#pool-health")).to_have_text("online")
    form = page.locator("#create-volume")
    form.locator("input[name=name]").fill("media")
    form.locator("input[name=quota_gib]").fill("0.1")
    form.get_by_role("button", name="Create volume").click()
    wait_for_job(page)
    page.goto("/storage/pools/tank")
    row = page.locator('tr[data-volume="media"]')
    expect(row).to_contain_text("102.4 MiB")
    row.locator("input[name=snapshot_name]").fill("first")
    row.get_by_role("button", name="Snapshot now").click()
    wait_for_job(page)
    page.goto("/storage/pools/tank")
    expect(page.locator('tr[data-volume="media"] li[data-snapshot="first"]')).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "console-pool.png"), full_page=True)


def test_a_refusal_says_why(rig):
    stack, loops, page = rig
    page.goto("/storage/pools/tank")
    page.locator(".danger-zone input[name=confirm]").fill("not-tank")
    page.get_by_role("button", name="Destroy pool").click()
    expect(page.locator("p.error")).to_contain_text("destroying pool tank needs confirm='tank'")


def test_users_groups_and_a_share_from_the_shares_page(rig):
    stack, loops, page = rig
    page.goto("/shares")
    page.locator("#create-group input[name=name]").fill("team")
    page.locator("#create-group").get_by_role("button", name="Add group").click()
    expect(page.locator('tr[data-group="team"]')).to_contain_text("10000")
    form = page.locator("#create-user")
    form.locator("input[name=name]").fill("alice")
    form.locator("input[name=full_name]").fill("Alice L.")
    form.locator("input[name=password]").fill("Secret-123")
    form.locator("select[name=groups]").select_option("team")
    form.get_by_role("button", name="Add user").click()
    expect(page.locator('tr[data-user="alice"]')).to_contain_text("team")
    share = page.locator("#create-share")
    share.locator("input[name=name]").fill("Media")
    share.locator("select[name=volume]").select_option("tank/media")
    share.locator("textarea[name=permissions]").fill("user:alice=rw\ngroup:team=ro")
    share.locator("textarea[name=nfs_clients]").fill("10.0.0.0/24 ro")
    share.get_by_role("button", name="Create share").click()
    row = page.locator('tr[data-share="Media"]')
    expect(row).to_contain_text("user:alice=rw")
    expect(row).to_contain_text("10.0.0.0/24 (ro)")
    page.screenshot(path=str(ARTIFACTS / "console-shares.png"), full_page=True)
    page.locator('tr[data-group="team"]').get_by_role("button", name="Delete").click()
    expect(page.locator("p.error")).to_contain_text("group team is still used: members alice")

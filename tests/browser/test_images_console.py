"""The Images page in a real browser, on a real stack with a btrfs pool on a loop device: a disk
image uploaded through the form (a raw PUT by XMLHttpRequest with the session's CSRF token, upload
throttled so the progress bar is seen part-way) is listed and offered in the New VM form; a text
file is refused with the reason on the page; the Delete button removes an image."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect, sync_playwright

from support import ARTIFACTS, finish_job, storage_stack

CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
MiB = 1 << 20


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    base = tmp_path_factory.mktemp("images-console")
    with storage_stack(base, 1, 400) as (stack, loops):
        job = finish_job(stack.session(), stack, "POST", "/pools",
                         json={"name": "tank", "node": stack.node, "disks": loops.ids(), "profile": "single"})
        assert job["state"] == "success", job
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            context = browser.new_context(ignore_https_errors=True, base_url=stack.url)
            page = context.new_page()
            page.goto("/login")
            page.fill("input[name=password]", stack.password)
            page.click("button[type=submit]")
            expect(page.locator("header nav")).to_be_visible()
            yield stack, page, base
            browser.close()


def test_an_uploaded_disk_image_shows_progress_is_listed_and_offered_for_new_vms(rig):
    stack, page, base = rig
    disk = base / "disk.img"
    disk.write_bytes(b"\xeb" * (4 * MiB))
    page.goto("/images")
    expect(page.locator("table.images")).to_contain_text("No images yet")
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 0, "downloadThroughput": -1,
                                                  "uploadThroughput": 2 * MiB})
    page.set_input_files("#upload-image input[name=file]", str(disk))
    page.click("#upload-image button[type=submit]")
    page.wait_for_function("() => { const v = +document.querySelector('#upload-image .bar')"
                           ".getAttribute('aria-valuenow'); return v > 0 && v < 100; }", timeout=20_000)
    row = page.locator('tr[data-image="tank/disk.img"]')
    expect(row.locator(".image-kind")).to_have_text("disk", timeout=30_000)
    cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 0, "downloadThroughput": -1,
                                                  "uploadThroughput": -1})
    assert ("raw", "4 MiB") == (row.locator(".image-format").inner_text(), row.locator(".image-size").inner_text())
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "console-images.png"), full_page=True)
    path = f"{stack.dir}/pools/tank/images/disk.img"
    assert (base / "pools" / "tank" / "images" / "disk.img").read_bytes() == disk.read_bytes()
    page.goto("/vms")
    assert [path] == page.locator("#uploaded-disks option").evaluate_all("options => options.map(o => o.value)")
    assert 0 == page.locator("#uploaded-isos option").count()


def test_a_file_that_is_no_image_is_refused_with_the_reason_on_the_page(rig):
    stack, page, base = rig
    notes = base / "notes.txt"
    notes.write_text("hello, not an image\n")
    page.goto("/images")
    page.set_input_files("#upload-image input[name=file]", str(notes))
    page.click("#upload-image button[type=submit]")
    expect(page.locator("#upload-status.error")).to_contain_text("notes.txt is not a disk image (20 bytes")
    assert 0 == page.locator('tr[data-image="tank/notes.txt"]').count()


def test_the_delete_button_removes_the_image(rig):
    stack, page, base = rig
    page.goto("/images")
    page.locator('tr[data-image="tank/disk.img"] form.delete-image button').click()
    expect(page.locator("table.images")).to_contain_text("No images yet")
    assert not (base / "pools" / "tank" / "images" / "disk.img").exists()

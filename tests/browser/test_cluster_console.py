"""Creating and joining a cluster in a real browser: node1's Cluster page creates the cluster and
makes a join token; the token is copied from node1's page into node2's join form; node1's page then
lists node2 online. Two nodes run as appliances run them (etcd restarted by the jobs) on 127.x
addresses of this module's own."""

from __future__ import annotations

import random

import pytest
from playwright.sync_api import expect, sync_playwright

from support import CHROMIUM_ARGS, start_node, wait_until

NET = f"127.{random.randint(100, 250)}.{random.randint(0, 250)}"


@pytest.fixture(scope="module")
def nodes(tmp_path_factory):
    started = []
    try:
        for number in (1, 2):
            started.append(start_node(tmp_path_factory.mktemp(f"node{number}"), f"{NET}.{number}", f"node{number}"))
        yield started
    finally:
        for stack in started:
            stack.stop()


def logged_in(browser, stack):
    page = browser.new_context(ignore_https_errors=True, base_url=stack.url).new_page()
    page.goto("/login")
    page.fill("input[name=password]", stack.password)
    page.click("button[type=submit]")
    page.wait_for_selector("header nav")
    return page


def test_create_then_join_with_the_token_copied_from_one_console_into_the_other(nodes):
    node1, node2 = nodes
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            first = logged_in(browser, node1)
            first.click("nav >> text=Cluster")
            expect(first.locator("#create-cluster")).to_be_visible()
            first.fill("#create-cluster input[name=name]", "office")
            first.fill("#create-cluster input[name=address]", f"{NET}.1/24")
            first.click("#create")
            # The job page shows the job; the console reloads with the cluster's certificate meanwhile.
            wait_until(lambda: _cluster_shown(first), 120, "node1's Cluster page shows the cluster")
            expect(first.locator("#cluster-info h2")).to_have_text("Cluster office")
            expect(first.locator('#cluster-info tr[data-node="node1"]')).to_contain_text("online")
            first.click("#make-token")
            token = first.locator("#join-token").input_value()
            assert token.startswith("cairn-join-1.")

            second = logged_in(browser, node2)
            second.click("nav >> text=Cluster")
            second.fill("#join-cluster textarea[name=token]", token)
            second.fill("#join-cluster input[name=address]", f"{NET}.2/24")
            second.click("#join")
            wait_until(lambda: _online_on(first, "node2"), 120, "node1's Cluster page lists node2 online")
            expect(first.locator("tr[data-token]")).to_contain_text("node2")      # the token, used by node2
        finally:
            browser.close()


def _cluster_shown(page) -> bool:
    try:
        page.goto("/cluster")
        return page.locator("#cluster-info").count() == 1
    except Exception:           # playwright's Error while the console reloads
        return False


def _online_on(page, node: str) -> bool:
    try:
        page.goto("/cluster")
        row = page.locator(f'#cluster-info tr[data-node="{node}"]')
        return row.count() == 1 and "online" in row.inner_text()
    except Exception:
        return False

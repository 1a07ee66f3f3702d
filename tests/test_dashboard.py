"""The dashboard in a real headless Chromium against a real API and worker: the ticket, the
blotter's live statuses, cancel, the order detail, the market panel, keys mode, and a page that
logs no errors. Screenshots of each screen go to test-artifacts/dashboard/ (not committed)."""

import re
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import websockets

from shared import apikeys
from tests import browser as chromium
from tests.browser import DESKTOP, PHONE, open_page
from tests.conftest import Stack, StackFactory
from tests.procs import TERMINAL, events_until

chromium.require_browser()  # skips (or under CI fails) the whole module, saying why

from playwright.async_api import Page, expect  # noqa: E402

WAIT_MS = 20_000


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Any]:
    async for b in chromium.launch():
        yield b


def row(page: Page, order_id: str | None = None) -> Any:
    if order_id is None:
        return page.locator('[data-testid="order-row"]')
    return page.locator(f'[data-testid="order-row"][data-order-id="{order_id}"]')


async def fill_order(
    page: Page, amount: str, token_in: str = "SOL", token_out: str = "USDC"
) -> None:
    await page.get_by_test_id("token-in").select_option(token_in)
    await page.get_by_test_id("token-out").select_option(token_out)
    await page.get_by_test_id("amount-in").fill(amount)


async def finished_order(stack: Stack, body: dict[str, Any]) -> dict[str, Any]:
    """Submit through the API and follow it over the WebSocket to its end."""
    accepted = await stack.submit(body)
    async with websockets.connect(accepted["wsUrl"]) as ws:
        await events_until(ws, TERMINAL, timeout_s=20)
    order: dict[str, Any] = (await stack.http.get(f"/api/orders/{accepted['orderId']}")).json()
    return order


async def test_market_order_from_the_form_reaches_confirmed(browser: Any, stack: Stack) -> None:
    w = await open_page(browser, stack.base_url)
    page = w.page
    await fill_order(page, "1.5")
    preview = page.get_by_test_id("quote-preview")
    # The preview shows both venues' quotes, the chosen one marked, and why.
    await expect(preview.locator(".venue-quote")).to_have_count(2, timeout=WAIT_MS)
    await expect(preview.locator(".venue-quote.chosen")).to_have_count(1)
    await expect(preview).to_contain_text("Route:")
    await w.shot("ticket-quote-preview")
    await page.get_by_test_id("submit-order").click()
    await expect(row(page)).to_have_count(1, timeout=WAIT_MS)
    order_id = await row(page).first.get_attribute("data-order-id")
    assert order_id
    await expect(row(page, order_id)).to_have_attribute("data-status", "confirmed", timeout=WAIT_MS)
    stored = (await stack.http.get(f"/api/orders/{order_id}")).json()
    assert stored["status"] == "confirmed" and stored["amountIn"] == "1.5", stored
    # The row shows what the engine reports: the venue, and the tx signature shortened.
    cells = row(page, order_id)
    await expect(cells).to_contain_text(stored["txHash"][:6])
    venue = {"raydium": "Raydium", "meteora": "Meteora"}[stored["dexChosen"]]
    await expect(cells).to_contain_text(venue)
    await w.shot("blotter-confirmed")
    assert w.errors == [], w.errors


async def test_an_invalid_amount_shows_the_api_message_by_its_field(
    browser: Any, stack: Stack
) -> None:
    bad = "0.0000000001"  # finer than SOL's 9 decimals
    refused = await stack.http.post(
        "/api/orders/execute", json={"tokenIn": "SOL", "tokenOut": "USDC", "amountIn": bad}
    )
    assert refused.status_code == 400
    detail = refused.json()["details"][0]
    assert detail["field"] == "amountIn", detail
    w = await open_page(browser, stack.base_url)
    page = w.page
    await fill_order(page, bad)
    await page.get_by_test_id("submit-order").click()
    message = page.locator("#err-amountIn")
    await expect(message).to_have_text(detail["message"], timeout=WAIT_MS)
    await expect(page.get_by_test_id("amount-in")).to_have_attribute("aria-invalid", "true")
    await expect(page.get_by_test_id("amount-in")).to_be_focused()
    await w.shot("ticket-invalid-amount")
    assert (await stack.http.get("/api/orders")).json()["count"] == 0  # nothing was written
    await expect(row(page)).to_have_count(0)
    # Correcting the field clears its message.
    await page.get_by_test_id("amount-in").fill("1")
    await expect(message).to_be_hidden()


async def test_a_far_limit_order_waits_and_is_cancelled_from_the_blotter(
    browser: Any, stack: Stack
) -> None:
    w = await open_page(browser, stack.base_url)
    page = w.page
    await page.get_by_role("radio", name="Limit").check()
    await fill_order(page, "1")
    await page.locator("#limit-price").fill("1000000")  # USDC per SOL: far above the market
    await page.get_by_test_id("submit-order").click()
    await expect(row(page)).to_have_count(1, timeout=WAIT_MS)
    order_id = await row(page).first.get_attribute("data-order-id")
    line = row(page, order_id)
    await expect(line).to_have_attribute("data-status", "pending", timeout=WAIT_MS)
    await w.shot("blotter-limit-waiting")
    await line.get_by_test_id("cancel-order").click()
    await expect(line).to_have_attribute("data-status", "cancelled", timeout=WAIT_MS)
    stored = (await stack.http.get(f"/api/orders/{order_id}")).json()
    assert stored["status"] == "cancelled", stored
    await expect(line.get_by_test_id("cancel-order")).to_have_count(0)  # nothing left to cancel
    # The status filter shows it under "cancelled" and not under "confirmed".
    await page.locator("#status-filter").select_option("confirmed")
    await expect(row(page)).to_have_count(0, timeout=WAIT_MS)
    await page.locator("#status-filter").select_option("cancelled")
    await expect(row(page, order_id)).to_have_count(1, timeout=WAIT_MS)
    assert w.errors == [], w.errors


async def test_a_page_opened_after_an_order_finished_shows_its_whole_timeline(
    browser: Any, stack: Stack
) -> None:
    order = await finished_order(stack, {"tokenIn": "SOL", "tokenOut": "USDC", "amountIn": "2"})
    assert order["status"] == "confirmed", order
    statuses = [e["status"] for e in order["events"]]
    assert statuses == ["pending", "routing", "building", "submitted", "confirmed"], statuses
    for viewport, name in ((DESKTOP, "desktop"), (PHONE, "phone")):
        w = await open_page(browser, stack.base_url, viewport)
        page = w.page
        line = row(page, order["orderId"])
        await expect(line).to_have_attribute("data-status", "confirmed", timeout=WAIT_MS)
        await line.focus()
        await page.keyboard.press("Enter")  # the blotter works from the keyboard
        detail = page.get_by_test_id("order-detail")
        await expect(detail).to_be_visible()
        events = detail.locator(".timeline .ev")
        await expect(events).to_have_count(len(statuses), timeout=WAIT_MS)
        for i, status in enumerate(statuses):
            await expect(events.nth(i)).to_have_attribute("data-status", status)
        # Each step after the first says how long it took.
        await expect(events.nth(4)).to_contain_text(re.compile(r"\+\d"))
        await expect(detail.locator(".venue-quote")).to_have_count(2)
        await expect(detail.locator(".venue-quote.chosen")).to_have_count(1)
        chosen = await detail.locator(".venue-quote.chosen").get_attribute("data-dex")
        assert chosen == order["dexChosen"]
        await expect(detail).to_contain_text(order["signer"][:6])
        await detail.get_by_test_id("verify-signature").click()
        await expect(detail.get_by_test_id("verify-result")).to_have_attribute(
            "data-ok", "true", timeout=WAIT_MS
        )
        await w.shot(f"order-detail-{name}")
        await page.keyboard.press("Escape")
        await expect(detail).to_be_hidden()
        await expect(line).to_be_focused()  # focus goes back where it was
        assert w.errors == [], w.errors
        await page.context.close()


async def test_the_market_panel_updates(browser: Any, make_stack: StackFactory) -> None:
    stack = await make_stack(sim_tick_ms=100)  # the worker's ticker moves the market
    w = await open_page(browser, stack.base_url)
    page = w.page
    panel = page.get_by_test_id("market-panel")
    cell = panel.locator('tr[data-pair="SOL/USDC"] td[data-venue="raydium"]')
    await expect(cell).to_have_text(re.compile(r"\d"), timeout=WAIT_MS)
    first = await cell.inner_text()
    await expect(cell).not_to_have_text(first, timeout=WAIT_MS)
    await expect(panel).to_have_attribute(
        "data-updates", re.compile(r"^([3-9]|\d\d+)$"), timeout=WAIT_MS
    )
    # The sparklines draw both venues.
    await expect(panel.locator('tr[data-pair="SOL/USDC"] polyline')).to_have_count(
        2, timeout=WAIT_MS
    )
    await expect(panel.locator("tbody tr")).to_have_count(11)
    await w.shot("market-panel")
    assert w.errors == [], w.errors


async def test_the_page_logs_no_errors_at_either_width(browser: Any, stack: Stack) -> None:
    for viewport, name in ((DESKTOP, "desktop"), (PHONE, "phone")):
        w = await open_page(browser, stack.base_url, viewport)
        page = w.page
        await expect(page.get_by_test_id("stats-panel").locator("dd").first).to_have_text(
            re.compile(r"\d"), timeout=WAIT_MS
        )
        await expect(page.get_by_test_id("market-panel").locator("tbody tr")).to_have_count(11)
        await fill_order(page, "0.5", "USDC", "SOL")
        await expect(page.get_by_test_id("quote-preview").locator(".venue-quote")).to_have_count(
            2, timeout=WAIT_MS
        )
        await page.get_by_test_id("submit-order").click()
        await expect(row(page).first).to_have_attribute("data-status", "confirmed", timeout=WAIT_MS)
        await expect(page.get_by_test_id("stats-panel")).to_contain_text("By venue")
        # Nothing wider than the screen: a phone scrolls down, not sideways.
        overflow = await page.evaluate("document.documentElement.scrollWidth - innerWidth")
        assert overflow <= 0, f"{name}: {overflow}px wider than the viewport"
        await w.shot(f"dashboard-{name}", full_page=True)
        assert w.errors == [], (name, w.errors)
        await page.context.close()


async def test_keys_mode_asks_for_a_key_and_trades_with_it(
    browser: Any, make_stack: StackFactory, db: asyncpg.Connection
) -> None:
    stack = await make_stack(auth_mode="keys")
    key = (await apikeys.create_key(db, "alice", [apikeys.Scope.TRADE])).key
    w = await open_page(browser, stack.base_url)
    page = w.page
    dialog = page.locator("#key-dialog")
    await expect(dialog).to_be_visible(timeout=WAIT_MS)
    await w.shot("keys-prompt")
    await page.locator("#key-input").fill(key)
    await page.keyboard.press("Enter")
    await expect(dialog).to_be_hidden()
    await expect(page.locator("#account")).to_have_text("account alice", timeout=WAIT_MS)
    await fill_order(page, "1")
    await page.get_by_test_id("submit-order").click()
    # The row's live status comes over a WebSocket opened with a one-use token.
    await expect(row(page).first).to_have_attribute("data-status", "confirmed", timeout=WAIT_MS)
    await expect(page.get_by_test_id("market-panel").locator("tbody tr")).to_have_count(11)
    order_id = await row(page).first.get_attribute("data-order-id")
    mine = await stack.http.get(f"/api/orders/{order_id}", headers={"X-API-Key": key})
    assert mine.json()["account"] == "alice"
    # The key stays in this tab's sessionStorage only, never in a URL or cookie.
    assert await page.evaluate("sessionStorage.getItem('oee.apiKey')") == key
    assert await page.context.cookies() == []
    # The 401s before the key was given are the only errors (the browser logs refused fetches).
    assert all("401" in e for e in w.errors), w.errors

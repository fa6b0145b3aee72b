"""The demo under its Content-Security-Policy: a whole call breaks no rule of
it, and the one inline handler (the "SDK did not load" banner) still runs."""

from __future__ import annotations

from playwright.async_api import ConsoleMessage, Route, expect

from tests.browser.support import Demo, ms


def csp_violations(messages: list[ConsoleMessage]) -> list[str]:
    return [m.text for m in messages if "Content Security Policy" in m.text or "Content-Security-Policy" in m.text]


async def test_a_call_breaks_no_rule_of_the_demos_csp(demo: Demo) -> None:
    alice = await demo.phone("alice", login=False)
    bob = await demo.phone("bob", login=False)
    messages: list[ConsoleMessage] = []
    for phone in (alice, bob):
        # Playwright cannot take a bound builtin as a listener: a function.
        phone.page.on("console", lambda message: messages.append(message))  # noqa: PLW0108
        await phone.page.reload(timeout=ms())
        await phone.login()
    await demo.call(alice, bob)
    await bob.testid("hangup").click()
    await alice.expect_ended("COMPLETED")
    assert not csp_violations(messages), csp_violations(messages)


async def test_the_boot_error_banner_runs_under_the_csp(demo: Demo) -> None:
    alice = await demo.phone("alice", login=False)
    messages: list[ConsoleMessage] = []
    alice.page.on("console", lambda message: messages.append(message))  # noqa: PLW0108

    async def missing(route: Route) -> None:
        await route.fulfill(status=404, body="not built")

    await alice.page.route("**/app.js", missing)
    await alice.page.reload(timeout=ms())
    await expect(alice.page.locator("#boot-error")).to_be_visible()
    assert not csp_violations(messages), csp_violations(messages)

"""Presence, contacts and the directory through the demo, and the login form's errors."""

from __future__ import annotations

from playwright.async_api import expect

from tests.browser.support import Demo, ms


async def test_contact_from_directory_shows_live_presence(demo: Demo) -> None:
    # Presence visibility is "contacts" (the default): alice sees bob once bob
    # has added her (his consent), and shows him once she adds him.
    alice = await demo.phone("alice")
    bob = await demo.phone("bob")

    await bob.testid("directory-query").fill("alice")
    await bob.testid("directory-search").click()
    consent = bob.page.locator('[data-testid="directory-entry"][data-subscriber="alice"]')
    await expect(consent).to_be_visible(timeout=ms())
    await consent.get_by_test_id("directory-add").click()
    await expect(consent.get_by_test_id("directory-add")).to_have_text("Added", timeout=ms())

    await alice.testid("directory-query").fill("bob")
    await alice.testid("directory-search").click()
    entry = alice.page.locator('[data-testid="directory-entry"][data-subscriber="bob"]')
    await expect(entry).to_contain_text("Bob Marley", timeout=ms())
    await entry.get_by_test_id("directory-add").click()
    await expect(entry.get_by_test_id("directory-add")).to_have_text("Added", timeout=ms())

    contact = alice.page.locator('[data-testid="contact"][data-subscriber="bob"]')
    dot = contact.get_by_test_id("presence-dot")
    await expect(dot).to_have_attribute("data-status", "AVAILABLE", timeout=ms())

    await bob.testid("presence-note").fill("back at 3")
    await bob.testid("presence-status").select_option("AWAY")
    await expect(bob.testid("my-presence")).to_contain_text("Away — back at 3", timeout=ms())
    await expect(dot).to_have_attribute("data-status", "AWAY", timeout=ms())
    await expect(contact).to_contain_text("Away — back at 3")

    await bob.testid("presence-status").select_option("DO_NOT_DISTURB")
    await expect(dot).to_have_attribute("data-status", "DO_NOT_DISTURB", timeout=ms())
    await bob.testid("presence-status").select_option("OFFLINE")  # "appear offline"
    await expect(dot).to_have_attribute("data-status", "OFFLINE", timeout=ms())
    await bob.testid("presence-status").select_option("AVAILABLE")
    await expect(dot).to_have_attribute("data-status", "AVAILABLE", timeout=ms())

    # Calling from the contact list; bob in a call shows as busy to alice.
    await contact.get_by_test_id("contact-call").click()
    await bob.answer("alice")
    await expect(contact).to_contain_text("Busy (in a call)", timeout=ms())
    await expect(bob.testid("presence-status")).to_have_value("AVAILABLE")  # what bob chose stays
    await bob.testid("hangup").click()
    await expect(dot).to_have_attribute("data-status", "AVAILABLE", timeout=ms())


async def test_login_error_then_contacts_by_hand(demo: Demo) -> None:
    alice = await demo.phone("alice", login=False)
    await alice.testid("login-username").fill("alice")
    await alice.testid("login-password").fill("not her password")
    await alice.testid("login-submit").click()
    await expect(alice.testid("login-error")).to_contain_text("UNAUTHENTICATED", timeout=ms())
    await alice.login()

    form = alice.testid("contact-form")
    await alice.page.get_by_text("Add a contact by hand").click()
    await form.get_by_test_id("contact-name").fill("Carol Office")
    await form.get_by_test_id("contact-phone").fill("+34 600 999 888")
    await form.get_by_test_id("contact-add").click()
    carol = alice.testid("contact").filter(has_text="Carol Office")
    await expect(carol).to_contain_text("+34", timeout=ms())
    await expect(alice.testid("contacts-empty")).to_be_hidden()

    favorite = carol.get_by_test_id("contact-favorite")
    await favorite.click()
    await expect(favorite).to_have_attribute("aria-pressed", "true", timeout=ms())

    # A bad number is refused by the core; the demo shows the WacError.
    await form.get_by_test_id("contact-name").fill("Nobody")
    await form.get_by_test_id("contact-phone").fill("not a number")
    await form.get_by_test_id("contact-add").click()
    await expect(alice.testid("error")).to_contain_text("INVALID_ARGUMENT", timeout=ms())

    await carol.get_by_test_id("contact-delete").click()
    await expect(alice.testid("contact")).to_have_count(0, timeout=ms())
    await expect(alice.testid("contacts-empty")).to_be_visible()

    # A reload keeps the session (the demo keeps it in sessionStorage, per tab).
    await alice.page.reload()
    await expect(alice.testid("me")).to_contain_text("alice", timeout=ms())
    await alice.wait_connected()
    await expect(alice.testid("login-form")).to_be_hidden()

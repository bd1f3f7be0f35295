"""Accessibility of the portal in a real browser (SQLite): axe-core finds no violation on any
page; a keyboard alone signs in and opens a conversation (skip link first, focus always
visible); the inbox reflows at 320 CSS pixels and at 200 % zoom without horizontal scrolling
(RGAA 10.7, 10.11, 12.7 and the rest of what axe checks)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from .conftest import FOCUS_JS, Browsing, LivePortal, focus_is_visible

#: The pages axe checks, by route and `data-page` (the conversation is added at run time).
ANONYMOUS = [("/portal/connexion", "connexion"), ("/portal/activation", "activation")]
SIGNED_IN = [
    ("/portal/messages", "messages"),
    ("/portal/parametres", "parametres"),
    ("/portal/journal?onglet=moi", "journal"),
    ("/portal/journal?onglet=professionnels", "journal"),
    ("/portal/donnees", "donnees"),
    ("/portal/cloture", "cloture"),
]


@pytest.fixture(scope="module")
def a11y_marker(portal: LivePortal) -> Iterator[str]:
    """A conversation for the active patient (text and HTML parts), found by its marker."""
    marker = f"A11Y-{uuid.uuid4().hex[:10]}"
    live = portal
    live.send_html(
        live.professional(0),
        [live.active["address"]],
        f"Compte rendu {marker}",
        f"Bonjour,\nvoici le compte rendu {marker}.\n",
        f"<p>Bonjour,</p><p>voici le <strong>compte rendu</strong> {marker}.</p>",
    )
    yield marker


def axe_violations(page: Any) -> tuple[int, str]:
    """(number of axe-core violations, the readable report) for the current page."""
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page)
    return results.violations_count, results.generate_report()


def wait_rendered(page: Any, marker: str) -> None:
    """Wait until the page has decrypted and rendered the message body (HTML part in the
    sandboxed iframe, or the text part)."""
    body = page.locator("li.message .corps").first
    expect(body.locator("iframe[title='Contenu du message'], .texte").first).to_be_attached()
    if body.locator("iframe").count():
        inner = page.frame_locator("li.message .corps iframe[title='Contenu du message']").first
        expect(inner.locator("body")).to_contain_text(marker)
    else:
        expect(body).to_contain_text(marker)


def open_conversation(b: Browsing, marker: str) -> str:
    """From the inbox, open the conversation whose subject has `marker`; its path."""
    row = b.page.get_by_role("list", name="Conversations").locator("li.conversation").filter(has_text=marker)
    expect(row).to_have_count(1)
    href = row.locator("a[href*='/portal/conversations/']").first.get_attribute("href") or ""
    b.goto(href)
    b.wait_page("conversation")
    wait_rendered(b.page, marker)
    return href


@pytest.mark.browser
def test_axe_finds_no_violation_on_any_page(portal: LivePortal, browse: Any, a11y_marker: str) -> None:
    live = portal
    b: Browsing = browse(live)
    reports: dict[str, str] = {}
    for path, name in ANONYMOUS:
        b.goto(path)
        b.wait_page(name)
        count, report = axe_violations(b.page)
        if count:
            reports[path] = report
    b.login(live.active["ins"], live.active["password"])
    conversation = open_conversation(b, a11y_marker)
    for path, name in [*SIGNED_IN, (conversation, "conversation")]:
        b.goto(path)
        b.wait_page(name)
        if name == "conversation":
            wait_rendered(b.page, a11y_marker)
        count, report = axe_violations(b.page)
        if count:
            reports[path] = report
    for path, report in reports.items():
        print(f"== axe on {path}\n{report}")
    assert not reports, f"axe-core violations on {sorted(reports)} (reports printed above)"


def tab_until(page: Any, wanted: Callable[[dict[str, Any]], bool], seen: list[dict[str, Any]], limit: int = 40) -> None:
    """Press Tab until the focused element is `wanted`; every element focused on the way is
    kept in `seen` (to check its focus is visible)."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        info = page.evaluate(FOCUS_JS)
        if info is None:
            continue
        seen.append(info)
        if wanted(info):
            return
    raise AssertionError(
        f"not reached with {limit} Tab presses; focused: {[(i['tag'], i['id'], i['href']) for i in seen[-10:]]}"
    )


@pytest.mark.browser
def test_keyboard_alone_signs_in_and_opens_a_conversation(portal: LivePortal, browse: Any, a11y_marker: str) -> None:
    live = portal
    b: Browsing = browse(live)
    page = b.page
    seen: list[dict[str, Any]] = []
    b.goto("/portal/connexion")
    b.wait_page("connexion")

    # The first Tab reaches the skip link, which leads to the main region.
    page.keyboard.press("Tab")
    first = page.evaluate(FOCUS_JS)
    assert first and first["href"] == "#contenu", first
    seen.append(first)
    b.shot("lien-d-evitement")
    page.keyboard.press("Enter")
    assert page.evaluate("location.hash") == "#contenu"

    tab_until(page, lambda i: i["id"] == "identifiant", seen)
    page.keyboard.type(live.active["ins"])
    tab_until(page, lambda i: i["id"] == "mot-de-passe", seen, limit=5)
    page.keyboard.type(live.active["password"])
    page.keyboard.press("Enter")
    page.wait_for_url("**/portal/messages*")
    b.wait_page("messages")

    # Skip link again, then on to the conversation's link, opened with Enter.
    page.keyboard.press("Tab")
    again = page.evaluate(FOCUS_JS)
    assert again and again["href"] == "#contenu", again
    seen.append(again)
    tab_until(page, lambda i: "/portal/conversations/" in i["href"] and a11y_marker in i["text"], seen, limit=60)
    b.shot("conversation-au-clavier")
    page.keyboard.press("Enter")
    page.wait_for_url("**/portal/conversations/*")
    b.wait_page("conversation")
    expect(page.locator("h1[data-sujet]")).to_contain_text(a11y_marker)

    invisible = [
        (i["tag"], i["id"], i["href"], i["outlineStyle"], i["boxShadow"]) for i in seen if not focus_is_visible(i)
    ]
    assert not invisible, f"focus not visible on: {invisible}"
    assert all(i["focusVisible"] for i in seen), "keyboard focus should match :focus-visible"


def no_horizontal_scroll(page: Any) -> tuple[int, int]:
    return page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")


@pytest.mark.browser
@pytest.mark.parametrize(
    ("label", "options"),
    [
        pytest.param("320px", {"viewport": {"width": 320, "height": 640}}, id="320px"),
        # 200 % zoom of a 1280×800 window: half as many CSS pixels, each drawn twice as large.
        pytest.param("zoom-200", {"viewport": {"width": 640, "height": 400}, "device_scale_factor": 2}, id="zoom-200"),
    ],
)
def test_inbox_and_conversation_reflow_without_horizontal_scroll(
    portal: LivePortal, browse: Any, a11y_marker: str, label: str, options: dict[str, Any]
) -> None:
    live = portal
    b: Browsing = browse(live, **options)
    b.login(live.active["ins"], live.active["password"])
    expect(b.page.get_by_role("list", name="Conversations").locator("li.conversation").first).to_be_visible()
    b.shot(f"messagerie-{label}")
    scroll, client = no_horizontal_scroll(b.page)
    assert scroll <= client + 1, f"inbox at {label}: scrollWidth {scroll} > clientWidth {client}"
    open_conversation(b, a11y_marker)
    b.shot(f"conversation-{label}")
    scroll, client = no_horizontal_scroll(b.page)
    assert scroll <= client + 1, f"conversation at {label}: scrollWidth {scroll} > clientWidth {client}"

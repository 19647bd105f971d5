"""The playground streams an answer token by token, stops on demand, and is charged as usual."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import Page

from accounts.models import ApiKey, UsageLog
from gateway.models import Upstream
from tests.browser.conftest import Tab, signed_in_tab, wait_until
from tests.conftest import Fake, Gateway

pytestmark = pytest.mark.django_db(transaction=True)

PACED = "gpt-4o-mini+pace200+chunks30"  # 30 chunks, 200 ms apart: six seconds in all
ANSWER = ".turn.assistant .text"


def ask(page: Page, model: str, question: str) -> None:
    page.get_by_label("Model", exact=True).fill(model)
    page.get_by_label("Message").fill(question)
    page.get_by_role("button", name="Send").click()


def first_tokens(page: Page) -> str:
    page.goto("/playground/")
    page.get_by_label("System prompt").fill("You answer briefly.")
    page.get_by_label("Temperature").fill("0.3")
    ask(page, PACED, "Tell me something.")
    page.wait_for_function(f"() => document.querySelector('{ANSWER}')?.textContent.length > 0")
    return page.locator(ANSWER).inner_text()


def stop(page: Page) -> tuple[str, str, bool]:
    page.get_by_role("button", name="Stop").click()
    page.locator("#chat-status").filter(has_text="Stopped.").wait_for()
    note = page.locator(".turn.assistant .usage").inner_text()
    return (
        page.locator(ANSWER).inner_text(),
        note,
        page.get_by_role("button", name="Stop").is_disabled(),
    )


def whole_answer(page: Page) -> tuple[str, str]:
    ask(page, "gpt-4o-mini", "And now a short one.")
    page.locator("#chat-status").filter(has_text="Done.").wait_for()
    last = page.locator(".turn.assistant").last
    return last.locator(".text").inner_text(), last.locator(".usage").inner_text()


def test_tokens_show_while_the_fake_paces_and_stop_leaves_a_disconnected_row(
    open_tab: Callable[[], Tab], portal: Gateway, fake: Fake, upstream: Upstream
) -> None:
    bob = User.objects.create_user("bob")
    tab = signed_in_tab(open_tab, portal, bob)

    shown = tab.do(first_tokens)
    lines_sent_when_shown = len(fake.app.stats.last_stream_line_times)
    tab.screenshot("portal-playground-streaming")
    partial, note, stop_disabled = tab.do(stop)
    row = wait_until(lambda: UsageLog.objects.filter(status="client_disconnected").first())
    text, usage = tab.do(whole_answer)
    tab.screenshot("portal-playground")

    assert shown.startswith("Hello ")
    assert 1 <= lines_sent_when_shown < 30
    assert note == "Stopped: charged for the tokens streamed so far."
    assert stop_disabled is True
    key = ApiKey.objects.get(user=bob)
    assert key.name == "playground"
    assert (row.key_id, row.user_id, row.model, row.stream) == (key.pk, bob.pk, PACED, True)
    assert row.endpoint == "chat.completions"
    assert 0 < row.completion_tokens < 60
    assert row.usage_estimated is True
    assert wait_until(lambda: fake.app.stats.streams_disconnected) == 1
    assert partial.startswith(shown)
    done = UsageLog.objects.get(status="ok")
    assert (done.key_id, done.model) == (key.pk, "gpt-4o-mini")
    assert text
    assert usage == (
        f"{done.prompt_tokens} prompt + {done.completion_tokens} completion = "
        f"{done.total_tokens} tokens"
    )
    sent = fake.app.stats.requests[-1]
    assert sent["body"]["args"]["messages"][0] == {
        "role": "system",
        "content": "You answer briefly.",
    }


def make_image(page: Page) -> tuple[int, str, bool]:
    page.goto("/playground/")
    page.get_by_role("tab", name="Chat").focus()
    page.keyboard.press("ArrowRight")  # the tabs follow the arrow keys
    page.get_by_label("Prompt", exact=True).fill("A lighthouse at dusk")
    page.get_by_role("button", name="Generate").click()
    page.locator("#image-status").filter(has_text="Done.").wait_for()
    image = page.locator(".image-results img").first
    page.wait_for_function("() => document.querySelector('.image-results img').naturalWidth > 0")
    width = image.evaluate("img => img.naturalWidth")
    return (
        width,
        image.get_attribute("alt") or "",
        page.locator("#panel-chat").is_hidden(),
    )


def test_the_image_tab_shows_the_generated_image_and_charges_the_playground_key(
    open_tab: Callable[[], Tab], portal: Gateway, fake: Fake, upstream: Upstream
) -> None:
    dora = User.objects.create_user("dora")
    tab = signed_in_tab(open_tab, portal, dora)

    width, alt, chat_hidden = tab.do(make_image)
    tab.screenshot("portal-playground-image")

    assert width > 0
    assert alt == "A lighthouse at dusk"
    assert chat_hidden is True
    row = UsageLog.objects.get()
    assert (row.endpoint, row.status, row.model) == ("images.generations", "ok", "gpt-image-1-mini")
    assert row.key.name == "playground"
    assert row.user_id == dora.pk

"""The Strategies page in a real browser (Debian's chromium), against a real nats-server with
accounts, a real node and the served dashboard (tests/node/web/conftest.py).

The editor is CodeMirror 5 with Python highlighting; it validates as you type through
`strategy.v1.validate` on the user's own NATS connection and marks the error's line; saving
uploads a new version to the registry; deploying creates a deployment and links to its page.
"""

from __future__ import annotations

from typing import Any

import re
import uuid

import pytest

from tests.node.web import conftest as web


VIOLATION_LINE = 3
WITH_OS = (
    "import numpy as np\n"
    "\n"
    "import os\n"
    "\n"
    "def strategy(data):\n"
    "    return 'BUY'\n"
)
FIXED = (
    "import numpy as np\n"
    "\n"
    "def strategy(data):\n"
    "    fast = data['close'].rolling(3).mean()\n"
    "    return 'BUY' if fast.iloc[-1] > data['close'].iloc[-1] else 'SELL'\n"
)



@pytest.fixture(scope="module")
def pages(browser, web_env):
    """One signed-in browser context per user for the whole module (sign-in costs a second)."""
    opened: dict[str, Any] = {}

    def get(name: str) -> Any:
        if name not in opened:
            opened[name] = web.open_page(browser, web_env)
            web.sign_in(opened[name], web_env, name)
        page = opened[name]
        page.problems.clear()
        page.foreign.clear()
        return page

    yield get
    for page in opened.values():
        page.context.close()

def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def open_editor(page, query: str = ""):
    page.goto("/strategies" + query)
    page.wait_for_function("() => window.strategyEditor !== undefined")


def type_code(page, code: str) -> None:
    page.evaluate("code => window.strategyEditor.setValue(code)", code)


def marked_lines(page) -> list[int]:
    """Line numbers (1-based) the editor shows marked: the line's own element carries the error
    class and its gutter shows the marker."""
    return page.evaluate("""() => Array.from(document.querySelectorAll('.CodeMirror-code > .cm-error-line'))
        .filter(line => line.querySelector('.error-marker'))
        .map(line => parseInt(line.querySelector('.CodeMirror-linenumber').textContent, 10))""")


def wait_state(page, selector: str, state: str, timeout: float = 15_000) -> str:
    page.wait_for_selector(f"{selector}[data-state='{state}']", timeout=timeout)
    return page.inner_text(selector)


def test_the_editor_highlights_python_syntax(pages, web_env):
    page = pages("alice")
    open_editor(page)
    type_code(page, FIXED)
    keywords = page.eval_on_selector_all(".CodeMirror .cm-keyword", "els => els.map(e => e.textContent)")
    assert {"import", "as", "def", "return", "if", "else"} <= set(keywords)
    assert page.eval_on_selector_all(".CodeMirror .cm-string", "els => els.map(e => e.textContent)")
    assert not page.problems


def test_a_policy_violation_is_marked_on_its_line_as_you_type(pages, web_env):
    page = pages("alice")
    open_editor(page)
    type_code(page, WITH_OS)
    message = wait_state(page, "#validation-status", "invalid")
    assert "SECURITY_VIOLATION" in message and f"line {VIOLATION_LINE}" in message and "os" in message
    assert marked_lines(page) == [VIOLATION_LINE]
    web_env.screenshot(page, "strategies-violation-marked")
    assert not page.problems


def test_typing_is_validated_once_it_pauses_not_on_every_key(pages, web_env):
    page = pages("alice")
    open_editor(page)
    type_code(page, "")
    page.wait_for_selector("#validation-status[data-state='empty']")
    sent = []
    page.on("request", lambda r: sent.append(r.url) if r.url.endswith("/strategies/validate") else None)
    page.click(".CodeMirror")
    page.keyboard.type("import os\n", delay=20)  # 10 keys, 20 ms apart: inside one debounce window
    message = wait_state(page, "#validation-status", "invalid")
    assert "SECURITY_VIOLATION" in message and marked_lines(page) == [1]
    assert len(sent) == 1, sent


def test_fixing_the_violation_clears_the_mark(pages, web_env):
    page = pages("alice")
    open_editor(page)
    type_code(page, WITH_OS)
    wait_state(page, "#validation-status", "invalid")
    type_code(page, FIXED)
    assert "function style" in wait_state(page, "#validation-status", "valid")
    assert marked_lines(page) == []


def test_saving_a_violation_is_refused_by_the_registry_with_its_line_marked(pages, web_env):
    page = pages("alice")
    open_editor(page)
    name = unique("bad")
    page.fill("#strategy-name", name)
    type_code(page, WITH_OS)
    page.click("#save")
    message = wait_state(page, "#save-status", "error")
    assert "not saved" in message and "SECURITY_VIOLATION" in message and f"line {VIOLATION_LINE}" in message
    assert marked_lines(page) == [VIOLATION_LINE]
    listed = web_env.run(web_env.hosting("alice").list_strategies())
    assert name not in [s.name for s in listed.strategies]


def test_a_fixed_strategy_is_uploaded_deployed_and_linked_to_its_deployment(pages, web_env):
    page = pages("alice")
    open_editor(page)
    name, deployment = unique("sma"), unique("sma-live")
    page.fill("#strategy-name", name)
    type_code(page, WITH_OS)
    wait_state(page, "#validation-status", "invalid")
    type_code(page, FIXED)
    wait_state(page, "#validation-status", "valid")
    page.click("#save")
    assert wait_state(page, "#save-status", "saved").startswith(f"saved {name} version 1")
    assert page.inner_text(f"#strategy-list li[data-name='{name}']") == f"{name} v1 \u00b7 function"
    stored = web_env.run(web_env.hosting("alice").get_strategy(name))
    assert stored.strategy.version == 1 and stored.strategy.code == FIXED

    page.fill("#deploy-id", deployment)
    page.fill("#deploy-symbols", "AAPL, MSFT")
    page.fill("#deploy-timeframe", "1m")
    page.click("#deploy")
    assert wait_state(page, "#deploy-status", "deployed") == f"deployed {deployment}"
    link = page.locator("#deployment-link")
    assert link.get_attribute("href") == f"/deployments/{deployment}"
    web_env.screenshot(page, "strategies-deployed")
    got = web_env.run(web_env.hosting("alice").get_deployment(deployment)).deployment
    assert (got.strategy, got.version, got.symbols, got.timeframe) == (name, 1, ["AAPL", "MSFT"], "1m")
    link.click()
    page.wait_for_url(re.compile(rf"/deployments/{deployment}$"))
    assert not page.problems


def test_ctrl_s_in_the_editor_saves_a_new_version(pages, web_env):
    name = unique("keys")
    web_env.run(web_env.hosting("alice").put_strategy(name, FIXED))
    page = pages("alice")
    open_editor(page, f"?name={name}")
    type_code(page, FIXED.replace("rolling(3)", "rolling(7)"))
    page.click(".CodeMirror")
    page.keyboard.press("Control+s")
    assert wait_state(page, "#save-status", "saved").startswith(f"saved {name} version 2")
    assert "rolling(7)" in web_env.run(web_env.hosting("alice").get_strategy(name)).strategy.code


def test_the_list_shows_each_version_and_opens_an_old_one(pages, web_env):
    name = unique("versions")
    hosting = web_env.hosting("alice")
    web_env.run(hosting.put_strategy(name, FIXED))
    web_env.run(hosting.put_strategy(name, FIXED.replace("rolling(3)", "rolling(5)")))
    page = pages("alice")
    open_editor(page, f"?name={name}")
    assert "rolling(5)" in page.evaluate("() => window.strategyEditor.getValue()")
    tags = page.eval_on_selector_all(f"#strategy-list li[data-name='{name}'] .versions a", "els => els.map(e => e.textContent)")
    assert [t.split()[0] for t in tags] == ["v2", "v1"]
    page.click(f"#strategy-list li[data-name='{name}'] .versions a:text('v1')")
    page.wait_for_function("() => window.strategyEditor && window.strategyEditor.getValue().includes('rolling(3)')")
    assert page.input_value("#deploy-version") == "1"


def test_another_user_does_not_see_the_strategies(pages, web_env):
    name = unique("private")
    web_env.run(web_env.hosting("alice").put_strategy(name, FIXED))
    page = pages("bob")
    open_editor(page, f"?name={name}")
    assert name not in page.inner_text("main .strategies section:first-child")
    assert "rolling(3)" not in page.evaluate("() => window.strategyEditor.getValue()")
    assert "not found" in page.inner_text(".flash.error").lower()


def test_markup_in_a_strategys_source_stays_text_in_the_editor(pages, web_env):
    name = unique("markup")
    code = FIXED + "# </textarea><img src=x onerror=window.__xss=1><script>window.__xss=2</script>\n"
    web_env.run(web_env.hosting("alice").put_strategy(name, code, description='"><img src=x onerror=window.__xss=3>'))
    page = pages("alice")
    open_editor(page, f"?name={name}")
    assert page.evaluate("() => window.strategyEditor.getValue()") == code
    assert page.input_value("#strategy-description") == '"><img src=x onerror=window.__xss=3>'
    assert page.evaluate("() => window.__xss") is None
    assert page.locator("main img").count() == 0
    assert not page.problems


# -- the page's actions, posted as a client would ------------------------------------------------

def test_every_action_refuses_a_request_without_a_session(browser, web_env):
    context = browser.new_context(base_url=web_env.url)
    try:
        for path in ("/strategies/validate", "/strategies/save", "/strategies/deploy"):
            response = context.request.post(path, data={"code": FIXED})
            assert response.status == 401, path
        response = context.request.get("/strategies", max_redirects=0)
        assert response.status == 303 and response.headers["location"].startswith("/signin")
    finally:
        context.close()


def test_every_action_refuses_a_post_without_the_csrf_token(pages, web_env):
    page = pages("alice")
    for path in ("/strategies/validate", "/strategies/save", "/strategies/deploy"):
        response = page.request.post(path, data={"code": FIXED, "name": "x"})
        assert response.status == 403, path
        response = page.request.post(path, data={"code": FIXED, "name": "x"}, headers={"X-CSRF-Token": "forged"})
        assert response.status == 403, path


def csrf_of(page) -> str:
    """The session's CSRF token, from the page's meta (any dashboard page has it)."""
    if page.query_selector("meta[name=csrf-token]") is None:
        page.goto("/strategies")
    return page.get_attribute("meta[name=csrf-token]", "content")


@pytest.mark.parametrize("path,body,field", [
    ("/strategies/validate", {"code": FIXED, "langauge": "python"}, "langauge"),
    ("/strategies/save", {"name": "n", "code": FIXED, "overwrite": True}, "overwrite"),
    ("/strategies/deploy", {"id": "d", "strategy": "s", "symbols": "A", "timeframe": "1d", "schedul": "x"}, "schedul"),
])
def test_an_unknown_field_is_refused_naming_it(pages, path, body, field):
    page = pages("alice")
    response = page.request.post(path, data=body, headers={"X-CSRF-Token": csrf_of(page)})
    assert response.status == 400
    error = response.json()["error"]
    assert error["code"] == "INVALID_REQUEST" and f"`{field}`" in error["message"]


@pytest.mark.parametrize("path,body,words", [
    ("/strategies/save", {"name": "bad name!", "code": FIXED}, ["name"]),
    ("/strategies/save", {"name": "n", "code": ""}, ["code"]),
    ("/strategies/deploy", {"id": "d", "strategy": "s", "symbols": " , ", "timeframe": "1d"}, ["symbols"]),
    ("/strategies/deploy", {"id": "d", "strategy": "s", "symbols": "A A", "timeframe": "1d"}, ["symbols repeat"]),
    ("/strategies/deploy", {"id": "d", "strategy": "s", "symbols": "A", "timeframe": "1 d"}, ["timeframe"]),
])
def test_bad_input_is_an_invalid_request_naming_what_is_wrong(pages, path, body, words):
    page = pages("alice")
    response = page.request.post(path, data=body, headers={"X-CSRF-Token": csrf_of(page)})
    assert response.status == 400
    error = response.json()["error"]
    assert error["code"] == "INVALID_REQUEST"
    for word in words:
        assert word in error["message"]


def test_deploying_a_strategy_that_does_not_exist_is_refused_with_the_registry_error(pages):
    page = pages("alice")
    response = page.request.post("/strategies/deploy", data={"id": unique("d"), "strategy": unique("nope"),
                                                              "symbols": "AAPL", "timeframe": "1d"},
                                 headers={"X-CSRF-Token": csrf_of(page)})
    body = response.json()
    assert response.status == 400 and body["ok"] is False
    assert body["error"]["code"] == "INVALID_REQUEST" and "not found" in body["error"]["message"]

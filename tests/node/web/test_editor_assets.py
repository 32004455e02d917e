"""The dashboard's assets come from the package: no CDN, no runtime network.

Every script and stylesheet a page references is served by the app itself (from the package's
static files, or plotly.js from the plotly wheel), and no template or static file names an
http(s) URL outside its comments (JavaScript and CSS are tokenized, so a URL in a string or a
regular expression is found and one in a comment is not).
"""

from __future__ import annotations

import re
from pathlib import Path

import esprima
import pytest
import tinycss2
from starlette.testclient import TestClient

import node.web
from node.web.app import WebSettings, create_app

WEB = Path(node.web.__file__).parent
TEMPLATES = WEB / "templates"
STATIC = WEB / "static"
URL = re.compile(r"https?://", re.IGNORECASE)
REFERENCE = re.compile(r"""<(?:script|link)\b[^>]*?\b(?:src|href)\s*=\s*["']([^"']+)["']""", re.IGNORECASE)
VENDORED = STATIC / "vendor" / "codemirror"


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app(WebSettings())) as c:
        yield c


def _references() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for template in sorted(TEMPLATES.glob("*.html")):
        for ref in REFERENCE.findall(template.read_text()):
            found.setdefault(ref, set()).add(template.name)
    return found


def test_every_script_and_stylesheet_of_the_pages_is_served_by_the_app(client):
    refs = _references()
    assert {"/static/vendor/codemirror/codemirror.js", "/static/vendor/codemirror/mode/python/python.js",
            "/static/vendor/codemirror/codemirror.css", "/static/editor.js", "/static/backtest.js",
            "/static/vendor/plotly.min.js"} <= set(refs)
    for ref, pages in refs.items():
        if ref.startswith("data:"):
            continue  # inline (e.g. the empty favicon): nothing is fetched
        assert ref.startswith("/static/"), f"{sorted(pages)} references {ref}, not a file the app serves"
        response = client.get(ref)
        assert response.status_code == 200, f"{ref} ({sorted(pages)}): HTTP {response.status_code}"
        assert len(response.content) > 100, f"{ref} is served empty"


def test_the_vendored_editor_is_served_byte_for_byte_from_the_package(client):
    for path in ("codemirror.js", "codemirror.css", "mode/python/python.js"):
        served = client.get(f"/static/vendor/codemirror/{path}")
        assert served.status_code == 200
        assert served.content == (VENDORED / path).read_bytes()


def test_the_vendored_editor_keeps_its_license_beside_it():
    text = (VENDORED / "LICENSE").read_text()
    assert "MIT" in text or "Permission is hereby granted" in text
    assert "CodeMirror" in (VENDORED / "README").read_text()


def test_the_page_assets_are_package_data():
    import tomllib

    data = tomllib.loads((WEB.parents[1] / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["node.web"]
    shipped = set()
    for pattern in data:
        shipped |= {p.relative_to(WEB).as_posix() for p in WEB.glob(pattern) if p.is_file()}
    wanted = {p.relative_to(WEB).as_posix() for p in list(STATIC.rglob("*")) + list(TEMPLATES.glob("*.html"))
              if p.is_file()}
    assert wanted <= shipped, f"not shipped with the package: {sorted(wanted - shipped)}"


def _js_urls(source: str) -> list[str]:
    tokens = esprima.tokenize(source, {"comment": True})
    return [t.value[:120] for t in tokens if t.type not in ("LineComment", "BlockComment") and URL.search(t.value)]


def _css_urls(source: str) -> list[str]:
    out = []

    def walk(tokens) -> None:
        for token in tokens or ():
            if token.type == "comment":
                continue
            if token.type in ("url", "string"):
                if URL.search(token.value):
                    out.append(token.value[:120])
            elif token.type in ("qualified-rule", "at-rule"):
                walk(token.prelude)
                walk(token.content)
            elif token.type == "function":
                walk(token.arguments)
            elif token.type in ("() block", "[] block", "{} block"):
                walk(token.content)
            elif token.type == "ident" and URL.search(token.value):
                out.append(token.value[:120])

    walk(tinycss2.parse_stylesheet(source, skip_comments=True, skip_whitespace=True))
    return out


def _html_urls(source: str) -> list[str]:
    source = re.sub(r"<!--.*?-->", "", source, flags=re.S)
    source = re.sub(r"\{#.*?#\}", "", source, flags=re.S)
    return [source[max(0, m.start() - 40):m.end() + 40] for m in URL.finditer(source)]


def _files() -> list[Path]:
    return sorted(p for p in list(TEMPLATES.rglob("*")) + list(STATIC.rglob("*")) if p.is_file())


@pytest.mark.parametrize("path", _files(), ids=lambda p: p.relative_to(WEB).as_posix())
def test_no_template_or_static_file_names_a_url_outside_its_comments(path):
    text = path.read_text(errors="replace")
    if path.suffix == ".js":
        found = _js_urls(text)
    elif path.suffix == ".css":
        found = _css_urls(text)
    elif path.suffix == ".html":
        found = _html_urls(text)
    else:  # LICENSE, README: text, never loaded by a page
        return
    assert not found, f"{path.name} names {found}"


def test_the_url_check_finds_urls_in_code_and_not_in_comments():
    js = 'var a = 1; // see https://example.invalid\n/* http://x.invalid */ load("https://cdn.invalid/x.js");'
    assert _js_urls(js) == ['"https://cdn.invalid/x.js"']
    assert _js_urls("var r = /https?:\\/\\/cdn/; // https://ok.invalid") == []
    assert _js_urls('fetch(`https://cdn.invalid/${x}`)')
    css = '/* https://ok.invalid */ @import url("https://cdn.invalid/a.css"); a { background: url(http://x.invalid/i.png) }'
    assert len(_css_urls(css)) == 2
    assert _html_urls('<!-- https://ok.invalid --><script src="https://cdn.invalid/x.js"></script>')
    assert _html_urls("{# https://ok.invalid #}") == []

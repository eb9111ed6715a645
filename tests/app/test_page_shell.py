"""A page rendered once with holes: filling them gives what rendering with the values gives, and text that
merely looks like a hole (from a corpus, say) stays as it is."""

from __future__ import annotations

from jinja2 import Environment, select_autoescape
from markupsafe import Markup

from app.web.page_shell import render_shell, slot

ENV = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
TEMPLATE = ENV.from_string('<meta content="{{ token }}"><p>{{ text }}</p><div>{{ labels }}</div><i>{{ token }}</i>')


def test_filled_holes_give_the_page_rendered_with_the_values() -> None:
    text = "<script>alert(1)</script> {{ 7*7 }}"
    shell = render_shell(TEMPLATE, {"token": slot("token"), "text": text, "labels": slot("labels")})
    assert shell.slots == ("token", "labels", "token")
    values = {"token": "abc_-9", "labels": "<b>ann</b>"}
    direct = TEMPLATE.render(token="abc_-9", text=text, labels=Markup("<b>ann</b>"))
    assert shell.fill(values) == direct.encode()
    assert b"&lt;script&gt;" in shell.fill(values)


def test_text_that_looks_like_a_hole_is_not_one() -> None:
    lookalike = "\x00" + "0" * 16 + ":token\x00"
    shell = render_shell(TEMPLATE, {"token": slot("token"), "text": lookalike, "labels": "none"})
    assert shell.slots == ("token", "token")
    assert lookalike.encode() in shell.fill({"token": "t"})

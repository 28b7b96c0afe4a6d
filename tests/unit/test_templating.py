"""Tests of clarion.templating: the safe renderer and the spec's seed templates."""

from __future__ import annotations

import copy
import datetime
import decimal
import enum
import html
import json
import string
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clarion.core.errors import ClarionError, MissingVariableError, TemplateError
from clarion.templating import (
    SeedTemplate,
    load_seed_templates,
    parse_placeholders,
    parse_seed_templates,
    render,
    validate_template,
)
from models.enums import Category, Channel, Priority

identifiers = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True)
brace_free_text = st.text(alphabet=st.characters(exclude_characters="{}"), max_size=20)


def escape_braces(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


# --------------------------------------------------------------------------- rendering


def test_render_plain_placeholders() -> None:
    assert render("Hello {name}, you owe {amount}.", {"name": "Ada", "amount": 12}) == (
        "Hello Ada, you owe 12."
    )


def test_render_repeated_placeholder_and_extra_data_ignored() -> None:
    assert render("{a}-{a}-{b}", {"a": "x", "b": "y", "unused": object()}) == "x-x-y"


def test_render_text_without_placeholders_is_unchanged() -> None:
    assert render("no placeholders here", {}) == "no placeholders here"
    assert render("", {}) == ""


def test_values_are_not_reinterpreted_as_templates() -> None:
    assert render("{a}", {"a": "{b} {0} {{ }} {a.__class__}"}) == "{b} {0} {{ }} {a.__class__}"


def test_escaped_braces_become_literal_braces() -> None:
    assert render("{{name}} is {name} }}{{", {"name": "x"}) == "{name} is x }{"
    assert parse_placeholders("{{name}}") == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("text", "text"),
        ("", ""),
        (42, "42"),
        (-7, "-7"),
        (1.5, "1.5"),
        (float("inf"), "inf"),
        (decimal.Decimal("150.00"), "150.00"),
        (uuid.UUID("12345678-1234-5678-1234-567812345678"), "12345678-1234-5678-1234-567812345678"),
        (datetime.date(2024, 3, 9), "2024-03-09"),
        (datetime.datetime(2024, 3, 9, 14, 5, 6), "2024-03-09T14:05:06"),
        (
            datetime.datetime(2024, 3, 9, 14, 5, tzinfo=datetime.UTC),
            "2024-03-09T14:05:00+00:00",
        ),
    ],
)
def test_allowed_value_types(value: object, expected: str) -> None:
    assert render("[{v}]", {"v": value}) == f"[{expected}]"


@pytest.mark.parametrize(
    "value",
    [None, True, False, [1, 2], {"a": 1}, (1,), {1}, object(), b"bytes", datetime.time(12, 0)],
    ids=lambda v: type(v).__name__,
)
def test_refused_value_types_name_the_variable(value: object) -> None:
    with pytest.raises(TemplateError) as info:
        render("x {the_var} y", {"the_var": value})
    assert not isinstance(info.value, MissingVariableError)
    assert "the_var" in str(info.value)


def test_subclass_str_and_format_overrides_are_never_called() -> None:
    calls: list[str] = []

    class SneakyStr(str):
        def __str__(self) -> str:
            calls.append("str")
            return "PWNED"

        def __format__(self, spec: str) -> str:
            calls.append("format")
            return "PWNED"

    class SneakyInt(int):
        def __str__(self) -> str:
            calls.append("int")
            return "PWNED"

        def __repr__(self) -> str:
            calls.append("int-repr")
            return "PWNED"

    class SneakyDecimal(decimal.Decimal):
        def __str__(self) -> str:
            calls.append("decimal")
            return "PWNED"

    class Colour(enum.StrEnum):
        RED = "red"

    data = {"s": SneakyStr("safe"), "i": SneakyInt(5), "d": SneakyDecimal("1.25"), "c": Colour.RED}
    assert render("{s} {i} {d} {c}", data) == "safe 5 1.25 red"
    assert calls == []


def test_huge_int_is_a_template_error() -> None:
    with pytest.raises(TemplateError, match="big"):
        render("{big}", {"big": 10**5000})


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("template", "fragment"),
    [
        ("{x.__class__}", "attribute"),
        ("{x.y}", "attribute"),
        ("{x[0]}", "indexing"),
        ("{x[key]}", "indexing"),
        ("{}", "empty"),
        ("{0}", "positional"),
        ("{12}", "positional"),
        ("{x!r}", "conversion"),
        ("{x!s}", "conversion"),
        ("{x!a}", "conversion"),
        ("{x:>10}", "format spec"),
        ("{x:}", "format spec"),
        ("{x:{y}}", "format spec"),
        ("{x!r:}", "conversion"),
        ("{ x }", "not a plain name"),
        ("{é}", "not a plain name"),
        ("{x-y}", "not a plain name"),
        ("{1x}", "not a plain name"),
    ],
)
def test_bad_placeholders_are_refused_with_reason(template: str, fragment: str) -> None:
    with pytest.raises(TemplateError) as info:
        validate_template(template)
    message = str(info.value)
    assert fragment in message
    assert template.strip("{}").split(":")[0].split("!")[0] in message
    # render and parse_placeholders refuse the same templates, even with data present.
    with pytest.raises(TemplateError):
        render("ok " + template, {"x": "v", "y": "w"})
    with pytest.raises(TemplateError):
        parse_placeholders(template)


@pytest.mark.parametrize(
    "template", ["{", "}", "a { b", "a } b", "{x", "x}", "{x!}", "{x!rr}", "{x{y}}", "{x[}"]
)
def test_unbalanced_or_malformed_braces_are_template_errors(template: str) -> None:
    with pytest.raises(TemplateError, match="malformed") as info:
        validate_template(template)
    assert isinstance(info.value, ValueError)  # TemplateError is a ValueError
    assert isinstance(info.value, ClarionError)
    assert info.value.__cause__ is None


def test_template_is_fully_validated_before_any_lookup() -> None:
    # the first placeholder is missing, but the later bad one is reported
    with pytest.raises(TemplateError) as info:
        render("{missing} {ok.attr}", {})
    assert not isinstance(info.value, MissingVariableError)
    assert "attribute" in str(info.value)


def test_validate_template_rejects_non_str() -> None:
    with pytest.raises(TemplateError):
        validate_template(b"{x}")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- missing variables


def test_missing_variable_names_the_first_missing_in_order() -> None:
    with pytest.raises(MissingVariableError) as info:
        render("{present} {second_missing} {first_missing}", {"present": 1})
    assert info.value.name == "second_missing"
    assert "second_missing" in str(info.value)


@given(names=st.lists(identifiers, min_size=1, max_size=5, unique=True), data=st.data())
def test_missing_variable_property(names: list[str], data: st.DataObject) -> None:
    missing_index = data.draw(st.integers(0, len(names) - 1))
    values = {n: "v" for i, n in enumerate(names) if i < missing_index}
    template = " ".join("{" + n + "}" for n in names)
    with pytest.raises(MissingVariableError) as info:
        render(template, values)
    assert info.value.name == names[missing_index]
    assert repr(names[missing_index]) in str(info.value)


# --------------------------------------------------------------------------- parse_placeholders


def test_parse_placeholders_order_and_uniqueness() -> None:
    assert parse_placeholders("{b} {a} {{c}} {b} {_d1}") == ["b", "a", "_d1"]
    assert parse_placeholders("plain") == []


# --------------------------------------------------------------------------- properties


@given(st.dictionaries(identifiers, st.text(max_size=30), max_size=8))
def test_property_render_concatenates_values(values: dict[str, str]) -> None:
    template = "".join("{" + name + "}" for name in values)
    assert render(template, values) == "".join(values.values())
    assert parse_placeholders(template) == list(values)


@given(
    st.lists(st.tuples(brace_free_text, identifiers), max_size=6),
    brace_free_text,
    st.text(max_size=10),
)
def test_property_literals_and_values_interleave(
    pieces: list[tuple[str, str]], tail: str, value: str
) -> None:
    template = "".join(lit + "{" + name + "}" for lit, name in pieces) + tail
    data = {name: value + name for _, name in pieces}
    expected = "".join(lit + value + name for lit, name in pieces) + tail
    assert render(template, data) == expected


@given(
    name=identifiers,
    separator=st.sampled_from([".", "[", "!", ":"]),
    rest=st.text(max_size=10),
    before=brace_free_text,
)
def test_property_operators_in_placeholders_are_refused(
    name: str, separator: str, rest: str, before: str
) -> None:
    template = before + "{" + name + separator + rest + "}"
    data: dict[str, object] = {name: "value"}
    with pytest.raises(TemplateError):
        validate_template(template)
    with pytest.raises(TemplateError):
        render(template, data)


@given(st.dictionaries(identifiers, st.text(max_size=30), min_size=1, max_size=6))
def test_property_html_escapes_values(values: dict[str, str]) -> None:
    template = "<p>" + "|".join("{" + name + "}" for name in values) + "</p>"
    out = render(template, values, html=True)
    assert out.startswith("<p>")
    assert out.endswith("</p>")
    inner = out[len("<p>") : -len("</p>")]
    for forbidden in ("<", ">", '"', "'"):
        assert forbidden not in inner
    assert html.unescape(inner) == "|".join(values.values())


def test_html_escaping_examples() -> None:
    data = {"v": "<script>alert(\"x\")</script> & 'y'"}
    assert render("<b>{v}</b>", data, html=True) == (
        "<b>&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#x27;y&#x27;</b>"
    )
    assert render("<b>{v}</b>", data) == "<b><script>alert(\"x\")</script> & 'y'</b>"


@given(st.text(max_size=40))
def test_property_escaped_literal_braces_round_trip(text: str) -> None:
    template = escape_braces(text)
    validate_template(template)
    assert parse_placeholders(template) == []
    assert render(template, {}) == text
    assert render(template, {}, html=True) == text  # template text is never escaped


@given(st.text(alphabet=st.sampled_from("{}abx.:![]0 "), max_size=14))
def test_property_agrees_with_str_format_when_accepted(template: str) -> None:
    """Fuzz: either a TemplateError, or exactly what str.format would produce."""
    data = {"a": "A", "b": "B", "x": "X", "ab": "AB", "ba": "BA", "bx": "BX", "xa": "XA"}
    try:
        out = render(template, data)
    except TemplateError:
        return
    # Accepted templates only contain plain {name} fields.
    for _lit, field, spec, conversion in string.Formatter().parse(template):
        assert field is None or field.isidentifier()
        assert not spec
        assert conversion is None
    assert out == template.format_map(data)


# --------------------------------------------------------------------------- seed templates

SPEC_TEMPLATES: dict[str, dict[str, Any]] = {
    "english/new_bid": {
        "category": Category.BID,
        "title": "New bid on {auction_title}",
        "message": "{bidder} bid {amount} on {item_title}",
        "priority": Priority.NORMAL,
        "channels": (Channel.IN_APP, Channel.PUSH),
        "placeholders": ["auction_title", "bidder", "amount", "item_title"],
    },
    "english/outbid": {
        "category": Category.BID,
        "title": "You've been outbid",
        "message": "Someone bid higher than your {amount} bid",
        "priority": Priority.HIGH,
        "channels": (Channel.IN_APP, Channel.PUSH, Channel.EMAIL),
        "placeholders": ["amount"],
    },
    "penny/bid_placed": {
        "category": Category.BID,
        "title": "Bid placed successfully",
        "message": "Your bid extended {auction_title} by {extension_seconds}s",
        "priority": Priority.NORMAL,
        "channels": (Channel.IN_APP,),
        "placeholders": ["auction_title", "extension_seconds"],
    },
    "penny/auction_ending": {
        "category": Category.AUCTION,
        "title": "Auction ending soon!",
        "message": "{auction_title} ends in {time_remaining}",
        "priority": Priority.URGENT,
        "channels": (Channel.IN_APP, Channel.PUSH),
        "placeholders": ["auction_title", "time_remaining"],
    },
    "system/auction_started": {
        "category": Category.AUCTION,
        "title": "Auction started",
        "message": "{auction_title} is now live",
        "priority": Priority.NORMAL,
        "channels": (Channel.IN_APP, Channel.EMAIL),
        "placeholders": ["auction_title"],
    },
    "system/auction_ended": {
        "category": Category.AUCTION,
        "title": "Auction completed",
        "message": "{auction_title} ended. Winner: {winner}",
        "priority": Priority.NORMAL,
        "channels": (Channel.IN_APP, Channel.EMAIL),
        "placeholders": ["auction_title", "winner"],
    },
}


def raw_seed_document() -> list[dict[str, Any]]:
    return [
        {
            "auction_type": key.split("/")[0],
            "event": key.split("/")[1],
            "category": str(spec["category"]),
            "title": spec["title"],
            "message": spec["message"],
            "priority": str(spec["priority"]),
            "channels": [str(c) for c in spec["channels"]],
            "body_format": "text",
        }
        for key, spec in SPEC_TEMPLATES.items()
    ]


def test_seed_templates_match_the_spec_exactly() -> None:
    seeds = load_seed_templates()
    assert [s.key for s in seeds] == list(SPEC_TEMPLATES)
    for seed in seeds:
        spec = SPEC_TEMPLATES[seed.key]
        assert isinstance(seed, SeedTemplate)
        assert seed.category is spec["category"]
        assert seed.title == spec["title"]
        assert seed.message == spec["message"]
        assert seed.priority is spec["priority"]
        assert seed.channels == spec["channels"]
        assert all(isinstance(c, Channel) for c in seed.channels)
        assert seed.body_format == "text"
        assert seed.placeholders == spec["placeholders"]


def test_seed_json_file_is_exactly_the_expected_document() -> None:
    import importlib.resources

    resource = importlib.resources.files("clarion") / "templates" / "auction_events.json"
    assert json.loads(resource.read_text(encoding="utf-8")) == raw_seed_document()


def test_seed_templates_are_frozen() -> None:
    seed = load_seed_templates()[0]
    with pytest.raises(AttributeError):
        seed.title = "changed"  # type: ignore[misc]


@pytest.mark.parametrize("key", list(SPEC_TEMPLATES))
def test_each_seed_renders_with_its_declared_placeholders(key: str) -> None:
    seed = next(s for s in load_seed_templates() if s.key == key)
    data = {name: f"<{name}>" for name in seed.placeholders}
    title, message = seed.render(data)
    assert "{" not in title + message
    assert "}" not in title + message
    expected_title = seed.title
    expected_message = seed.message
    for name in seed.placeholders:
        expected_title = expected_title.replace("{" + name + "}", f"<{name}>")
        expected_message = expected_message.replace("{" + name + "}", f"<{name}>")
    assert (title, message) == (expected_title, expected_message)
    html_title, html_message = seed.render(data, html=True)
    assert "<" not in html_title + html_message
    # dropping any declared placeholder is reported by name
    for name in seed.placeholders:
        partial = {k: v for k, v in data.items() if k != name}
        with pytest.raises(MissingVariableError) as info:
            seed.render(partial)
        assert info.value.name == name


def test_seed_render_concrete_example() -> None:
    seeds = {s.key: s for s in load_seed_templates()}
    title, message = seeds["english/new_bid"].render(
        {
            "auction_title": "Vintage Watch Collection",
            "bidder": "alice",
            "amount": decimal.Decimal("150.00"),
            "item_title": "Omega 1957",
        }
    )
    assert title == "New bid on Vintage Watch Collection"
    assert message == "alice bid 150.00 on Omega 1957"
    assert seeds["penny/bid_placed"].render(
        {"auction_title": "Lot 7", "extension_seconds": 15}
    ) == (
        "Bid placed successfully",
        "Your bid extended Lot 7 by 15s",
    )


def test_parse_seed_templates_accepts_the_raw_document() -> None:
    assert parse_seed_templates(raw_seed_document()) == load_seed_templates()


@pytest.mark.parametrize(
    ("index", "field", "value"),
    [
        (0, "category", "bids"),
        (1, "priority", "critical"),
        (2, "channels", ["in_app", "fax"]),
        (2, "channels", []),
        (2, "channels", "in_app"),
        (3, "channels", ["push", "push"]),
        (4, "title", "Auction {x.__class__}"),
        (5, "message", "{auction_title} ended {"),
        (5, "message", "{winner!r}"),
        (0, "body_format", "markdown"),
        (1, "auction_type", "dutch"),
        (1, "event", "not a name"),
        (0, "title", ""),
        (0, "message", 42),
    ],
)
def test_bad_seed_entries_name_template_and_field(index: int, field: str, value: object) -> None:
    document = raw_seed_document()
    document[index][field] = value
    with pytest.raises(TemplateError) as info:
        parse_seed_templates(document)
    message = str(info.value)
    assert repr(field) in message
    if field not in ("auction_type", "event"):
        key = f"{document[index]['auction_type']}/{document[index]['event']}"
        assert key in message


def test_seed_missing_and_unknown_fields_and_duplicates() -> None:
    document = raw_seed_document()
    del document[1]["priority"]
    with pytest.raises(TemplateError, match=r"english/outbid: field 'priority': is missing"):
        parse_seed_templates(document)

    document = raw_seed_document()
    document[2]["colour"] = "red"
    with pytest.raises(TemplateError, match=r"penny/bid_placed: field 'colour'"):
        parse_seed_templates(document)

    document = raw_seed_document()
    document.append(copy.deepcopy(document[0]))
    with pytest.raises(TemplateError, match=r"english/new_bid: defined twice"):
        parse_seed_templates(document)

    with pytest.raises(TemplateError):
        parse_seed_templates({"not": "a list"})
    with pytest.raises(TemplateError, match="#0"):
        parse_seed_templates(["not an object"])

"""XML elements to text, as ``ET.tostring(root, encoding="unicode")`` writes them, faster.

The standard library's serializer is pure Python and walks the tree twice (once to name
its namespaces); writing a domain definition took about as long as building it. This
writes the same text (tests/unit/backends/test_xml_text.py holds it to the standard
library's) for the trees kvmrec builds: string tags and attributes, namespaces registered
here with their prefixes. Anything else (a comment, a namespace of no known prefix) is
left to ``ET.tostring``.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

_PREFIXES: dict[str, str] = {}  # namespace URI -> its prefix
# Whether a text or an attribute value needs escaping at all: most do not, and one search
# costs less than the calls that escape.
_ESCAPED_IN_TEXT = re.compile("[&<>]").search
_ESCAPED_IN_ATTRIBUTE = re.compile('[&<>"\r\n\t]').search


def register_namespace(prefix: str, uri: str) -> None:
    """``ET.register_namespace``, known here too."""
    ET.register_namespace(prefix, uri)
    _PREFIXES[uri] = prefix


class _Unknown(Exception):
    """Something this writer leaves to the standard library's."""


def tostring(root: ET.Element) -> str:
    """``ET.tostring(root, encoding="unicode")``."""
    used: dict[str, str] = {}
    out: list[str] = []
    try:
        _write(root, out, used)
    except _Unknown:
        return ET.tostring(root, encoding="unicode")
    if not used:
        return "".join(out)
    # The standard library declares every namespace on the root, sorted by prefix, before
    # the root's own attributes.
    declared = "".join(
        f' xmlns:{prefix}="{_attribute(uri)}"'
        for uri, prefix in sorted(used.items(), key=lambda item: item[1])
    )
    head = out[0]
    out[0] = head + declared
    return "".join(out)


def _name(qname: str, used: dict[str, str]) -> str:
    if qname[:1] != "{":
        return qname
    uri, local = qname[1:].rsplit("}", 1)
    prefix = _PREFIXES.get(uri)
    if prefix is None:
        raise _Unknown(uri)
    used[uri] = prefix
    return f"{prefix}:{local}"


def _write(element: ET.Element, out: list[str], used: dict[str, str]) -> None:
    tag = element.tag
    if not isinstance(tag, str):
        raise _Unknown(tag)  # a comment or processing instruction
    if tag[:1] == "{":
        tag = _name(tag, used)
    out.append("<" + tag)  # its own entry: the root's namespaces go right after it
    for key, value in element.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise _Unknown(key)
        if key[:1] == "{":
            key = _name(key, used)
        if _ESCAPED_IN_ATTRIBUTE(value):
            value = _attribute(value)
        out.append(f' {key}="{value}"')
    text = element.text
    if text or len(element):
        out.append(">")
        if text:
            out.append(_text(text))
        for child in element:
            _write(child, out, used)
        out.append(f"</{tag}>")
    else:
        out.append(" />")
    tail = element.tail
    if tail:
        out.append(_text(tail))


def _text(text: str) -> str:
    if not isinstance(text, str):
        raise _Unknown(text)
    return _cdata(text) if _ESCAPED_IN_TEXT(text) else text


def _cdata(text: str) -> str:
    if not isinstance(text, str):
        raise _Unknown(text)
    if "&" in text:
        text = text.replace("&", "&amp;")
    if "<" in text:
        text = text.replace("<", "&lt;")
    if ">" in text:
        text = text.replace(">", "&gt;")
    return text


def _attribute(text: str) -> str:
    text = _cdata(text)
    if '"' in text:
        text = text.replace('"', "&quot;")
    if "\r" in text:
        text = text.replace("\r", "&#13;")
    if "\n" in text:
        text = text.replace("\n", "&#10;")
    if "\t" in text:
        text = text.replace("\t", "&#09;")
    return text

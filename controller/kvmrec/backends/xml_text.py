"""Domain definitions as text, written as ``ET.tostring(root, encoding="unicode")`` would
write their tree, in a third of the time.

The standard library's serializer is pure Python and walks a tree twice (once to name its
namespaces); every reconcile that defines a domain writes one. A :class:`Document` is
written piece by piece instead: markup the caller writes, its values escaped with
:func:`text` and :func:`attribute`, and elements (a disk, the ownership stamp) written as
the standard library writes them, the namespaces they use declared on the root as it does
(tests/unit/backends/test_xml_text.py holds the result to the standard library's). Tags
and attributes are strings, namespaces registered here with their prefixes; anything else
(a comment, a namespace of no known prefix) is refused.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping

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
    """Something this writer cannot write."""


def _declarations(used: Mapping[str, str]) -> str:
    # The standard library declares every namespace on the root, sorted by prefix, before
    # the root's own attributes.
    return "".join(
        f' xmlns:{prefix}="{_attribute(uri)}"'
        for uri, prefix in sorted(used.items(), key=lambda item: item[1])
    )


def text(value: str) -> str:
    """``value`` escaped as the text of an element."""
    return _cdata(value) if _ESCAPED_IN_TEXT(value) else value


def attribute(value: str) -> str:
    """``value`` escaped as an attribute's value (between double quotes)."""
    return _attribute(value) if _ESCAPED_IN_ATTRIBUTE(value) else value


class Document:
    """One document, its root's content written piece by piece (see the module's story)."""

    def __init__(self, tag: str, attributes: Mapping[str, str]) -> None:
        self._tag = tag
        self._attributes = attributes
        self._out: list[str] = []
        self._used: dict[str, str] = {}

    def markup(self, markup: str) -> None:
        """Markup written by the caller, its texts and attributes already escaped."""
        self._out.append(markup)

    def element(self, element: ET.Element) -> None:
        """``element`` and what it holds, as ``ET.tostring`` writes them."""
        try:
            _write(element, self._out, self._used)
        except _Unknown as exc:
            raise ValueError(f"cannot write {exc!r} into a document") from exc

    def tostring(self) -> str:
        attributes = "".join(f' {k}="{attribute(v)}"' for k, v in self._attributes.items())
        head = f"<{self._tag}{_declarations(self._used)}{attributes}"
        if not self._out:
            return head + " />"
        return f"{head}>{''.join(self._out)}</{self._tag}>"


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
    out.append("<" + tag)
    for key, value in element.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise _Unknown(key)
        if key[:1] == "{":
            key = _name(key, used)
        out.append(f' {key}="{attribute(value)}"')
    content = element.text
    if content or len(element):
        out.append(">")
        if content:
            out.append(_text(content))
        for child in element:
            _write(child, out, used)
        out.append(f"</{tag}>")
    else:
        out.append(" />")
    tail = element.tail
    if tail:
        out.append(_text(tail))


def _text(value: object) -> str:
    """An element's text or tail, which a tree may hold as anything."""
    if not isinstance(value, str):
        raise _Unknown(value)
    return text(value)


def _cdata(text: str) -> str:
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

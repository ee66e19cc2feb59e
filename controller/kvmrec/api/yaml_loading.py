"""Loading YAML text into documents, with a line for every field, within fixed bounds.

kvmrec parses whatever lands in its directory, as root, in the process that converges the
host, so no file may make it work without bound. The source reads at most 1 MiB of a file;
here a file holds at most ``MAX_DOCUMENTS`` documents, a document at most ``MAX_NODES`` YAML
nodes and ``MAX_DEPTH`` levels of nesting. Nodes are counted with their aliases expanded,
while the document is being composed: an alias stands for a copy of its anchor's whole tree
once the document is constructed, validated and compared, so the few hundred bytes of a
"billion laughs" (anchors of lists of aliases of anchors...) are refused at the alias that
crosses the limit, before any of that work; aliases used modestly (a shared block of
settings) stay allowed. An alias to a node that contains it (a recursive structure, which
PyYAML would build) is refused outright. Each refusal names the line. Duplicate keys, which
PyYAML would silently collapse, are refused too.

Speed: libyaml (PyYAML's C parser) reads the text into events, about six times faster
than PyYAML's pure-Python scanner; the nodes are still composed here, in Python, where
the bounds are counted, so the bounds hold the same on both. A file libyaml finds no valid
YAML in is read again by the pure-Python parser, whose words (and lines) the error gives.
A file that cannot reach any bound, which ``_within_bounds`` tells from its characters
alone (small, no anchor or alias, few enough collections to nest that deep), is composed
by libyaml too: the same nodes, about twice as fast.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.resolver import Resolver

_CParser: Any
try:
    from yaml._yaml import CParser as _CParser
except ImportError:  # PyYAML built without libyaml: the pure-Python parser alone
    _CParser = None

# Far beyond any real host (each Domain is one document; a production host has dozens),
# yet small enough that a file of empty documents costs nothing.
MAX_DOCUMENTS = 1_000
# A Domain with 16 disks and 16 interfaces is about 300 nodes, a Network with a thousand
# DHCP leases about 7,000; a hundred thousand is generous, and still parsed, validated and
# compared in well under a second.
MAX_NODES = 100_000
# A manifest nests about 7 levels deep (spec.ip.dhcp.hosts[0].mac). The parser, the
# validator and the comparisons all recurse, so depth is bounded well below Python's
# recursion limit.
MAX_DEPTH = 100
Path = tuple[str | int, ...]


class _DuplicateKey(Exception):
    def __init__(self, key: str, line: int, path: Path) -> None:
        super().__init__(key)
        self.key = key
        self.line = line
        self.path = path
        self.document: int | None = None


class _Refused(Exception):
    """A document (or file) over one of the limits; ``line`` is where it went over."""

    def __init__(self, reason: str, line: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.line = line
        self.document: int | None = None


class _Bounded(Composer):
    """PyYAML's composer, counting while it composes: nodes (aliases expanded) and depth.

    ``compose_node`` is where PyYAML turns every node and every alias of a document into
    the node graph; it is called once per node written in the file, so the counting costs
    one addition each, and an alias adds its anchor's expanded size (memoized per node, so
    the count itself stays linear however deep the aliases go)."""

    def __init__(self) -> None:
        Composer.__init__(self)
        self._nodes = 0  # of the current document, aliases expanded
        self._depth = 0
        self._open: set[str] = set()  # anchors of the collections being composed
        self._sizes: dict[int, int] = {}  # id(node) -> its size with aliases expanded

    def compose_document(self) -> yaml.Node | None:
        self._nodes, self._sizes = 0, {}
        return super().compose_document()

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[attr-defined]
        line = event.start_mark.line + 1
        if isinstance(event, yaml.AliasEvent):
            if event.anchor in self._open:
                raise _Refused(
                    f"alias *{event.anchor} refers to a node that contains it "
                    "(a recursive structure)",
                    line,
                )
            target = self.anchors.get(event.anchor)
            if target is not None:  # else PyYAML reports the undefined alias
                self._count(self._size(target), line, f"alias *{event.anchor}")
            return super().compose_node(parent, index)
        self._count(1, line, None)
        if self._depth >= MAX_DEPTH:
            raise _Refused(f"nested more than {MAX_DEPTH} levels deep", line)
        anchor = event.anchor if isinstance(event, yaml.CollectionStartEvent) else None
        self._depth += 1
        if anchor is not None:
            self._open.add(anchor)
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1
            if anchor is not None:
                self._open.discard(anchor)

    def _count(self, nodes: int, line: int, alias: str | None) -> None:
        self._nodes += nodes
        if self._nodes <= MAX_NODES:
            return
        if alias is None:
            raise _Refused(f"more than {MAX_NODES} YAML nodes in one document", line)
        raise _Refused(
            f"{alias} expands the document to more than {MAX_NODES} YAML nodes; "
            "aliases that multiply a document (a 'billion laughs') are refused",
            line,
        )

    def _size(self, node: yaml.Node) -> int:
        known = self._sizes.get(id(node))
        if known is not None:
            return known
        size = 1
        if isinstance(node, yaml.MappingNode):
            size += sum(self._size(k) + self._size(v) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            size += sum(self._size(item) for item in node.value)
        self._sizes[id(node)] = size
        return size


class _BoundedLoader(_Bounded, yaml.SafeLoader):
    """The pure-Python safe loader, bounded."""

    def __init__(self, text: str) -> None:
        yaml.SafeLoader.__init__(self, text)
        _Bounded.__init__(self)


if _CParser is not None:

    class _FastBoundedLoader(_Bounded, _CParser, SafeConstructor, Resolver):  # type: ignore[misc]
        """libyaml's events, composed (and bounded) by ``_Bounded``: its methods come
        before ``CParser``'s own composer in the resolution order."""

        def __init__(self, text: str) -> None:
            _CParser.__init__(self, text)
            _Bounded.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)


# Every node of a document takes a character of its own, but for the empty value of a key
# or of an entry (``a:``, ``-``): at most two nodes a character, so a text this short holds
# fewer than MAX_NODES nodes (and, each document after the first starting with ``---``,
# fewer than MAX_DOCUMENTS documents).
_SHORT = MAX_NODES // 4
# Every collection has an indicator of its own: a block sequence its entries' ``-``, a
# block mapping its keys' ``:`` (or ``?``), a flow collection its ``[`` or ``{``.
_COLLECTION_INDICATORS = "-:?[{"


def _within_bounds(text: str) -> bool:
    """Whether ``text`` cannot go over a bound, told from its characters alone.

    No ``&`` and no ``*``: no anchor and no alias, so nothing expands and nothing
    recurses. Short: fewer nodes than MAX_NODES. Fewer collection indicators than
    MAX_DEPTH: fewer collections than that, so no deeper nesting (each level is one). Every
    character is counted, quoted or not, so the test errs only towards the bounded path."""
    if len(text) > _SHORT or "&" in text or "*" in text:
        return False
    return sum(map(text.count, _COLLECTION_INDICATORS)) < MAX_DEPTH


def _load(text: str) -> list[tuple[Any, dict[Path, int]]]:
    """Documents of ``text`` with a map from field path to 1-based line."""
    if _CParser is not None:
        try:
            if _within_bounds(text):
                return _load_with(yaml.CSafeLoader(text), plain=True)
            return _load_with(_FastBoundedLoader(text))
        except yaml.YAMLError:
            pass  # told in the pure-Python parser's words, below
    return _load_with(_BoundedLoader(text))


def _load_with(loader: Any, *, plain: bool = False) -> list[tuple[Any, dict[Path, int]]]:
    """``plain``: the documents have no aliases (``_plain`` builds them)."""
    try:
        documents: list[tuple[Any, dict[Path, int]]] = []
        count = 0
        while loader.check_node():
            count += 1
            if count > MAX_DOCUMENTS:
                mark = loader.peek_event().start_mark
                too_many = _Refused(
                    f"more than {MAX_DOCUMENTS} documents in one file (split it into several)",
                    mark.line + 1,
                )
                too_many.document = count
                raise too_many
            try:
                node = loader.get_node()
            except _Refused as exc:
                exc.document = count
                raise
            if node is None:
                continue
            lines: dict[Path, int] = {}
            try:
                _index_lines(node, (), lines)
            except _DuplicateKey as exc:
                exc.document = len(documents) + 1
                raise
            data = _plain(node, loader) if plain else loader.construct_document(node)
            documents.append((data, lines))
        return documents
    finally:
        loader.dispose()


_STR, _MAP, _SEQ = (f"tag:yaml.org,2002:{name}" for name in ("str", "map", "seq"))


def _plain(node: yaml.Node, loader: Any) -> Any:
    """What ``loader.construct_document(node)`` builds from a document without aliases,
    six times faster: strings, lists and mappings of string keys are built here, every
    other scalar (numbers, booleans, nulls, timestamps) and any mapping with another key
    (a merge ``<<``, a number) by PyYAML's constructor, whose errors stay its own. Without
    aliases no node is shared, so nothing is built twice that PyYAML would share."""
    tag = node.tag
    if tag == _STR:
        return node.value
    if tag == _MAP:
        if all(key.tag == _STR for key, _ in node.value):
            return {key.value: _plain(value, loader) for key, value in node.value}
    elif tag == _SEQ:
        return [_plain(item, loader) for item in node.value]
    return loader.construct_document(node)


def _index_lines(
    node: yaml.Node, path: Path, lines: dict[Path, int], seen_nodes: set[int] | None = None
) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    # An alias is the same node again: walk it once, or an alias bomb costs exponential time.
    seen_nodes = set() if seen_nodes is None else seen_nodes
    if id(node) in seen_nodes:
        return
    seen_nodes.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key in seen and key != "<<":
                raise _DuplicateKey(key, key_node.start_mark.line + 1, (*path, key))
            seen.add(key)
            lines[(*path, key)] = key_node.start_mark.line + 1
            _index_lines(value_node, (*path, key), lines, seen_nodes)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index_lines(item, (*path, i), lines, seen_nodes)

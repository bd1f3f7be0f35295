"""THREAD (RFC 5256 4 and 5) as plain computation: ORDEREDSUBJECT, REFERENCES, and the
`thread-list` syntax of the answer (RFC 5256 6).

No I/O here: `imap.commands.sort` gives each searched message's sent date, base subject and
references, this module builds the threads. Header fields come from whoever sent the mail,
so the work is bounded whatever they hold: at most `MAX_REFERENCES` references are read per
message, a link that would close a loop is never made (so the links always form a forest and
every walk ends), the walks up the tree that the loop checks need share a budget linear in
the number of messages, and no step recurses (a thread may be as deep as the folder is long).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise

#: References read per message (RFC 5256 5 uses them all): the first (the thread's start)
#: and the newest ones, as a client trims a long References field (RFC 5322 3.6.4).
MAX_REFERENCES = 100
#: Steps up the tree the loop checks of one THREAD may take, per message. A check is only
#: needed when a message that already has replies is given a parent it did not have (mail
#: arriving out of order, a truncated References field), and then costs the depth of that
#: parent; a check that would go past the budget counts as a loop and the link is not made.
ANCESTRY_STEPS_PER_MESSAGE = 64


@dataclass(frozen=True)
class ThreadMessage:
    """What threading needs of one searched message.

    `number` is what the answer shows (sequence number or UID), `seq` the sequence number
    (the tie-breaker of RFC 5256 2.2), `sent` the sent date in UTC, `subject` the base
    subject compared as RFC 5256 compares it (casemapped), `reply` whether the extraction of
    the base subject found a reply or forward marker, `message_id` the normalised Message ID
    (None when there is no valid one) and `references` the normalised Message IDs of its
    ancestry (`references_of`), oldest first."""

    number: int
    seq: int
    sent: datetime
    subject: str
    reply: bool = False
    message_id: str | None = None
    references: tuple[str, ...] = ()


class Node:
    """A message of a thread tree, or a dummy (`message` None) standing for a message that
    is referenced but not among those searched. `children` is an ordered set."""

    __slots__ = ("children", "message", "parent")

    def __init__(self, message: ThreadMessage | None = None) -> None:
        self.message = message
        self.parent: Node | None = None
        self.children: dict[Node, None] = {}


def _link(parent: Node, child: Node) -> None:
    child.parent = parent
    parent.children[child] = None


def _unlink(child: Node) -> None:
    if child.parent is not None:
        del child.parent.children[child]
        child.parent = None


# -- Message IDs (RFC 5256 5) --------------------------------------------------------------

_MSG_ID = re.compile(r"<([^<>]*)>")
_QUOTED_PAIR = re.compile(r"\\(.)", re.DOTALL)


def _normalised(raw: str) -> str | None:
    """A msg-id's inside without its quoting: RFC 5256 5 says `<"a"@b>` and `<a@b>` are the
    same Message ID. None when it is no `id-left "@" id-right`."""
    text = "".join(raw.split())
    left, at, right = text.rpartition("@")
    if not at or not left or not right:
        return None
    if len(left) >= 2 and left[0] == '"' and left[-1] == '"':
        left = _QUOTED_PAIR.sub(r"\1", left[1:-1])
        if not left:
            return None
    return f"{left}@{right}"


def message_ids(value: str) -> list[str]:
    """The valid Message IDs in a Message-ID, In-Reply-To or References value, normalised,
    in order (one pass over the value)."""
    out: list[str] = []
    for raw in _MSG_ID.findall(value):
        mid = _normalised(raw)
        if mid is not None:
            out.append(mid)
    return out


def references_of(references: str, in_reply_to: str) -> tuple[str, ...]:
    """RFC 5256 5: the Message IDs of References; without a valid one, the first valid one
    of In-Reply-To; else none. At most `MAX_REFERENCES`: the first and the newest."""
    refs = message_ids(references)
    if not refs:
        refs = message_ids(in_reply_to)[:1]
    if len(refs) > MAX_REFERENCES:
        refs = [refs[0], *refs[-(MAX_REFERENCES - 1) :]]
    return tuple(refs)


# -- ORDEREDSUBJECT (RFC 5256 4) -----------------------------------------------------------


def ordered_subject(messages: Iterable[ThreadMessage]) -> list[Node]:
    """RFC 5256 4: messages sorted by base subject then sent date, one thread per base
    subject, threads in the order of their first message's sent date. The first message is
    the thread's root and every other one a child of it (no grandchildren)."""
    threads: dict[str, list[ThreadMessage]] = {}
    for m in sorted(messages, key=lambda m: (m.subject, m.sent, m.seq)):
        threads.setdefault(m.subject, []).append(m)
    roots: list[Node] = []
    for thread in sorted(threads.values(), key=lambda t: (t[0].sent, t[0].seq)):
        root = Node(thread[0])
        for m in thread[1:]:
            _link(root, Node(m))
        roots.append(root)
    return roots


# -- REFERENCES (RFC 5256 5) ---------------------------------------------------------------


class _Ancestry:
    """The loop check of RFC 5256 5 step 1 ("before making message A the parent of B, make
    sure that A is not a descendent of B"), with its shared budget of steps."""

    def __init__(self, messages: int) -> None:
        self.steps = ANCESTRY_STEPS_PER_MESSAGE * messages + 1024

    def would_loop(self, parent: Node, child: Node) -> bool:
        if parent is child:
            return True
        if not child.children:
            return False  # nothing under `child`: `parent` cannot be there
        node: Node | None = parent
        while node is not None:
            if node is child:
                return True
            self.steps -= 1
            if self.steps < 0:
                return True  # out of budget: refuse the link, as if it closed a loop
            node = node.parent
        return False


def _key(node: Node, keys: dict[Node, tuple[datetime, int]]) -> tuple[datetime, int]:
    """The sent date and sequence number a node sorts by: its own, or a dummy's first child's
    (RFC 5256 5 steps 4 and 6; the children are sorted first)."""
    if node.message is not None:
        return (node.message.sent, node.message.seq)
    return keys[next(iter(node.children))]


def _preorder(roots: Iterable[Node]) -> list[Node]:
    """Every node under `roots`, each before its descendants (no recursion)."""
    order: list[Node] = []
    stack = list(roots)
    while stack:
        node = stack.pop()
        order.append(node)
        stack.extend(node.children)
    return order


def _sort_siblings(roots: Iterable[Node]) -> list[Node]:
    """RFC 5256 5 step 6: every set of siblings by sent date, the deepest first, so that a
    dummy sorts by its first child; then the roots."""
    keys: dict[Node, tuple[datetime, int]] = {}
    for node in reversed(_preorder(roots)):
        if len(node.children) > 1:
            node.children = dict.fromkeys(sorted(node.children, key=keys.__getitem__))
        keys[node] = _key(node, keys)
    return sorted(roots, key=keys.__getitem__)


def _prune(roots: list[Node]) -> list[Node]:
    """RFC 5256 5 step 3: a dummy without children goes; a dummy with children goes and its
    children take its place, except under the root, where they do only if there is one.
    Done from the leaves up, which gives the same tree as the RFC's walk down."""
    for node in reversed(_preorder(roots)):
        if not any(c.message is None for c in node.children):
            continue
        children: dict[Node, None] = {}
        for c in node.children:
            if c.message is None:  # already pruned: its children are messages
                for g in c.children:
                    g.parent = node
                    children[g] = None
            else:
                children[c] = None
        node.children = children
    kept: list[Node] = []
    for root in roots:
        if root.message is None and len(root.children) <= 1:
            for only in root.children:
                only.parent = None
                kept.append(only)
            continue
        kept.append(root)
    return kept


def _thread_subject(node: Node) -> ThreadMessage:
    """RFC 5256 5 step 5.B.i: the message whose base subject is the thread's: the node's, or
    a dummy's first child's."""
    return node.message if node.message is not None else next(iter(node.children)).message  # type: ignore[return-value]


def _merge_subjects(roots: list[Node]) -> list[Node]:
    """RFC 5256 5 step 5: threads under the root with the same (non-empty) base subject are
    gathered, a reply or forward under the thread it answers, others under a new dummy."""
    table: dict[str, Node] = {}
    for node in roots:  # 5.B
        subject = _thread_subject(node).subject
        if not subject:
            continue
        held = table.get(subject)
        # Replaced by a dummy, or a reply or forward by a message that is neither.
        if held is None or (
            held.message is not None and (node.message is None or (held.message.reply and not node.message.reply))
        ):
            table[subject] = node
    kept = dict.fromkeys(roots)
    for node in roots:  # 5.C
        subject = _thread_subject(node).subject
        if not subject:
            continue
        held = table[subject]
        if held is node:
            continue
        kept.pop(node, None)
        if held.message is None and node.message is None:
            for child in list(node.children):
                _link(held, child)
            node.children = {}
        elif held.message is None or (node.message is not None and node.message.reply and not held.message.reply):
            _link(held, node)
        else:
            dummy = Node()
            kept.pop(held, None)
            _link(dummy, held)
            _link(dummy, node)
            kept[dummy] = None
            table[subject] = dummy
    return list(kept)


def references(messages: Sequence[ThreadMessage]) -> list[Node]:
    """RFC 5256 5, the REFERENCES algorithm, steps 1 to 6."""
    ordered = sorted(messages, key=lambda m: m.seq)
    by_id: dict[str, Node] = {}
    nodes: list[Node] = []
    own: list[Node] = []
    for m in ordered:
        node = Node(m)
        # 1.A: a Message ID belongs to the first message (lowest sequence number) that has
        # it; a message without one, or with a duplicate, gets its own node and no ID.
        if m.message_id is not None and m.message_id not in by_id:
            by_id[m.message_id] = node
        nodes.append(node)
        own.append(node)

    def container(mid: str) -> Node:
        node = by_id.get(mid)
        if node is None:  # 1.A: no such message: a dummy, the same for every reference to it
            node = by_id[mid] = Node()
            nodes.append(node)
        return node

    ancestry = _Ancestry(len(ordered))
    for m, node in zip(ordered, own, strict=True):
        chain = [container(mid) for mid in m.references]
        # 1.A: each reference the parent of the next, unless the next has a parent already
        # or the link would close a loop.
        for parent, child in pairwise(chain):
            if child.parent is None and not ancestry.would_loop(parent, child):
                _link(parent, child)
        # 1.B: the last reference (or none) is the message's parent, replacing any other.
        last = chain[-1] if chain else None
        if node.parent is not last:
            _unlink(node)
            if last is not None and not ancestry.would_loop(last, node):
                _link(last, node)
    # 2: the nodes without a parent are the roots.
    roots = [n for n in nodes if n.parent is None]
    # 3
    roots = _prune(roots)
    # 4: the roots by sent date, a dummy by its earliest child (every set of siblings is
    # sorted here, which step 5 does not mind: it looks at the roots and dummies' first child).
    roots = _sort_siblings(roots)
    # 5
    roots = _merge_subjects(roots)
    # 6
    return _sort_siblings(roots)


# -- the answer (RFC 5256 6) ---------------------------------------------------------------


def thread_lists(roots: Iterable[Node]) -> str:
    """The `1*thread-list` of `* THREAD` for `roots` (RFC 5256 6):

        thread-list    = "(" (thread-members / thread-nested) ")"
        thread-members = nz-number *(SP nz-number) [SP thread-nested]
        thread-nested  = 2*thread-list

    A message with one child continues its list with it, one with several opens a list per
    child; a dummy (only ever a root) is a list of its children's lists. Built with a stack,
    not by recursion."""
    out: list[str] = []
    # Each item: a node whose members are to be written, or a string to write as it is.
    stack: list[Node | str] = []
    for root in reversed(list(roots)):
        stack += [")", root, "("]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            out.append(item)
            continue
        children = list(item.children)
        if item.message is not None:
            out.append(str(item.message.number))
            if len(children) == 1:
                out.append(" ")
                stack.append(children[0])
                continue
            if children:
                out.append(" ")
        for child in reversed(children):
            stack += [")", child, "("]
    return "".join(out)

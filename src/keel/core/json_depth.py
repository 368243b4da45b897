"""How deeply JSON nests, measured on the raw bytes as they stream in, before any parser.

Deep nesting is cheap to send and expensive to handle: orjson refuses to serialise past
254 levels (a 500 when such a value is stored), and recursive code downstream can run
out of stack. `JsonDepthGauge` follows a JSON text (or NDJSON stream) chunk by chunk and
says when arrays and objects nest deeper than a limit. It works with bytes operations
that run in C (replace, translate, split), never a Python loop per byte.
"""

from __future__ import annotations

_OPEN, _CLOSE, _QUOTE, _BACKSLASH = b"[", b"]", b'"', b"\\"
# Keep only what decides nesting: quotes and brackets, with `{}` folded into `[]`.
_FOLD = bytes.maketrans(b"{}", b"[]")
_NOT_STRUCTURAL = bytes(set(range(256)) - set(b'"[]{}'))


class JsonDepthGauge:
    """Tracks the nesting depth of a JSON text fed in arbitrary chunks.

    Malformed JSON is never reported as too deep on that account alone: the parser that
    reads the same bytes reports it.
    """

    def __init__(self, max_depth: int) -> None:
        self.max_depth = max_depth
        self._depth = 0  # arrays and objects open at the end of what was fed
        self._in_string = False
        self._escape_pending = False  # the last chunk ended inside an escape (`\`)

    def too_deep(self, chunk: bytes) -> bool:
        """Feed the next chunk; True once nesting has passed `max_depth`."""
        if self._escape_pending:
            chunk = _BACKSLASH + chunk
            self._escape_pending = False
        if _BACKSLASH in chunk:
            # Escapes pair up left to right: drop escaped backslashes, keep a dangling one
            # for the next chunk, then drop escaped quotes. No quote left is escaped.
            chunk = chunk.replace(b"\\\\", b"")
            if chunk.endswith(_BACKSLASH):
                self._escape_pending = True
                chunk = chunk[:-1]
            chunk = chunk.replace(b'\\"', b"")
        chunk = chunk.translate(_FOLD, _NOT_STRUCTURAL)
        if self._in_string:
            end = chunk.find(_QUOTE)
            if end == -1:
                return False
            chunk, self._in_string = chunk[end + 1 :], False
        if _QUOTE in chunk:
            # Two adjacent quotes enclose no bracket, inside a string or out: dropping them
            # changes no depth. Then every other piece between quotes is inside a string.
            pieces = chunk.replace(b'""', b"").split(_QUOTE)
            self._in_string = len(pieces) % 2 == 0
            chunk = b"".join(pieces[::2])
        return self._track(chunk)

    def _track(self, brackets: bytes) -> bool:
        opened = brackets.count(_OPEN)
        end_depth = self._depth + opened - (len(brackets) - opened)
        if end_depth < 0:  # more closed than opened: malformed, for the parser to refuse
            self._depth = 0
            return False
        # Close what stays open, carry what was open: a balanced sequence, whose depth is
        # the number of rounds that strip its innermost `[]` pairs until nothing is left.
        balanced = _OPEN * self._depth + brackets + _CLOSE * end_depth
        self._depth = end_depth
        for _ in range(self.max_depth):
            stripped = balanced.replace(b"[]", b"")
            if len(stripped) == len(balanced):  # empty, or a `][` no round removes
                return False
            balanced = stripped
        return bool(balanced)

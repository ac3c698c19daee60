"""Error text as an error frame carries it: clipped to a bound, escaped where UTF-8 cannot carry it.

Pure (no I/O): used by a membrane's answers (docs/protocol.md 4.4) and by a
replicated cell's session table, which keeps the message an ``apply``
raised with as part of its replicated state.
"""

from __future__ import annotations

#: An error frame carries at most this many characters of message and of traceback
#: (docs/protocol.md 4.4): a handler raising with a huge text (say, the 16 MiB
#: argument it refused) must not make an error frame larger than the peer takes,
#: nor a second copy of that text in the cell's memory.
MAX_ERROR_TEXT = 8192
MAX_TRACEBACK_TEXT = 16384


def clip_text(text: str, limit: int) -> str:
    """``text`` as an error frame carries it: at most ``limit`` characters in all.

    Anything UTF-8 cannot carry (a lone surrogate) is escaped as ``\\udXXX``.
    Text that is longer than ``limit`` even so keeps its head and its tail
    around a line ``[... N characters cut ...]`` (N counts characters of
    ``text``), the marker and the escapes counted within ``limit``. A huge
    text is never copied whole: only what can be kept of it is escaped.
    """
    if len(text) <= limit:
        text = _escaped(text)
        if len(text) <= limit:
            return text  # (nearly always: short text travels whole)
    # The marker is at most as long as when it names every character as cut.
    room = limit - len(_cut_marker(len(text)))
    if room < 2:  # (a limit too small for the marker: just the head)
        return _escaped(text[:limit])[:limit]
    head = _fit_escaped(text, room - room // 2, from_start=True)
    tail = _fit_escaped(text, room // 2, from_start=False)
    cut = len(text) - len(head) - len(tail)  # > 0: else text would have fitted
    return f"{_escaped(head)}{_cut_marker(cut)}{_escaped(tail)}"


def _escaped(text: str) -> str:
    """``text`` with each lone surrogate written as ``\\udXXX`` (it cannot travel)."""
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _cut_marker(cut: int) -> str:
    return f"\n[... {cut} character{'' if cut == 1 else 's'} cut ...]\n"


def _fit_escaped(text: str, room: int, *, from_start: bool) -> str:
    """The longest head (or tail) of ``text`` that takes at most ``room``
    characters once escaped (an escaped lone surrogate takes six)."""
    part = text[:room] if from_start else text[max(len(text) - room, 0) :]
    if part.isascii():
        return part
    used = n = 0
    for char in part if from_start else reversed(part):
        used += 1 if char.isascii() else len(_escaped(char))
        if used > room:
            break
        n += 1
    return part[:n] if from_start else part[len(part) - n :]


__all__ = ["MAX_ERROR_TEXT", "MAX_TRACEBACK_TEXT", "clip_text"]

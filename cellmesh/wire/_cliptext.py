"""Error text as an error frame carries it: clipped to a bound, escaped where UTF-8 cannot carry it.

Pure (no I/O): used by a membrane's answers (docs/protocol.md 4.4) and by a
replicated cell's session table, which keeps the message an ``apply``
raised with as part of its replicated state.
"""

from __future__ import annotations

from typing import Final

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


#: An int of at most this many bits is shown in an error message as it is; a
#: larger one by its size (Python refuses to turn an int of over 4,300 digits
#: into text, and a peer's 64 KiB integer would make as long a message).
_SHOWN_BITS: Final = 128
#: A value's repr is cut to this many characters in an error message.
_SHOWN_CHARS: Final = 200


def show_value(value: object) -> str:
    """``repr(value)`` made safe for an error message about a value a peer sent.

    Never raises, and stays short: an int of more than :data:`_SHOWN_BITS`
    bits becomes ``"an integer of N bits"``, a container holding one is named
    by its type, and a long repr is cut. Use it for every decoded value put
    into a message: formatting a huge int directly raises ValueError, which
    would turn the peer's error into an unhelpful ``MALFORMED_FRAME``.
    """
    if type(value) is int:
        bits = value.bit_length()
        if bits <= _SHOWN_BITS:
            return repr(value)
        return f"{'a negative' if value < 0 else 'an'} integer of {bits:,} bits"
    try:
        text = repr(value)
    except ValueError:  # it holds an int too long to print
        return f"a {type(value).__name__} holding an integer too long to show"
    if len(text) > _SHOWN_CHARS:
        text = text[: _SHOWN_CHARS - 3] + "..."
    return text


__all__ = ["MAX_ERROR_TEXT", "MAX_TRACEBACK_TEXT", "clip_text", "show_value"]

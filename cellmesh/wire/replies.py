"""Typed replies: a request protein names the protein its receptor answers with.

Theory of operation
-------------------
A request protein subclasses :class:`Request` parameterised by its reply::

    @cellmesh.protein("ping.Pong")
    class Pong:
        n: int

    @cellmesh.protein("ping.Ping")
    class Ping(cellmesh.Request[Pong]):
        n: int

To a type checker, ``await syn.fire(Ping(1))`` is then a ``Pong``: the
callers take ``msg: Request[R]`` and return ``R``. To a type checker
:class:`Request` is an empty :class:`typing.Protocol` (at run time a plain
generic base: a protocol's metaclass would slow every ``isinstance`` that
misses a request class), so *every* object satisfies ``Request[R]``
structurally; a protein that declares nothing leaves ``R`` unsolved, and
``R``'s default (PEP 696) is ``Any``: untyped use keeps working. There is no
``object -> Any`` overload on purpose: a fallback overload would also catch
a typed call whose result is used as the wrong type (``pong: Pong = await
syn.fire(Get(...))`` would silently become ``Any``); with one signature
mypy reports it (``expected "Request[Pong]"``). The declaration lives in the
class statement, not in an argument of ``@protein``, because type checkers
do not let a class decorator change the type of the class it decorates; the
base class is what they see.

At run time the same declaration is read from the class's
``__orig_bases__`` (resolved once, on first use, like a protein's schema)
into the tuple of accepted types, and :func:`check_reply` raises
:class:`~cellmesh.errors.UnexpectedReply` when a reply is not one of them.
The reply may be a protein class, ``None``, or a union of these
(``Request[Pong | None]``); a string (``Request["Pong"]``, ``"Pong | None"``)
names classes of the request class's module by (dotted) name, looked up on
first use -- never evaluated. A request class that leaves its type
variable open (``class Base(Request[R])``) is checked through its
parameterised subclasses (``class Ping(Base[Pong])``); one left open
everywhere declares nothing and is not checked.

Pure: no I/O, no clock. The module of a string reply type is looked up in
``sys.modules``, which is a read of the interpreter's state, not an import.
"""

from __future__ import annotations

import sys
import types
import typing
from typing import TYPE_CHECKING, Any, Final, Generic, Protocol, TypeVar

from ..errors import UnexpectedReply

R_co = TypeVar("R_co", covariant=True)
if TYPE_CHECKING:
    from typing_extensions import TypeVar as _TypeVarWithDefault

    #: The reply type of the callers' signatures (``Request[R] -> R``): ``Any``
    #: when the message declares nothing.
    R = _TypeVarWithDefault("R", default=Any)
else:
    R = TypeVar("R")

#: Attribute caching ``(cls, accepted reply types or None)`` on a protein class
#: (the class is kept so that a subclass never uses its base's entry).
_CACHE: Final = "__cellmesh_reply_types__"
_MISSING: Final = object()


if TYPE_CHECKING:

    class Request(Protocol[R_co]):
        """Base class of a request protein whose reply is an ``R_co`` (see the module doc).

        It adds no fields, no methods and no wire data: the reply type is a
        declaration for type checkers and for the caller's run-time check only.
        To a type checker it is an empty protocol, so an undeclared protein is
        a ``Request[Any]``; a class states its reply by subclassing it.
        """

else:

    class Request(Generic[R_co]):
        """Base class of a request protein whose reply is an ``R_co`` (see the module doc).

        At run time a plain generic base (a protocol's metaclass would make
        every ``isinstance`` that misses a request class cost ~0.4 us).
        """

        __slots__ = ()


def _lookup(name: str, owner: type) -> object:
    """The object a dotted ``name`` names in ``owner``'s module (no evaluation)."""
    if name == "None":
        return None
    if name == owner.__name__:
        return owner
    module = sys.modules.get(owner.__module__)
    value: object = module
    for part in name.split("."):
        value = getattr(value, part, _MISSING)
        if value is _MISSING:
            raise TypeError(
                f"{owner.__qualname__}: cannot resolve the reply type {name!r} "
                f"in module {owner.__module__!r}"
            )
    return value


def _resolve(arg: object, owner: type) -> object:
    """A ForwardRef or string (``"Pong"``, ``"Pong | None"``) looked up by name; else ``arg``."""
    if isinstance(arg, typing.ForwardRef):
        arg = arg.__forward_arg__
    if not isinstance(arg, str):
        return arg
    options = [_lookup(part.strip(), owner) for part in arg.split("|")]
    if len(options) == 1:
        return options[0]
    return typing.Union[tuple(options)]  # noqa: UP007 - built from a runtime tuple


def _declared(cls: type) -> object | None:
    """The reply type argument ``cls`` binds for :class:`Request` (None if it binds none)."""
    for klass in cls.__mro__:
        for base in klass.__dict__.get("__orig_bases__", ()):
            origin = typing.get_origin(base)
            if not (isinstance(origin, type) and Request in origin.__mro__):
                continue
            arg = typing.get_args(base)[0]
            if origin is not Request:
                # ``class Ping(Base[Pong])``: Base's own parameter, substituted.
                inner = _declared(origin)
                params = getattr(origin, "__parameters__", ())
                if isinstance(inner, TypeVar) and inner in params:
                    arg = typing.get_args(base)[params.index(inner)]
                else:
                    arg = inner
            if arg is not None and not isinstance(arg, TypeVar):
                return _resolve(arg, klass)
            return arg
    return None


def _accepted(tp: object, owner: type) -> tuple[type, ...]:
    if tp is None or tp is type(None):
        return (type(None),)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        out: list[type] = []
        for option in typing.get_args(tp):
            out.extend(_accepted(_resolve(option, owner), owner))
        return tuple(out)
    if isinstance(tp, type) and "__protein_name__" in tp.__dict__:
        return (tp,)
    raise TypeError(
        f"{owner.__qualname__}: the reply type of a Request must be a protein class, None "
        f"or a union of these, not {tp!r}"
    )


def reply_types(cls: type) -> tuple[type, ...] | None:
    """The types a reply to a ``cls`` request may have; None when ``cls`` declares none.

    Computed on first use and cached on the class. Raises :class:`TypeError`
    when the declaration is not a protein, None or a union of these.
    """
    cached = getattr(cls, _CACHE, None)
    if cached is not None and cached[0] is cls:
        return typing.cast("tuple[type, ...] | None", cached[1])
    accepted: tuple[type, ...] | None = None
    if Request in cls.__mro__ and cls is not Request:
        declared = _declared(cls)
        if declared is not None and not isinstance(declared, TypeVar):
            accepted = _accepted(declared, cls)
    type.__setattr__(cls, _CACHE, (cls, accepted))
    return accepted


def _label(tp: type) -> str:
    if tp is type(None):
        return "None"
    name = tp.__dict__.get("__protein_name__")
    return name if isinstance(name, str) else tp.__qualname__


def check_reply(request: Request[R], reply: Any, cell: str) -> R:
    """``reply`` itself when it is of the type ``request`` declares (or declares none).

    Raises :class:`~cellmesh.errors.UnexpectedReply` (naming ``cell``, the
    request's protein, what was expected and what came) otherwise.
    """
    cls = type(request)
    cached = getattr(cls, _CACHE, None)
    accepted = cached[1] if cached is not None and cached[0] is cls else reply_types(cls)
    if accepted is None or isinstance(reply, accepted):
        return reply  # type: ignore[no-any-return]  # checked just now (a cast costs a call)
    raise UnexpectedReply(
        cell=cell,
        request=_label(cls),
        expected=tuple(_label(t) for t in accepted),
        got=_label(type(reply)),
    )


def return_problem(request: type, annotation: object) -> str | None:
    """Why a receptor of ``request`` annotated ``-> annotation`` breaks its declaration.

    None when it fits (every type the annotation allows is a declared reply
    type), when ``request`` declares nothing, or when the annotation is not
    made of proteins and None (``Any``, a protocol: nothing to compare).
    """
    accepted = reply_types(request)
    if accepted is None:
        return None
    try:
        returned = _accepted(_resolve(annotation, request), request)
    except TypeError:
        return None
    extra = [t for t in returned if not issubclass(t, accepted)]
    if not extra:
        return None
    return (
        f"returns {' | '.join(_label(t) for t in extra)} but {_label(request)} declares "
        f"the reply {' | '.join(_label(t) for t in accepted)}"
    )


def check_replies(requests: list[Request[R]], replies: list[Any], *, cell: str) -> list[R]:
    """``replies`` itself when each reply fits its request (see :func:`check_reply`).

    Looks the declaration up once per run of one request class, so a batch
    of one protein costs one lookup and an ``isinstance`` per reply.
    """
    if len(requests) != len(replies):
        raise ValueError(f"{len(requests)} requests but {len(replies)} replies")
    classes = set(map(type, requests))
    if len(classes) == 1:  # one request class (the common batch): checks at C speed
        accepted_all = reply_types(classes.pop())
        if accepted_all is None or set(map(type, replies)) <= set(accepted_all):
            return replies
    last: type | None = None
    accepted: tuple[type, ...] | None = None
    for request, reply in zip(requests, replies, strict=True):
        cls = type(request)
        if cls is not last:
            last, accepted = cls, reply_types(cls)
        if accepted is not None and not isinstance(reply, accepted):
            check_reply(request, reply, cell)  # raises, with the names
    return replies


__all__ = ["R", "Request", "check_replies", "check_reply", "reply_types", "return_problem"]

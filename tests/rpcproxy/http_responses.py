"""Hypothesis strategies for HTTP/1.x responses as an upstream puts them on the wire, each with what a
correct client must make of them (status, headers, body, whether the connection may be reused): the
oracle the proxy's HTTP client (rpcproxy.upstream_http, llhttp underneath) is judged against.

Well-formed means RFC 9112: token header names, field values of visible ASCII and obs-text (UTF-8 text
included) with optional whitespace around them, a body framed by Content-Length, by chunked (random
chunk sizes, extensions, trailers) or by the close; interim 1xx responses before the final one.
"""

from __future__ import annotations

import itertools
import string
from dataclasses import dataclass

from hypothesis import strategies as st

TCHAR = "!#$%&'*+-.^_`|~" + string.ascii_letters + string.digits
VCHAR = "".join(chr(c) for c in range(0x21, 0x7F))
FRAMING = frozenset({"content-length", "transfer-encoding", "connection"})
# Non-ASCII characters Python's str.isspace() calls whitespace: obs-text to HTTP, never OWS.
UNICODE_SPACES = ["\u00a0", "\u1680", "\u2007", "\u2028", "\u202f", "\u3000"]


@dataclass(frozen=True)
class Wire:
    """One response on the wire and the client's expected reading of it."""

    data: bytes  # every byte the upstream sends (interim responses, then the final one)
    head_end: int  # offset just past the final response's head (where its body starts)
    framing: str  # "length", "chunked", "close" (the end of the connection ends the body), "none" (204/304)
    interim: int  # 1xx responses before the final one
    closes: bool  # the upstream ends the connection after it
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    reusable: bool

    def reading(self) -> tuple[int, list[tuple[str, str]], bytes, bool]:
        return self.status, self.headers, self.body, self.reusable


def _ascii(alphabet: str, min_size: int = 0, max_size: int = 10) -> st.SearchStrategy[bytes]:
    return st.text(alphabet=alphabet, min_size=min_size, max_size=max_size).map(str.encode)


# A non-empty run of field-vchar: visible ASCII, raw obs-text bytes, or UTF-8 text (obs-text too).
_WORD = st.one_of(
    _ascii(VCHAR, 1, 8),
    st.lists(st.integers(0x80, 0xFF), min_size=1, max_size=4).map(bytes),
    st.text(
        alphabet=st.one_of(
            st.sampled_from(UNICODE_SPACES),
            st.characters(min_codepoint=0x80, exclude_categories=("Cs", "Cc")),
        ),
        min_size=1,
        max_size=3,
    ).map(lambda s: s.encode("utf-8")),
)
_OWS = _ascii(" \t", 0, 2)


@st.composite
def field_values(draw: st.DrawFn) -> tuple[bytes, str]:
    """(bytes on the wire after the colon, the value a reader must report: OWS around it removed)."""
    words = draw(st.lists(_WORD, max_size=4))
    core = b""
    for i, word in enumerate(words):
        core += (draw(st.sampled_from([b" ", b"\t", b" \t "])) if i else b"") + word
    wire = draw(_OWS) + core + draw(_OWS)
    return wire, core.decode("utf-8", "surrogateescape")


header_names = st.text(alphabet=TCHAR, min_size=1, max_size=12).filter(lambda n: n.lower() not in FRAMING)


@st.composite
def header_fields(draw: st.DrawFn, max_size: int = 5) -> list[tuple[bytes, tuple[str, str]]]:
    """Random non-framing header lines: (line bytes, expected (name, value))."""
    fields = []
    for name in draw(st.lists(header_names, max_size=max_size)):
        wire, value = draw(field_values())
        fields.append((name.encode() + b":" + wire, (name, value)))
    return fields


def _line(name: str, value: str) -> tuple[bytes, tuple[str, str]]:
    return f"{name}: {value}".encode(), (name, value)


def _cased(word: str) -> st.SearchStrategy[str]:
    return st.sampled_from([word, word.lower(), word.upper(), word.title()])


@st.composite
def _chunk_ext(draw: st.DrawFn) -> bytes:
    """Zero or more ``;name[=value]`` extensions, with BWS before the first ``;``. RFC 9112 7.1.1 allows it
    around every ``;`` and ``=``, but llhttp refuses it elsewhere (and the proxy's upstreams send none)."""
    ext = b""
    for i in range(draw(st.integers(0, 2))):
        bws = b"" if i else draw(st.sampled_from([b"", b" ", b"\t "]))
        ext += bws + b";" + draw(_ascii(TCHAR, 1, 6))
        if draw(st.booleans()):
            quoted = b'"' + draw(_ascii(VCHAR.replace('"', "").replace("\\", "") + " ;=", 0, 8)) + b'"'
            ext += b"=" + draw(st.one_of(_ascii(TCHAR, 1, 6), st.just(quoted)))
    return ext


@st.composite
def chunked(draw: st.DrawFn, body: bytes) -> bytes:
    """*body* in the chunked coding: random chunk sizes (hex in either case, leading zeros),
    extensions, the last chunk, optional trailer fields."""
    out = b""
    pos = 0
    while pos < len(body):
        size = draw(st.integers(1, len(body) - pos))
        digits = draw(st.sampled_from([f"{size:x}", f"{size:X}", f"00{size:x}"]))
        out += digits.encode() + draw(_chunk_ext()) + b"\r\n" + body[pos : pos + size] + b"\r\n"
        pos += size
    out += draw(st.sampled_from([b"0", b"000"])) + draw(_chunk_ext()) + b"\r\n"
    for line, _ in draw(header_fields(max_size=2)):
        out += line + b"\r\n"
    return out + b"\r\n"


@st.composite
def interim_responses(draw: st.DrawFn, count: int) -> bytes:
    """*count* 1xx responses (100 Continue, 102 Processing, 103 Early Hints) with their own headers."""
    out = b""
    for status in draw(st.lists(st.sampled_from([100, 102, 103]), min_size=count, max_size=count)):
        out += f"HTTP/1.1 {status} {draw(st.text(alphabet=VCHAR + ' ', max_size=10))}\r\n".encode()
        out += b"".join(line + b"\r\n" for line, _ in draw(header_fields(max_size=2)))
        out += b"\r\n"
    return out


CONNECTION_TOKENS = st.lists(
    st.sampled_from(["close", "Close", "keep-alive", "Keep-Alive", "x-trace", "TE"]), min_size=1, max_size=3
)


@st.composite
def responses(draw: st.DrawFn, max_body: int = 200) -> Wire:
    """A well-formed response (after optional interim ones) and its expected reading."""
    framing = draw(st.sampled_from(["length", "chunked", "close", "none"]))
    v11 = framing == "chunked" or draw(st.booleans())  # chunked is HTTP/1.1 only
    if framing == "none":
        status = draw(st.sampled_from([204, 304]))
        body = b""
    else:
        statuses = st.one_of(st.sampled_from([200, 400, 404, 500, 502, 503]), st.integers(200, 599))
        status = draw(statuses.filter(lambda s: s not in (204, 304)))
        body = draw(st.binary(max_size=max_body))

    lines = draw(header_fields())
    tokens: list[str] = []
    if draw(st.booleans()):  # one or two Connection lines
        for _ in range(draw(st.integers(1, 2))):
            group = draw(CONNECTION_TOKENS)
            tokens += [t.lower() for t in group]
            lines.append(_line(draw(_cased("Connection")), ", ".join(group)))
    keep_alive = "close" not in tokens and (v11 or "keep-alive" in tokens)

    payload = body
    if framing == "length" or (status == 304 and draw(st.booleans())):
        # a 304's Content-Length is that of the representation it stands for: no body follows
        length = len(body) if framing == "length" else draw(st.integers(0, 10_000))
        text = draw(st.sampled_from([str(length), f"00{length}"]))
        name = draw(_cased("Content-Length"))
        # once: equal repeats are valid (RFC 9110 8.6) but llhttp refuses them, which 8.6 also allows
        lines.append(_line(name, text))
    elif framing == "chunked":
        lines.append(_line(draw(_cased("Transfer-Encoding")), draw(_cased("chunked"))))
        payload = draw(chunked(body))
    lines = draw(st.permutations(lines))

    interim = draw(st.integers(0, 2)) if v11 else 0  # a server never sends 1xx to HTTP/1.0
    prefix = draw(interim_responses(interim))
    reason = draw(st.text(alphabet=VCHAR + " \t", max_size=12))
    head = f"{'HTTP/1.1' if v11 else 'HTTP/1.0'} {status} {reason}\r\n".encode()
    head += b"".join(line + b"\r\n" for line, _ in lines) + b"\r\n"
    reusable = keep_alive and framing != "close"
    return Wire(
        data=prefix + head + payload,
        head_end=len(prefix) + len(head),
        framing=framing,
        interim=interim,
        closes=not reusable,
        status=status,
        headers=[expected for _, expected in lines],
        body=body,
        reusable=reusable,
    )


def splits(data: bytes) -> st.SearchStrategy[list[bytes]]:
    """*data* cut at random points into non-empty pieces (each one ``data_received`` call / TCP write)."""
    if len(data) < 2:
        return st.just([data] if data else [])
    cuts = st.lists(st.integers(1, len(data) - 1), unique=True, max_size=min(12, len(data) - 1))
    return cuts.map(lambda points: _cut(data, sorted(points)))


def _cut(data: bytes, points: list[int]) -> list[bytes]:
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]

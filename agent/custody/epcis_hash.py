"""The CBV 2.0 event hash of an EPCIS 2.0 JSON event: ``ni:///sha-256;<hex>?ver=CBV2.0``.

CBV 2.0 §8.9 names an event by a hash of its content, so that the same event captured twice,
or written in XML instead of JSON, gets the same ``eventID``. The canonical "pre-hash string"
is the one of GS1's reference implementation, the EPCIS event hash generator
(github.com/RalphTro/epcis-event-hash-generator, PyPI ``epcis-event-hash-generator`` 1.9.x);
this module is written independently from its description and tested for equal output on
its example events and on every kind of event gxpgate builds (``tests/cases/epcis_hash``).

The pre-hash string
    ``eventType=<type>``, then the standard fields in a fixed order (eventTime,
    eventTimeZoneOffset, certificationInfo, parentID, epcList, …, action, transformationID,
    bizStep, disposition, persistentDisposition, readPoint, bizLocation, …), each written
    ``name=value`` with its children appended; repeated entries (the EPCs of a list) sorted;
    fields without a value left out. Then every other field (``ilmd``, extension fields) in
    the same form, sorted; ``eventID``, ``recordTime``, ``type`` and ``errorDeclaration`` are
    not part of it. Nothing separates the parts. The hash is SHA-256 of its UTF-8 bytes.

How values are written
    * JSON lists are flattened the way the XML binding nests them: ``epcList: [a, b]`` is
      ``epcList`` with children ``epc=a``, ``epc=b``; ``quantityList`` items are
      ``quantityElement`` with ``epcClass``, ``quantity``, ``uom``; ``readPoint`` / ``bizLocation``
      have an ``id`` child.
    * Times (a field whose name contains ``time`` but not ``offset``): UTC, millisecond
      precision, ``Z``. Microseconds are rounded to milliseconds half to even, as the reference
      does; a value that rounds up to the next second carries into it (the reference fails on
      such an event instead).
    * Numbers: without a leading ``+``, leading zeros or a trailing ``.0`` — applied to *every*
      value that reads as a number, so a lot ``0329`` is written ``329`` (that is the
      reference's rule; a value that overflows a float, such as lot ``inf``, is kept as text
      where the reference fails on the event).
    * EPC URIs (``urn:epc:id:sgtin``, ``sscc``, ``sgln``, ``urn:epc:class:lgtin``,
      ``urn:epc:idpat:sgtin``) as canonical GS1 Digital Link URIs (``https://id.gs1.org/01/…
      /21/…``), so an event names the same object whichever syntax it used. GS1 Digital Link
      URIs pass unchanged: gxpgate writes them canonical already (``id.gs1.org``, GTIN-14, no
      query string, a percent-encoded value).
    * CBV short names of the fields typed by the CBV vocabulary (``bizStep``, ``disposition``,
      ``persistentDisposition``, business transaction / source / destination types) become
      web URIs (``receiving`` → ``https://ref.gs1.org/cbv/BizStep-receiving``); the reference
      finds them by JSON-LD expansion of the whole document and then replaces *any* string value
      that is the last segment of exactly one of them, which is reproduced here. The older
      ``urn:epcglobal:cbv:…`` URNs become the same web URIs.
    * Field names with a prefix declared in the event's ``@context`` are expanded to
      ``{namespace}local`` (``gxp:lot`` → ``{urn:gxpgate:epcis:}lot``), and so are values.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from gxpgate.drivers.gs1 import gs1_check_digit

__all__ = ["event_hash", "pre_hash_string"]

# A node of the event tree: (name, text, children), compared and sorted as tuples.
Node = tuple[Any, str, list[Any]]
Order = list[tuple[Any, Any]]

_QUANTITY: Final[Order] = [("epcClass", None), ("quantity", None), ("uom", None)]
_SENSOR_METADATA: Final = [
    "time", "startTime", "endTime", "deviceID", "deviceMetadata", "rawData",
    "dataProcessingMethod", "bizRules",
]  # fmt: skip
_SENSOR_REPORT: Final = [
    "type", "exception", "deviceID", "deviceMetadata", "rawData", "dataProcessingMethod",
    "time", "microorganism", "chemicalSubstance", "value", "component", "stringValue",
    "booleanValue", "hexBinaryValue", "uriValue", "minValue", "maxValue", "meanValue", "sDev",
    "percRank", "percValue", "uom", "coordinateReferenceSystem",
]  # fmt: skip
# The canonical field order. The three typed lists carry a (type, item) pair where a name
# belongs: that entry matches no field, so their items end up among the other fields, sorted
# there — which is what the reference computes, and so what equality needs.
_ORDER: Final[Order] = [
    ("eventTime", None),
    ("eventTimeZoneOffset", None),
    ("certificationInfo", None),
    ("parentID", None),
    ("epcList", [("epc", None)]),
    ("inputEPCList", [("epc", None)]),
    ("childEPCs", [("epc", None)]),
    ("quantityList", [("quantityElement", _QUANTITY)]),
    ("childQuantityList", [("quantityElement", _QUANTITY)]),
    ("inputQuantityList", [("quantityElement", _QUANTITY)]),
    ("outputEPCList", [("epc", None)]),
    ("outputQuantityList", [("quantityElement", _QUANTITY)]),
    ("action", None),
    ("transformationID", None),
    ("bizStep", None),
    ("disposition", None),
    ("persistentDisposition", [("set", None), ("unset", None)]),
    ("readPoint", [("id", None)]),
    ("bizLocation", [("id", None)]),
    ("bizTransactionList", [(("type", None), ("bizTransaction", None))]),
    ("sourceList", [(("type", None), ("source", None))]),
    ("destinationList", [(("type", None), ("destination", None))]),
    (
        "sensorElementList",
        [
            (
                "sensorElement",
                [
                    ("sensorMetadata", [(name, None) for name in _SENSOR_METADATA]),
                    ("sensorReport", [(name, None) for name in _SENSOR_REPORT]),
                ],
            )
        ],
    ),
]
_NOT_HASHED: Final = frozenset({"recordTime", "eventID", "type", "errorDeclaration"})
_UNSORTED: Final = ("bizTransaction", "source", "destination")
_TYPED_LISTS: Final = ("bizTransactionList", "sourceList", "destinationList")

_CBV: Final = "https://ref.gs1.org/cbv/"
_CBV_URNS: Final = {
    "urn:epcglobal:cbv:bizstep:": _CBV + "BizStep-",
    "urn:epcglobal:cbv:disp:": _CBV + "Disp-",
    "urn:epcglobal:cbv:btt:": _CBV + "BTT-",
    "urn:epcglobal:cbv:sdt:": _CBV + "SDT-",
    "urn:epcglobal:cbv:er:": _CBV + "ER-",
}

# EPC URI component characters (TDS Table A-1, with the escapes the reference accepts).
_EPC_CHAR: Final = (
    r"(?:%2[125-9A-Fa-f]|%3[0-9A-Fa-f]|%4[1-9A-Fa-f]|%5[0-9AaFf]|%6[1-9A-Fa-f]|%7[0-9Aa]"
    r"|[!\\')(*+,.0-9:;=A-Za-z_-])"
)
_SGTIN: Final = re.compile(rf"urn:epc:id:sgtin:(\d{{6,12}})\.(\d{{1,7}})\.({_EPC_CHAR}{{1,20}})")
_SSCC: Final = re.compile(r"urn:epc:id:sscc:(\d{6,12})\.(\d{5,11})")
_SGLN: Final = re.compile(rf"urn:epc:id:sgln:(\d{{6,12}})\.(\d{{0,6}})\.({_EPC_CHAR}{{1,20}})")
_LGTIN: Final = re.compile(rf"urn:epc:class:lgtin:(\d{{6,12}})\.(\d{{1,7}})\.({_EPC_CHAR}{{1,20}})")
_GTIN_CLASS: Final = re.compile(r"urn:epc:idpat:sgtin:(\d{6,12})\.(\d{1,7})\.\*")
_DL_ESCAPES: Final = str.maketrans(
    {"!": "%21", "(": "%28", ")": "%29", "*": "%2A", "+": "%2B", ",": "%2C", ":": "%3A"}
)


def event_hash(event: dict[str, Any]) -> str:
    """The CBV 2.0 event hash (``ni:///sha-256;…?ver=CBV2.0``) of one EPCIS 2.0 JSON event.

    ``event["@context"]`` (when present) declares the prefixes of extension fields; it is not
    hashed, nor are ``eventID`` and ``recordTime``.
    """
    digest = hashlib.sha256(pre_hash_string(event).encode("utf-8")).hexdigest()
    return f"ni:///sha-256;{digest}?ver=CBV2.0"


def pre_hash_string(event: dict[str, Any]) -> str:
    """The canonical text the event hash is computed from (module docstring)."""
    context = event.get("@context")
    namespaces = _namespaces(context)
    body = {key: value for key, value in event.items() if key != "@context"}
    body = _replace_bare_vocabulary(body, _vocabulary_uris(body))
    name, _, children = _restructure(_tree(body, namespaces))
    ordered = _in_order(children, _ORDER)
    rest = _rest([c for c in children if c[0] not in _NOT_HASHED])
    return f"eventType={name}{ordered}{rest}"


# -- the event as a tree --------------------------------------------------------------------------


def _namespaces(context: Any) -> dict[str, str]:
    found: dict[str, str] = {}
    for entry in context if isinstance(context, list) else []:
        if isinstance(entry, str):
            found[entry] = "{" + entry + "}"
        elif isinstance(entry, dict):
            found.update({key: "{" + str(value) + "}" for key, value in entry.items()})
    return found


def _expand(text: str, namespaces: dict[str, str], *, value: bool = False) -> str:
    prefix, colon, local = text.partition(":")
    if not colon or prefix not in namespaces:
        return text
    namespace = namespaces[prefix]
    return (namespace[1:-1] if value else namespace) + local


def _tree(obj: Any, namespaces: dict[str, str]) -> Node:
    """JSON → (name, text, children): a list's items become children; a dict is named by its
    ``type``; a scalar is text (``str()`` of numbers)."""
    if isinstance(obj, list):
        return ("", "", [_tree(item, namespaces) for item in obj])
    if not isinstance(obj, dict):
        return ("", _expand(str(obj), namespaces, value=True), [])
    children: list[Node] = []
    for key, value in obj.items():
        if key in ("#text", "rdfs:comment", "comment"):
            continue
        child = _tree(value, namespaces)
        name = _expand(key, namespaces)
        if isinstance(value, list):
            children.extend((name, item[1], item[2]) for item in child[2])
        else:
            children.append((name, child[1], child[2]))
    if not any(key in obj for key in _UNSORTED):
        children.sort()
    return (obj.get("type", ""), str(obj.get("#text", "")), children)


def _restructure(node: Node) -> Node:
    """The JSON binding's shapes → the XML binding's (which the field order is written for)."""
    children = list(node[2])
    lists: dict[str, list[Node]] = {}
    for child in [c for c in children if isinstance(c[0], str) and c[0].endswith("List")]:
        lists.setdefault(child[0], []).append((child[0][:-4], child[1], child[2]))
        children.remove(child)
    for name, items in lists.items():
        if name in _TYPED_LISTS:
            # each item as its first two fields (type and id), as the reference pairs them
            children.append((name, "", [(item[2][0], item[2][1]) for item in items]))
        else:
            children.append((name, "", items))
    child_epcs: list[Node] = [("epc", c[1], []) for c in children if c[0] == "childEPCs"]
    if child_epcs:
        children = [c for c in children if c[0] != "childEPCs"]
        children.append(("childEPCs", "", child_epcs))
    fixed = [c if c[0] in _TYPED_LISTS else _restructure(c) for c in children]
    name, text = node[0], node[1]
    if name in ("inputEPC", "outputEPC"):
        return ("epc", text, fixed)
    if name in ("inputQuantity", "outputQuantity", "childQuantity") or (
        name == "quantity" and fixed
    ):
        return ("quantityElement", text, fixed)
    return (name, text, fixed)


def _vocabulary_uris(event: dict[str, Any]) -> set[str]:
    """The CBV web URIs that JSON-LD expansion gives the vocabulary-typed fields."""
    typed: list[tuple[str, Any]] = [
        ("BizStep-", event.get("bizStep")),
        ("Disp-", event.get("disposition")),
    ]
    persistent = event.get("persistentDisposition")
    if isinstance(persistent, dict):
        for key in ("set", "unset"):
            typed += [("Disp-", item) for item in persistent.get(key) or []]
    for field, term in (
        ("bizTransactionList", "BTT-"),
        ("sourceList", "SDT-"),
        ("destinationList", "SDT-"),
    ):
        typed += [(term, item.get("type")) for item in event.get(field) or []]
    uris: set[str] = set()
    for term, value in typed:
        if not isinstance(value, str):
            continue
        uri = value if ":" in value else _CBV + term + value
        if uri.startswith((_CBV, "https://gs1.org/voc")):
            uris.add(uri)
    return uris


def _replace_bare_vocabulary(obj: Any, uris: set[str]) -> Any:
    if isinstance(obj, str):
        matches = [uri for uri in uris if uri.endswith(("-" + obj, "/" + obj))]
        return matches[0] if len(matches) == 1 else obj
    if isinstance(obj, list):
        return [_replace_bare_vocabulary(item, uris) for item in obj]
    if isinstance(obj, dict):
        return {key: _replace_bare_vocabulary(value, uris) for key, value in obj.items()}
    return obj


# -- the pre-hash string --------------------------------------------------------------------------


def _in_order(children: list[Node], order: Order) -> str:
    """The fields of ``order`` found in ``children``, consuming those fully written."""
    text = ""
    nested_extensions = _nested_extensions(children)
    for name, sub_order in order:
        values: list[str] = []
        for child in [c for c in children if c[0] == name]:
            written = _written(child, sub_order)
            if written:
                values.append(written)
            if not child[2]:
                children.remove(child)
        values.sort()
        if "".join(values):
            text = "".join([text, *values])
    if nested_extensions:
        text += _rest(nested_extensions)
    return text


def _nested_extensions(children: list[Node]) -> list[Node]:
    """Extension fields inside a standard field (``{https://…/}name``), written after it."""
    if len(children) <= 1:
        return []
    if any("eventTime" in c[0] or "action" in c[0] for c in children):
        return []  # the event's own level: its extensions come after everything
    found = [c for c in children if "{" in c[0] and "/}" in c[0]]
    for child in found:
        children.remove(child)
    return found


def _written(child: Node, sub_order: Order | None) -> str:
    name, text, grandchildren = child
    nested = _in_order(grandchildren, sub_order) if sub_order else ""
    if text:
        text = text.strip()
        lowered = name.lower()
        text = _utc_ms(text) if "time" in lowered and "offset" not in lowered else _canonical(text)
        if text:
            text = "=" + text
    return name + text + nested if text or nested else ""


def _rest(children: list[Node]) -> str:
    """Fields outside the order, and everything below them: ``name=value``, sorted."""
    values: list[str] = []
    for child in children:
        if len(child) == 2:  # a (type, id) pair of a typed list
            values.append(_rest(list(child)))
            continue
        name, text, grandchildren = child
        value = text.strip()
        if value:
            value = "=" + _canonical(value)
        values.append(name + value + _rest(grandchildren))
    if len(children) > 1 and not any(c[0] in _UNSORTED for c in children):
        values.sort()
    return "".join(values)


# -- values ---------------------------------------------------------------------------------------


def _utc_ms(text: str) -> str:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return text
    moment = moment.astimezone(UTC)
    milliseconds = round(moment.microsecond, -3)  # half to even, like the reference
    moment = moment.replace(microsecond=0) + timedelta(microseconds=milliseconds)
    return moment.isoformat(timespec="milliseconds").removesuffix("+00:00") + "Z"


def _canonical(text: str) -> str:
    for urn, uri in _CBV_URNS.items():
        text = text.replace(urn, uri)
    text = _number(text)
    return _digital_link(text) or text


def _number(text: str) -> str:
    try:
        number = float(text)
        return str(int(number)) if int(number) == number else str(number)
    except (ValueError, OverflowError):
        return text


def _gtin(company: str, reference: str) -> str:
    body = reference[:1] + company + reference[1:]
    return body + str(gs1_check_digit(body))


def _digital_link(uri: str) -> str | None:
    """The canonical GS1 Digital Link URI of an EPC URI gxpgate writes; None for other text."""
    if match := _SGTIN.fullmatch(uri):
        company, reference, serial = match.groups()
        if len(company) + len(reference) == 13:
            gtin = _gtin(company, reference)
            return f"https://id.gs1.org/01/{gtin}/21/{serial.translate(_DL_ESCAPES)}"
    elif match := _SSCC.fullmatch(uri):
        company, reference = match.groups()
        if len(company) + len(reference) == 17:
            body = reference[:1] + company + reference[1:]
            return f"https://id.gs1.org/00/{body}{gs1_check_digit(body)}"
    elif match := _SGLN.fullmatch(uri):
        company, reference, extension = match.groups()
        if len(company) + len(reference) == 12:
            gln = company + reference
            gln += str(gs1_check_digit(gln))
            if extension == "0":
                return f"https://id.gs1.org/414/{gln}"
            return f"https://id.gs1.org/414/{gln}/254/{extension.translate(_DL_ESCAPES)}"
    elif match := _LGTIN.fullmatch(uri):
        company, reference, lot = match.groups()
        if len(company) + len(reference) == 13:
            gtin = _gtin(company, reference)
            return f"https://id.gs1.org/01/{gtin}/10/{lot.translate(_DL_ESCAPES)}"
    elif match := _GTIN_CLASS.fullmatch(uri):
        company, reference = match.groups()
        if len(company) + len(reference) == 13:
            return f"https://id.gs1.org/01/{_gtin(company, reference)}"
    return None

"""Filters and outputs -> the `Filter`, `Settings` and `Output` blocks of detect.dat.

An output writes `<name>.bdo` (the simulator adds the task number), so its name is made safe
and unique: the estimators that come back are named after the outputs, in their order. Each
quantity is a `Quantity <keyword> [<filter>] [<settings>]` line, followed by a `DiffN` and
`DiffNType` pair for each of its (at most two) differential modifiers.
"""

import re
from dataclasses import dataclass

from server.editor.detectors import zone_output_key
from server.editor.formatting import UniqueNames, count, free
from server.editor.project import (
    ConversionError,
    Json,
    by_uuid,
    entries,
    flag,
    integer,
    label,
    number,
    section,
    text,
)

OPERATORS = ("==", "!=", "<", "<=", ">", ">=")
# the editor's own names, which a rule keeps until the user picks an operator (RULE_DEFAULTS)
OPERATOR_NAMES = {
    "equal": "==",
    "not_equal": "!=",
    "less_than": "<",
    "less_than_or_equal": "<=",
    "greater_than": ">",
    "greater_than_or_equal": ">=",
}
TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")  # one word: "1MeVNEq" is a quantity
SETTINGS = {"rescale": "Rescale", "offset": "Offset", "primaries": "Primaries", "medium": "Medium"}
# the editor's media of neutron KERMA quantities (NKERMA, NEqvDose): `medium` is always sent
NK_MEDIA = ("A150", "AIR", "BONE", "Muscule", "TE_Methane", "TE_Propane", "WATER")
PROTON = 2
HEAVY_ION = 25
MAX_MODIFIERS = 2


@dataclass
class Scoring:
    """Blocks of detect.dat being built; filter and settings names share one namespace."""

    detectors: dict[str, str]  # detect.dat name by detector uuid
    icru: dict[str, int]  # by material uuid, for a settings' Medium
    names: UniqueNames
    filters: dict[str, str]  # name by filter uuid
    filter_blocks: list[str]
    settings_blocks: list[str]


def scoring_blocks(project: Json, detectors: dict[str, str], icru: dict[str, int]) -> list[str]:
    """Every Filter, every Settings, every Output block, in that order."""
    manager = section(project, "scoringManager", "project")
    scoring = Scoring(detectors, icru, UniqueNames(), {}, [], [])
    for index, value in enumerate(entries(manager, "filters", "scoringManager", required=False)):
        _filter(scoring, value, index)
    values = entries(manager, "outputs", "scoringManager")
    if not values:
        raise ConversionError(
            "scoringManager", "the project has no outputs: nothing would be scored"
        )
    names = file_names(values)
    output_blocks = [
        _output(scoring, name, value, index)
        for index, (name, value) in enumerate(zip(names, values, strict=True))
    ]
    return scoring.filter_blocks + scoring.settings_blocks + output_blocks


def file_names(outputs: list[Json]) -> list[str]:
    """The name each output's file (and so its estimator) gets: made safe and unique."""
    names = UniqueNames()
    return [
        names.take(str(value.get("name") or ""), f"output_{index + 1}")
        for index, value in enumerate(outputs)
    ]


def _token(value: str, item: str, what: str) -> str:
    if not TOKEN.fullmatch(value):
        raise ConversionError(item, f"{what} {value!r} is not a SHIELD-HIT12A keyword")
    return value


def _filter(scoring: Scoring, value: Json, index: int) -> None:
    item = label("filter", value, index)
    rules = _particle_rules(value, item) if value.get("particle") else _rules(value, item)
    name = scoring.names.take(str(value.get("name") or ""), f"filter_{index + 1}")
    by_uuid(scoring.filters, value, item, name)
    lines = ["Filter", f"    Name {name}", *(f"    {rule}" for rule in rules)]
    scoring.filter_blocks.append("\n".join(lines))


def _rules(value: Json, item: str) -> list[str]:
    rules = []
    for rule in entries(value, "rules", item):
        keyword = _token(text(rule, "keyword", item), item, "the rule keyword")
        operator = text(rule, "operator", item)
        operator = OPERATOR_NAMES.get(operator, operator)
        if operator not in OPERATORS:
            raise ConversionError(
                item, f"unknown operator {operator!r} (expected {' '.join(OPERATORS)})"
            )
        rules.append(f"{keyword} {operator} {count(number(rule, 'value', item))}")
    if not rules:
        raise ConversionError(item, "a filter needs at least one rule")
    return rules


def _particle_rules(value: Json, item: str) -> list[str]:
    particle = section(value, "particle", item)
    code = integer(particle, "id", item, minimum=1)
    if code == PROTON:
        return ["Z == 1", "A == 1"]
    if code == HEAVY_ION:
        raise ConversionError(item, "filter heavy ions by rules on Z and A, not as a particle")
    return [f"ID == {code}"]


def _output(scoring: Scoring, name: str, value: Json, index: int) -> str:
    item = label("output", value, index)
    if value.get("trace"):
        raise ConversionError(item, "trace outputs cannot be converted")
    in_zone = value.get("scoringType") == "ZONE"  # the editor's "Zone" scoring type
    if not in_zone and not value.get("detectorUuid"):  # an output the editor has just added
        raise ConversionError(item, "no detector is chosen for it")
    key = zone_output_key(index) if in_zone else str(value.get("detectorUuid"))
    detector = scoring.detectors.get(key)
    if detector is None:
        raise ConversionError(item, "its detector is not one of the project's detectors")
    quantities = entries(value, "quantities", item)
    if not quantities:
        raise ConversionError(item, "an output needs at least one quantity")
    lines = ["Output", f"    Filename {name}.bdo", f"    Geo {detector}"]
    for number_, quantity in enumerate(quantities):
        lines += _quantity(
            scoring, quantity, f"{item} {label('quantity', quantity, number_)}", name
        )
    return "\n".join(lines)


def _quantity(scoring: Scoring, quantity: Json, item: str, output: str) -> list[str]:
    words = ["Quantity", _token(text(quantity, "keyword", item), item, "the quantity")]
    if quantity.get("materialUuid"):  # the editor's "Override material" of the quantity
        raise ConversionError(
            item, "scoring in another material ('Override material') cannot be converted yet"
        )
    if quantity.get("filter"):
        words.append(_filter_name(scoring, quantity, item))
    settings = _settings(scoring, quantity, item, f"{output}_{quantity.get('name') or 'settings'}")
    if settings:
        words.append(settings)
    modifiers = entries(quantity, "modifiers", item, required=False)
    if len(modifiers) > MAX_MODIFIERS:
        raise ConversionError(
            item, f"at most {MAX_MODIFIERS} differential modifiers can be converted"
        )
    lines = [" ".join(words)]
    for axis, modifier in enumerate(modifiers, start=1):
        lines += _modifier(axis, modifier, item)
    return [f"    {line}" for line in lines]


def _filter_name(scoring: Scoring, quantity: Json, item: str) -> str:
    name = scoring.filters.get(str(quantity["filter"]))
    if name is None:
        raise ConversionError(item, "its filter is not one of the project's filters")
    return name


def _settings(scoring: Scoring, quantity: Json, item: str, wanted: str) -> str | None:
    present = [key for key in SETTINGS if quantity.get(key) is not None]
    if not present:
        return None
    name = scoring.names.take(wanted, "settings")
    lines = ["Settings", f"    Name {name}"]
    lines += [f"    {SETTINGS[key]} {_setting(scoring, quantity, key, item)}" for key in present]
    scoring.settings_blocks.append("\n".join(lines))
    return name


def _setting(scoring: Scoring, quantity: Json, key: str, item: str) -> str:
    if key == "primaries":
        return str(integer(quantity, key, item, minimum=1))
    if key != "medium":
        return free(number(quantity, key, item))
    medium = quantity[key]
    if isinstance(medium, str) and medium in scoring.icru:
        return str(scoring.icru[medium])
    if isinstance(medium, str) and medium in NK_MEDIA:
        return medium
    if isinstance(medium, str):
        raise ConversionError(
            item, f"unknown 'medium' {medium!r} (expected one of: {', '.join(NK_MEDIA)})"
        )
    return str(integer(quantity, key, item, minimum=1))


def _modifier(axis: int, modifier: Json, item: str) -> list[str]:
    kind = _token(text(modifier, "diffType", item), item, "the modifier type")
    low = number(modifier, "lowerLimit", item)
    high = number(modifier, "upperLimit", item)
    bins = integer(modifier, "binsNumber", item, minimum=1)
    log = modifier.get("isLog") is not None and flag(modifier, "isLog", item)
    start, end = free(low), free(high)
    if float(end) <= float(start) or (log and low <= 0):  # as written: 12 digits
        raise ConversionError(
            item, "a modifier needs lower < upper limit (and lower > 0 when logarithmic)"
        )
    return [
        f"Diff{axis} {start} {end} {bins}{' log' if log else ''}",
        f"Diff{axis}Type {kind}",
    ]

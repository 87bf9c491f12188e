"""The beam and the physics settings -> beam.dat (and the beam's source file, if any).

Keyword cards, free format, `!` comments. The direction vector becomes BEAMDIR's polar angle
theta = acos(z / |d|) and azimuth phi = atan2(y, x) in [0, 360), in degrees. Tasks share one
RNDSEED: the worker runs each task with `shieldhit -N <task>`, which offsets it.
"""

import math
import re

from server.editor.formatting import free
from server.editor.project import (
    ConversionError,
    Json,
    choice,
    flag,
    integer,
    number,
    positive,
    section,
    text,
    vector,
)

SEED = 89736501
PARTICLES = {
    1: "neutron",
    2: "proton",
    3: "pi-",
    4: "pi+",
    5: "pi0",
    7: "anti-proton",
    15: "mu-",
    16: "mu+",
    21: "deuteron",
    22: "triton",
    23: "He-3",
    24: "He-4",
    25: "heavy ion",
}
HEAVY_ION = 25
NUCLEONS = {21: 2, 22: 3, 23: 3, 24: 4}  # A of the light ions; a heavy ion's is its 'a'
ENERGY_UNITS = {"mev/nucl": 0, "mev": 1}  # the editor's `energyUnit`: per nucleon or whole ion
# "no straggling" and "no scattering" are how the editor spells "none"
STRAGGLING = {"none": 0, "no straggling": 0, "gaussian": 1, "vavilov": 2}
SCATTERING = {"none": 0, "no scattering": 0, "gaussian": 1, "moliere": 2}
SIGMA_TYPES = {"gaussian": 0, "flat square": 1, "flat circular": 2}
SAD_TYPES = {"none": 0, "single": 1, "double": 2}
SOURCE_FILE = "sobp.dat"
SAFE_FILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
RESERVED = {"beam.dat", "mat.dat", "geo.dat", "detect.dat"}
ITEM = "beam"


def _card(keyword: str, *values: float | str, comment: str = "") -> str:
    words = (v if isinstance(v, str) else str(v) if isinstance(v, int) else free(v) for v in values)
    line = f"{keyword:<12}" + " ".join(words)
    return f"{line:<35} ! {comment}" if comment else line  # a blank before "!" however long


def beam_files(project: Json, primaries: int) -> dict[str, str]:
    """beam.dat, plus the source file the beam reads when its source is a file."""
    beam = section(project, "beam", "project")
    physics = section(project, "physic", "project")
    source = _source_file(beam)
    cards = [
        _card("RNDSEED", SEED, comment="random seed (each task offsets it)"),
        *_particle(beam),
        *_energy(beam, _nucleons(beam)),
        _card("NSTAT", primaries, 0, comment="primaries of one task, no intermediate saves"),
        *_physics(physics),
        *_geometry(beam),
        _card("DELTAE", positive(physics, "energyLoss", "physics"), comment="step energy loss"),
    ]
    if source:
        cards.append(_card("USECBEAM", source[0], comment="beam source file"))
    files = {"beam.dat": "\n".join(cards) + "\n"}
    return files | dict([source]) if source else files


def _particle(beam: Json) -> list[str]:
    particle = section(beam, "particle", ITEM)
    code = integer(particle, "id", "beam particle")
    if code not in PARTICLES:
        known = ", ".join(f"{code} ({name})" for code, name in PARTICLES.items())
        raise ConversionError("beam particle", f"id {code} is not one of {known}")
    cards = [_card("JPART0", code, comment=PARTICLES[code])]
    if code == HEAVY_ION:
        mass = integer(particle, "a", "beam particle", minimum=1)
        charge = integer(particle, "z", "beam particle", minimum=1)
        if charge > mass:
            raise ConversionError("beam particle", f"Z ({charge}) must not exceed A ({mass})")
        cards.append(_card("HIPROJ", mass, charge, comment="heavy ion A Z"))
    return cards


def _nucleons(beam: Json) -> int:
    """What TMAX0 divides the editor's energies by: A for an ion (ids 21-25) whose energy is
    given in MeV for the whole ion (`energyUnit` "MeV"), as TMAX0 is per nucleon; else 1."""
    if beam.get("energyUnit") is None or not choice(beam, "energyUnit", ITEM, ENERGY_UNITS):
        return 1
    particle = section(beam, "particle", ITEM)
    code = integer(particle, "id", "beam particle")
    if code == HEAVY_ION:
        return integer(particle, "a", "beam particle", minimum=1)
    return NUCLEONS.get(code, 1)


def _energy(beam: Json, nucleons: int) -> list[str]:
    energy = positive(beam, "energy", ITEM) / nucleons
    spread = number(beam, "energySpread", ITEM, minimum=0) / nucleons
    cards = [_card("TMAX0", energy, spread, comment="energy and spread (MeV or MeV/nucleon)")]
    if beam.get("energyLowCutoff") is not None and beam.get("energyHighCutoff") is not None:
        low = number(beam, "energyLowCutoff", ITEM, minimum=0)
        high = number(beam, "energyHighCutoff", ITEM)
        if high <= low:
            raise ConversionError(ITEM, "'energyHighCutoff' must be above 'energyLowCutoff'")
        cards.append(_card("TCUT0", low, high, comment="energy cutoffs (MeV)"))
    return cards


def _physics(physics: Json) -> list[str]:
    return [
        _card("STRAGG", choice(physics, "energyModelStraggling", "physics", STRAGGLING)),
        _card("MSCAT", choice(physics, "multipleScattering", "physics", SCATTERING)),
        _card("NUCRE", int(flag(physics, "enableNuclearReactions", "physics"))),
    ]


def _geometry(beam: Json) -> list[str]:
    _no_divergence(beam)
    return [
        _card("BEAMPOS", *vector(beam, "position", ITEM), comment="start position (cm)"),
        _card("BEAMDIR", *direction(vector(beam, "direction", ITEM)), comment="theta phi (deg)"),
        _sigma(section(beam, "sigma", "beam sigma")),
        *_sad(beam),
    ]


def direction(vector: tuple[float, float, float]) -> tuple[float, float]:
    x, y, z = vector
    length = math.hypot(x, y, z)  # neither x * x nor its sum overflows or underflows
    if length == 0:
        raise ConversionError(ITEM, "'direction' must not be the zero vector")
    theta = math.degrees(math.acos(max(-1.0, min(1.0, z / length))))
    phi = round(math.degrees(math.atan2(y, x)), 9) % 360.0
    return round(theta, 9), phi


def _sigma(sigma: Json) -> str:
    item = "beam sigma"
    kind = choice(sigma, "type", item, SIGMA_TYPES)
    x, y = number(sigma, "x", item, minimum=0), number(sigma, "y", item, minimum=0)
    if kind == SIGMA_TYPES["gaussian"]:
        return _card("BEAMSIGMA", x, y, comment="Gaussian sigma x y (cm)")
    if kind == SIGMA_TYPES["flat square"]:
        if x <= 0 or y <= 0:
            raise ConversionError(item, "a flat square beam needs 'x' and 'y' greater than 0")
        return _card("BEAMSIGMA", -x, -y, comment="flat rectangle, half sides x y (cm)")
    # the editor shows one field, 'radius', which is y; x keeps what the previous type held
    if y <= 0:
        raise ConversionError(item, "a flat circular beam needs a radius 'y' greater than 0")
    return _card("BEAMSIGMA", 1.0, -y, comment="flat circle, radius (cm)")


def _sad(beam: Json) -> list[str]:
    sad = section(beam, "sad", "beam SAD")
    kind = choice(sad, "type", "beam SAD", SAD_TYPES)
    values = [positive(sad, axis, "beam SAD") for axis in ("x", "y")[:kind]]
    return [_card("BEAMSAD", *values, comment="source to axis distance (cm)")] if values else []


def _no_divergence(beam: Json) -> None:
    divergence = beam.get("divergence")
    if divergence is None:
        return
    if not isinstance(divergence, dict):
        raise ConversionError(ITEM, "'divergence' must be an object")
    if any(number(divergence, axis, "beam divergence") != 0 for axis in ("x", "y")):
        raise ConversionError("beam divergence", "cannot be converted yet: set x and y to 0")


def _source_file(beam: Json) -> tuple[str, str] | None:
    """(file name, text) of the beam's source file when its source type is "file"."""
    kind = beam.get("sourceType", "simple")
    if kind not in ("simple", "file"):
        raise ConversionError(ITEM, f"unknown 'sourceType' {kind!r} (expected simple or file)")
    if kind == "simple":
        return None
    source = section(beam, "sourceFile", "beam source file")
    content = text(source, "value", "beam source file")
    if not content.strip():
        raise ConversionError("beam source file", "is empty")
    name = str(source.get("name") or "")
    # Any safe name works (USECBEAM names it); an unsafe one is replaced, not refused.
    if not SAFE_FILE.fullmatch(name) or name.lower() in RESERVED or ".." in name:
        name = SOURCE_FILE
    return name, content

"""The converter's beam.dat and detect.dat, mapping by mapping, with hand-computed expectations."""

from typing import Any

import pytest

from server.editor import ConversionError, convert
from tests.editor_projects import (
    box,
    detector,
    example,
    modifier,
    output,
    project,
    quantity,
    world,
    zone,
)


def beam_cards(
    beam: dict[str, Any] | None = None, physics: dict[str, Any] | None = None
) -> dict[str, str]:
    """beam.dat of the example project with `beam` and `physics` fields changed, by keyword."""
    value = example()
    value["beam"].update(beam or {})
    value["physic"].update(physics or {})
    lines = convert(value, 2500)["beam.dat"].splitlines()
    return {line.split()[0]: " ".join(line.split("!")[0].split()[1:]) for line in lines}


def test_the_example_beam() -> None:
    assert beam_cards() == {
        "RNDSEED": "89736501",
        "JPART0": "2",
        "TMAX0": "150.0 1.5",
        "TCUT0": "0.0 1000.0",
        "NSTAT": "2500 0",
        "STRAGG": "2",
        "MSCAT": "2",
        "NUCRE": "1",
        "BEAMPOS": "0.0 0.0 0.0",
        "BEAMDIR": "0.0 0.0",
        "BEAMSIGMA": "0.0 0.0",
        "DELTAE": "0.03",
    }


def test_a_comment_stays_apart_from_long_values() -> None:
    """A card past 36 characters had its comment joined to its last value (`53.130102354!`):
    every `!` now follows a blank."""
    value = example()
    value["beam"].update(energy=150.123456789, energySpread=1.50123456789)
    value["beam"].update(position=[1.23456789, -2.3456789, -50.123456], direction=[0.3, 0.4, 1])
    lines = convert(value, 2500)["beam.dat"].splitlines()
    assert [line for line in lines if "!" in line and " !" not in line] == []
    assert [line.split(" !")[0].split() for line in lines if line.startswith("BEAM")][:2] == [
        ["BEAMPOS", "1.23456789", "-2.3456789", "-50.123456"],
        ["BEAMDIR", "26.565051177", "53.130102354"],
    ]


@pytest.mark.parametrize(
    ("sigma", "written"),
    [
        ({"type": "Gaussian", "x": 0.3, "y": 0.4}, "0.3 0.4"),
        ({"type": "Flat square", "x": 0.2, "y": 0.5}, "-0.2 -0.5"),
        ({"type": "Flat circular", "x": 0, "y": 0.7}, "1.0 -0.7"),
        # the editor's one field, 'radius', is y; x keeps a previous type's value, unseen
        ({"type": "Flat circular", "x": 0.3, "y": 0.7}, "1.0 -0.7"),
    ],
)
def test_every_beam_sigma_type(sigma: dict[str, Any], written: str) -> None:
    assert beam_cards({"sigma": sigma})["BEAMSIGMA"] == written


@pytest.mark.parametrize(
    ("sad", "written"),
    [
        ({"type": "none", "x": 0, "y": 0}, None),
        ({"type": "single", "x": 100, "y": 0}, "100.0"),
        ({"type": "double", "x": 100, "y": 250.5}, "100.0 250.5"),
    ],
)
def test_every_beam_sad_type(sad: dict[str, Any], written: str | None) -> None:
    assert beam_cards({"sad": sad}).get("BEAMSAD") == written


def test_a_heavy_ion_beam_names_its_ion_with_hiproj() -> None:
    cards = beam_cards({"particle": {"id": 25, "a": 12, "z": 6}, "energy": 290, "energySpread": 0})
    assert (cards["JPART0"], cards["HIPROJ"], cards["TMAX0"]) == ("25", "12 6", "290.0 0.0")


@pytest.mark.parametrize(
    ("particle", "code"),
    [
        (1, "1"),
        (3, "3"),
        (4, "4"),
        (5, "5"),
        (7, "7"),
        (15, "15"),
        (16, "16"),
        (21, "21"),
        (24, "24"),
    ],
)
def test_light_particles_need_no_hiproj(particle: int, code: str) -> None:
    cards = beam_cards({"particle": {"id": particle, "a": 1, "z": 1}})
    assert (cards["JPART0"], "HIPROJ" in cards) == (code, False)


@pytest.mark.parametrize(
    ("direction", "written"),
    [
        ((0, -1, 0), "90.0 270.0"),
        ((1, 0, 1), "45.0 0.0"),
        ((0, 0, -2), "180.0 0.0"),
        ((-1, -1, 0), "90.0 225.0"),
    ],
)
def test_the_beam_direction_becomes_polar_and_azimuthal_angles(
    direction: tuple, written: str
) -> None:
    assert beam_cards({"direction": list(direction)})["BEAMDIR"] == written


def test_physics_settings_and_missing_cutoffs() -> None:
    cards = beam_cards(
        {"energyLowCutoff": None, "energyHighCutoff": 1000, "position": [1, -2.5, -10]},
        {
            "energyModelStraggling": "Gaussian",
            "multipleScattering": "none",
            "enableNuclearReactions": False,
            "energyLoss": 0.01,
        },
    )
    assert "TCUT0" not in cards
    assert [cards[key] for key in ("STRAGG", "MSCAT", "NUCRE", "DELTAE", "BEAMPOS")] == [
        "1",
        "0",
        "0",
        "0.01",
        "1.0 -2.5 -10.0",
    ]


def test_a_file_source_writes_usecbeam_and_the_file() -> None:
    value = example()
    value["beam"] |= {
        "sourceType": "file",
        "sourceFile": {"name": "my beam.dat", "value": "0.1 0 0 0 1 1 1\n"},
    }
    files = convert(value, 100)
    assert files["sobp.dat"] == "0.1 0 0 0 1 1 1\n"  # an unsafe name is replaced
    assert "USECBEAM    sobp.dat" in files["beam.dat"]
    value["beam"]["sourceFile"]["name"] = "spots.txt"
    assert convert(value, 100)["spots.txt"] == "0.1 0 0 0 1 1 1\n"


def scoring_project(
    detectors: list[dict], outputs: list[dict], filters: list[dict] | None = None
) -> dict:
    value = project(
        [box("B", size=(10, 10, 10))],
        [zone("Z", [("union", "B")])],
        world(box("W", size=(20, 20, 20))),
    )
    value["detectorManager"]["detectors"] = detectors
    value["scoringManager"]["outputs"] = outputs
    value["scoringManager"]["filters"] = filters or []
    return value


def detect_dat(*args: Any) -> str:
    return convert(scoring_project(*args), 10)["detect.dat"]


def test_each_detector_type() -> None:
    detectors = [
        detector(
            "Ring",
            "Cyl",
            position=(0, 0, 5),
            radius=3,
            innerRadius=1,
            depth=10,
            radialSegments=2,
            zSegments=20,
        ),
        detector(
            "Grid",
            "Mesh",
            position=(1, 2, 3),
            width=2,
            height=4,
            depth=6,
            xSegments=1,
            ySegments=2,
            zSegments=3,
        ),
        detector("InZone", "Zone", zoneUuid="zone-Z"),
        detector("World", "All"),
    ]
    outputs = [
        output(name.lower(), name, quantity("Dose")) for name in ("Ring", "Grid", "InZone", "World")
    ]
    assert detect_dat(detectors, outputs) == (
        "Geometry Cyl\n    Name Ring\n    R 1.0 3.0 2\n    Z 0.0 10.0 20\n\n"
        "Geometry Mesh\n    Name Grid\n    X 0.0 2.0 1\n    Y 0.0 4.0 2\n    Z 0.0 6.0 3\n\n"
        "Geometry Zone\n    Name InZone\n    Zone 1\n\n"
        "Geometry All\n    Name World\n\n"
        "Output\n    Filename ring.bdo\n    Geo Ring\n    Quantity Dose\n\n"
        "Output\n    Filename grid.bdo\n    Geo Grid\n    Quantity Dose\n\n"
        "Output\n    Filename inzone.bdo\n    Geo InZone\n    Quantity Dose\n\n"
        "Output\n    Filename world.bdo\n    Geo World\n    Quantity Dose\n"
    )


def test_filters_by_particle_and_a_quantity_with_two_modifiers() -> None:
    filters = [
        {"uuid": "filter-p", "name": "p", "particle": {"id": 2, "name": "Proton"}},
        {"uuid": "filter-n", "name": "n", "particle": {"id": 1, "name": "Neutron"}},
    ]
    spectrum = quantity(
        "Fluence",
        "Spectrum",
        "p",
        [modifier("E", 0, 160, 640), modifier("A", 0.1, 3.14, 10, log=True)],
    )
    outputs = [output("spectra", "All", spectrum, quantity("Fluence", "Neutrons", "n"))]
    assert detect_dat([detector("All", "All")], outputs, filters) == (
        "Geometry All\n    Name All\n\n"
        "Filter\n    Name p\n    Z == 1\n    A == 1\n\n"
        "Filter\n    Name n\n    ID == 1\n\n"
        "Output\n    Filename spectra.bdo\n    Geo All\n"
        "    Quantity Fluence p\n    Diff1 0.0 160.0 640\n    Diff1Type E\n"
        "    Diff2 0.1 3.14 10 log\n    Diff2Type A\n"
        "    Quantity Fluence n\n"
    )


def test_a_whole_filter_value_past_32_bits_is_written_as_a_real() -> None:
    """1e308 is whole: it was written as a 309-digit integer."""
    rules = [{"keyword": "Z", "operator": "==", "value": 1e308}]
    filters = [{"uuid": "filter-pp", "name": "p", "rules": rules}]
    outputs = [output("o", "All", quantity("Dose", filter_name="pp"))]
    assert "    Z == 1e+308\n" in detect_dat([detector("All", "All")], outputs, filters)


def test_names_that_need_escaping_become_safe_and_unique() -> None:
    detectors = [detector("My mesh #1", "All"), detector("My mesh (1)", "All")]
    detectors[1]["uuid"] = "det-second"
    filters = [
        {
            "uuid": "filter-pp",
            "name": "primary protons!",
            "rules": [{"keyword": "GEN", "operator": "==", "value": 0}],
        }
    ]
    first = output("Dose map (Gy)", "My mesh #1", quantity("Dose", filter_name="pp"))
    second = output("Dose_map_Gy", "My mesh #1", quantity("Dose"))
    third = output("../../etc/passwd", "My mesh #1", quantity("Dose"))
    fourth = output("  ", "My mesh #1", quantity("Dose"))
    fourth["detectorUuid"] = "det-second"
    text = detect_dat(detectors, [first, second, third, fourth], filters)
    assert [
        line.split()[1]
        for line in text.splitlines()
        if line.split()[:1] in (["Name"], ["Filename"], ["Geo"])
    ] == [
        "My_mesh_1",
        "My_mesh_1_2",
        "primary_protons",
        "Dose_map_Gy.bdo",
        "My_mesh_1",
        "Dose_map_Gy_2.bdo",
        "My_mesh_1",
        "etc_passwd.bdo",
        "My_mesh_1",
        "output_4.bdo",
        "My_mesh_1_2",
    ]
    assert "    Quantity Dose primary_protons\n" in text


def test_quantity_settings_get_a_settings_block() -> None:
    dose = quantity("Dose", "Dose in water") | {
        "rescale": 2.5,
        "medium": "mat-water",
        "primaries": 1000,
    }
    text = detect_dat([detector("All", "All")], [output("out", "All", dose)])
    assert text.split("\n\n")[1:] == [
        "Settings\n    Name out_Dose_in_water\n    Rescale 2.5\n    Primaries 1000\n    Medium 276",
        "Output\n    Filename out.bdo\n    Geo All\n    Quantity Dose out_Dose_in_water\n",
    ]


def test_a_number_too_wide_for_its_field_is_refused() -> None:
    value = project(
        [box("B", position=(1e12, 0, 0))], [zone("Z", [("union", "B")])], world(box("W"))
    )
    with pytest.raises(
        ConversionError, match=r"^figure 'B': the number 1e\+12 does not fit a 10-character field$"
    ):
        convert(value, 10)


@pytest.mark.parametrize(
    ("particle", "energy", "unit", "written"),
    [
        ({"id": 24, "a": 4, "z": 2, "name": "Helium-4"}, 400, "MeV", "100.0 1.0"),
        ({"id": 21, "a": 2, "z": 1, "name": "Deuteron"}, 300, "MeV", "150.0 2.0"),
        ({"id": 25, "a": 12, "z": 6, "name": "Heavy ions"}, 4800, "MeV", "400.0 0.333333333333"),
        ({"id": 24, "a": 4, "z": 2, "name": "Helium-4"}, 100, "MeV/nucl", "100.0 4.0"),
        ({"id": 2, "a": 1, "z": 1, "name": "Proton"}, 150, "MeV", "150.0 4.0"),
    ],
)
def test_ion_energies_given_in_mev_are_written_per_nucleon(
    particle: dict[str, Any], energy: float, unit: str, written: str
) -> None:
    """The editor's `energyUnit`: an ion's energy in MeV (the whole ion) or MeV/nucl; TMAX0 of
    ions (ids 21-25) is per nucleon."""
    beam = {"particle": particle, "energy": energy, "energySpread": 4, "energyUnit": unit}
    assert beam_cards(beam)["TMAX0"] == written


def test_physics_switched_off_as_the_editor_spells_it() -> None:
    """The editor's options are "no straggling" and "no scattering" (beside Gaussian, Vavilov,
    Moliere); both mean 0."""
    physics = {"energyModelStraggling": "no straggling", "multipleScattering": "no scattering"}
    cards = beam_cards(physics=physics)
    assert (cards["STRAGG"], cards["MSCAT"]) == ("0", "0")


def test_neutron_kerma_quantities_keep_the_medium_the_editor_always_sends() -> None:
    """The editor sends `medium` (WATER unless changed) with every NKERMA and NEqvDose quantity,
    as one of its neutron KERMA media."""
    kerma = quantity("NKERMA") | {"medium": "WATER"}
    bone = quantity("NEqvDose") | {"medium": "BONE"}
    text = detect_dat([detector("All", "All")], [output("out", "All", kerma, bone)])
    assert text.split("\n\n")[1:3] == [
        "Settings\n    Name out_NKERMA\n    Medium WATER",
        "Settings\n    Name out_NEqvDose\n    Medium BONE",
    ]


def test_a_quantity_scored_in_another_material_is_refused_not_dropped() -> None:
    """The editor's "Override material" of a quantity (Dose, dLET, ...) sends the material as
    the quantity's `materialUuid`; no card expresses it, so it must not be silently dropped."""
    dose = quantity("Dose", "Dose in lead") | {"materialUuid": "mat-lead"}
    dose["materialPropertiesOverrides"] = {}
    with pytest.raises(
        ConversionError,
        match=r"^output 'out' quantity 'Dose in lead': scoring in another material "
        r"\('Override material'\) cannot be converted yet$",
    ):
        detect_dat([detector("All", "All")], [output("out", "All", dose)])


@pytest.mark.parametrize("scale", [1e-200, 1e200])
def test_the_beam_direction_of_very_small_or_large_vectors(scale: float) -> None:
    assert beam_cards({"direction": [scale, 0, scale]})["BEAMDIR"] == "45.0 0.0"


def test_filter_rules_keep_the_operator_names_the_editor_sends() -> None:
    """A rule added in the editor ("Add rule", or after choosing its keyword) gets its operator
    from the editor's RULE_DEFAULTS, by name: 'equal', 'less_than', 'less_than_or_equal'; it
    keeps that name until the user picks another operator."""
    filters = [
        {
            "uuid": "filter-f",
            "name": "f",
            "rules": [
                {"keyword": "Z", "operator": "equal", "value": 1},
                {"keyword": "E", "operator": "less_than", "value": 1.0},
                {"keyword": "EAMU", "operator": "less_than_or_equal", "value": 10.0},
            ],
        }
    ]
    outputs = [output("out", "All", quantity("Fluence", filter_name="f"))]
    text = detect_dat([detector("All", "All")], outputs, filters)
    assert text.split("\n\n")[1] == "Filter\n    Name f\n    Z == 1\n    E < 1\n    EAMU <= 10"


def test_a_quantity_keyword_may_start_with_a_digit() -> None:
    """'1MeVNEq' (1-MeV neutron equivalent fluence) is a SHIELD-HIT12A quantity the editor
    offers for detectors; it is one word."""
    text = detect_dat([detector("All", "All")], [output("out", "All", quantity("1MeVNEq"))])
    assert (
        text.split("\n\n")[1] == "Output\n    Filename out.bdo\n    Geo All\n    Quantity 1MeVNEq\n"
    )


def test_an_output_scored_in_a_zone_gets_a_zone_geometry_of_its_own() -> None:
    """The editor offers SHIELD-HIT12A outputs of scoring type 'Zone' (Energy in a zone), and
    no detector of type Zone: such an output has `scoringType` "ZONE", a `zoneUuid` and no
    detector; it is scored as a detector of type Zone on that zone would be."""
    energy = output("energy", "All", quantity("Energy"))
    del energy["detectorUuid"]
    energy |= {"scoringType": "ZONE", "zoneUuid": "zone-Z"}
    dose = output("dose", "All", quantity("Dose"))
    text = detect_dat([detector("All", "All"), detector("energy", "All")], [dose, energy])
    assert text.split("\n\n")[:5] == [
        "Geometry All\n    Name All",
        "Geometry All\n    Name energy",
        "Geometry Zone\n    Name energy_2\n    Zone 1",
        "Output\n    Filename dose.bdo\n    Geo All\n    Quantity Dose",
        "Output\n    Filename energy.bdo\n    Geo energy_2\n    Quantity Energy\n",
    ]
    energy["zoneUuid"] = "zone-gone"
    with pytest.raises(
        ConversionError, match=r"^output 'energy': its zone is not one of the project's zones$"
    ):
        detect_dat([detector("All", "All")], [energy])

"""Projects as the editor leaves them right after a click on "Boolean Zone" or "Output":
nothing chosen yet. The 400 the UI shows says what is missing, in the editor's terms (it showed
"its operations cancel out" for a zone without any operation, and "its detector is not one of
the project's detectors" for an output without one)."""

import pytest

from server.editor import ConversionError, convert
from tests.editor_projects import box, output, quantity, world, zone
from tests.editor_projects import project as build


def small():
    zones = [zone("Z", [("union", "B")])]
    return build([box("B", size=(10, 10, 10))], zones, world(box("W", size=(20, 20, 20))))


def test_a_zone_without_a_figure_says_so() -> None:
    """A new Boolean Zone is sent as `unionOperations: [[]]` until a figure is picked."""
    value = small()
    new = zone("New")
    new["unionOperations"] = [[]]
    value["zoneManager"]["zones"].append(new)
    with pytest.raises(ConversionError) as error:
        convert(value, 1000)
    assert str(error.value) == "zone 'New': no figure is chosen for it in its Zone Operations"


def test_an_output_without_a_detector_says_so() -> None:
    """A new Output has no `detectorUuid` until a detector is picked."""
    value = small()
    fresh = output("Output", "Everything", quantity("Dose"))
    del fresh["detectorUuid"]
    value["scoringManager"]["outputs"].append(fresh)
    with pytest.raises(ConversionError) as error:
        convert(value, 1000)
    assert str(error.value) == "output 'Output': no detector is chosen for it"


def test_a_zone_scoring_output_without_a_zone_says_so() -> None:
    """An Output switched to the "Zone" scoring type has no `zoneUuid` until a zone is picked
    (the UI sends `{"scoringType": "ZONE", "quantities": [], ...}` with no zone)."""
    value = small()
    fresh = output("Output", "Everything", quantity("Dose"))
    del fresh["detectorUuid"]
    fresh["scoringType"] = "ZONE"
    value["scoringManager"]["outputs"].append(fresh)
    with pytest.raises(ConversionError) as error:
        convert(value, 1000)
    assert str(error.value) == "output 'Output': no zone is chosen for it"

"""A FLUKA task's START and RANDOMIZ cards (server/worker/fluka_cards.py): its primaries and
seed written in the format each card is read in, every other field kept."""

from pathlib import Path

import pytest

from server.worker.fluka_cards import MissingStart, set_task_cards

FIXTURE = Path(__file__).parent / "fixtures" / "shieldhit" / "fluka_minimal" / "minimal.inp"


def cards(tmp_path: Path, text: str, primaries: int = 1234567, seed: int = 3) -> list[str]:
    path = tmp_path / "sim.inp"
    path.write_text(text)
    set_task_cards(path, primaries, seed)
    return path.read_text().splitlines()


def fixed(keyword: str, *whats: str) -> str:
    return f"{keyword:<10}" + "".join(f"{what:>10}" for what in whats)


def test_fixed_format_cards_keep_their_other_columns(tmp_path):
    start = fixed("START", "20", "", "30.") + "      SDUMNAME"
    lines = cards(tmp_path, f"TITLE\nx\n{fixed('RANDOMIZ', '1.0', '1.')}\n{start}\nSTOP\n")
    assert lines == [
        "TITLE",
        "x",
        fixed("RANDOMIZ", "1.0", "3"),
        fixed("START", "1234567", "", "30.") + "      SDUMNAME",
        "STOP",
    ]


def test_the_fixture_input_changes_in_its_two_cards_only(tmp_path):
    before = FIXTURE.read_text().splitlines()
    after = cards(tmp_path, FIXTURE.read_text(), 1000, 7)
    changed = [(old, new) for old, new in zip(before, after, strict=True) if old != new]
    assert changed == [
        ("RANDOMIZ         1.0        1.", fixed("RANDOMIZ", "1.0", "7")),
        ("START             20", fixed("START", "1000")),
    ]


def test_an_input_without_randomiz_gets_one_before_start(tmp_path):
    """Appended after STOP (as pymchelper's runner does), FLUKA never read it: every task ran
    the same histories."""
    lines = cards(tmp_path, f"TITLE\nx\n{fixed('START', '20')}\nSTOP\n", 1000, 2)
    assert lines == ["TITLE", "x", fixed("RANDOMIZ", "1.0", "2"), fixed("START", "1000"), "STOP"]


def test_free_format_cards_are_written_in_free_format(tmp_path):
    """After FREE, fields are separated, not in columns: START 20.0 500.0 ... was read by
    columns and written back as `START           1000 0.0 0.0 1        .0`."""
    text = "FREE\nRANDOMIZ, 1.0, 9.\nSTART 20.0 500.0 0.0 0.0 0.0 1.0\nFIXED\nSTOP\n"
    assert cards(tmp_path, text, 1000, 4) == [
        "FREE",
        "RANDOMIZ, 1.0, 4",
        "START, 1000, 500.0, 0.0, 0.0, 0.0, 1.0",
        "FIXED",
        "STOP",
    ]
    text = "FREE\nSTART,,500\nFIXED\nSTOP\n"  # an empty place between separators is a 0
    assert cards(tmp_path, text, 1000, 4)[1:3] == ["RANDOMIZ, 1.0, 4", "START, 1000, 500"]


def test_global_can_ask_for_free_format(tmp_path):
    text = f"{fixed('GLOBAL', '', '', '', '2.0')}\nSTART 20.0 500.0\nSTOP\n"
    assert cards(tmp_path, text, 1000, 4)[1:3] == ["RANDOMIZ, 1.0, 4", "START, 1000, 500.0"]


def test_more_primaries_than_ten_columns_hold_are_written_as_a_real(tmp_path):
    """15000000000 ran into the next field: FLUKA would read 1500000000 and a WHAT(2) of 0."""
    lines = cards(tmp_path, f"{fixed('START', '20')}\nSTOP\n", 15_000_000_000)
    assert lines[1] == fixed("START", "1.5000E+10")


def test_the_geometry_is_not_read_for_cards(tmp_path):
    geometry = "GEOBEGIN                                                              COMBNAME\n"
    geometry += "  0    0\nRPP body1 -5 5 -5 5 0 10\nEND\nSTARTREG 5 +body1\nEND\nGEOEND\n"
    lines = cards(tmp_path, f"{geometry}{fixed('START', '20')}\nSTOP\n", 1000)
    assert "STARTREG 5 +body1" in lines
    assert lines[-2:] == [fixed("START", "1000"), "STOP"]


def test_cards_after_the_first_start_are_left_as_they_are(tmp_path):
    """The run starts at the first START with the cards read so far: the last RANDOMIZ and
    START used to be the ones rewritten, and the run kept the input's seed and primaries."""
    text = [fixed("RANDOMIZ", "1.0", "5."), fixed("START", "20"), fixed("RANDOMIZ", "1.0", "6.")]
    text += [fixed("START", "30"), "STOP", fixed("START", "40")]
    assert cards(tmp_path, "\n".join(text) + "\n", 1000, 2) == [
        fixed("RANDOMIZ", "1.0", "2"),
        fixed("START", "1000"),
        *text[2:],
    ]


def test_a_randomiz_only_after_start_does_not_count(tmp_path):
    text = f"{fixed('START', '20')}\n{fixed('RANDOMIZ', '1.0', '6.')}\nSTOP\n"
    assert cards(tmp_path, text, 1000, 2) == [
        fixed("RANDOMIZ", "1.0", "2"),
        fixed("START", "1000"),
        fixed("RANDOMIZ", "1.0", "6."),
        "STOP",
    ]


def test_a_start_after_stop_is_none(tmp_path):
    path = tmp_path / "sim.inp"
    path.write_text(f"TITLE\nx\nSTOP\n{fixed('START', '20')}\n")
    with pytest.raises(MissingStart):
        set_task_cards(path, 1000, 2)
    assert path.read_text() == f"TITLE\nx\nSTOP\n{fixed('START', '20')}\n"

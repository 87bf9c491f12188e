"""Editor submissions: the project is converted to SHIELD-HIT12A input files at submission.

The files are stored beside the project and are what the workers receive, exactly as for a
files submission, so any node runs them with nothing extra installed. A project the converter
cannot express is a 400 naming the item, before anything is stored. An operator who configures
`[runner] converter` keeps the old way: the project goes to the workers, which run that command.
"""

import asyncio
import dataclasses

from server.editor import ConversionError, convert
from server.errors import BadRequest
from server.jobs.submission import Submission

TITLES = {"shieldhit": "SHIELD-HIT12A", "fluka": "FLUKA", "geant4": "Geant4", "topas": "TOPAS"}


def convert_editor(submission: Submission, converter: str) -> Submission:
    """The submission with its converted files (unchanged unless the built-in converter runs)."""
    if submission.input_type != "editor" or converter:
        return submission
    if submission.sim_type != "shieldhit":
        raise BadRequest(
            "editor projects can be run with SHIELD-HIT12A; "
            f"for {TITLES[submission.sim_type]} submit input files"
        )
    try:
        files = convert(submission.input, min(submission.primaries))
    except ConversionError as exc:
        raise BadRequest(f"The project cannot be converted to SHIELD-HIT12A input: {exc}") from None
    return dataclasses.replace(submission, files=files)


async def converted(submission: Submission, converter: str) -> Submission:
    """convert_editor off the event loop: a large project takes a moment to expand."""
    return await asyncio.to_thread(convert_editor, submission, converter)

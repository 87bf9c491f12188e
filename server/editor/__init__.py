"""The built-in converter: YAPTIDE editor projects -> SHIELD-HIT12A input files.

Pure Python, no I/O: `convert(project, primaries)` returns {file name: text} (beam.dat,
mat.dat, geo.dat, detect.dat, and the beam's source file when it has one) or raises
`ConversionError` naming the project item it cannot express. The mapping, card by card, is
`../shared/spec/editor-shieldhit.md`; the modules follow its sections: figures and zones
(geo.dat), materials (mat.dat), beam and physics (beam.dat), detectors and scoring
(detect.dat), with formatting and the zone algebra on their own.
"""

from server.editor.convert import convert
from server.editor.project import ConversionError

__all__ = ["ConversionError", "convert"]

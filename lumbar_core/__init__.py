"""lumbar_core: the library under the lumbar-xray-seg workflow.

Pure functions on numpy arrays, split by the paper's pipeline stages: ``preprocess``
(section 2.1), ``localize`` (2.2), ``crop`` (2.3), ``models`` (Pose-net, M-net, U-net),
``levelset`` (2.4), ``metrics``/``tables``/``plots`` (3.3), ``morphometry`` (fracture
grading), with all file reading and writing in ``io``.
"""

__version__ = "0.1.0"

#: Names of the lumbar levels, top (label 1) to bottom (label 5). Every per-level array,
#: table row and mask label in the project follows this order; the one definition.
LEVELS = ("L1", "L2", "L3", "L4", "L5")

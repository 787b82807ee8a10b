"""lumbar_core: the library under the lumbar-xray-seg workflow.

Three layers, so that the layout shows what is method and what is machinery:

- the method, pure functions on numpy arrays named as the paper's steps: ``preprocess``
  (section 2.1), ``localize`` (2.2), ``crop`` (2.3, Eq. 6, and pasting masks back),
  ``models`` (Pose-net, M-net, U-net), ``training``, ``levelset`` (2.4),
  ``metrics``/``tables``/``plots`` (3.3), ``morphometry`` (fracture grading, beyond the
  paper) and ``phantom`` (the synthetic demo cohort), with file reading and writing in
  ``io`` and ``phantom_io``;
- ``steps``: one module per rule file of the workflow (``steps.preprocess`` for
  ``rules/preprocess.smk``...), one function per rule, reading the rule's inputs, calling
  the method and writing its outputs;
- ``workflow``: the machinery (sample sheet, ingest of a folder of films, GPU slots,
  model-job environment, scheduler patch).

``docs/layout.md`` lists every module in one line.
"""

__version__ = "0.1.0"

#: Names of the lumbar levels, top (label 1) to bottom (label 5). Every per-level array,
#: table row and mask label in the project follows this order; the one definition.
LEVELS = ("L1", "L2", "L3", "L4", "L5")

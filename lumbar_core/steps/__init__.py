"""One module per rule file of the workflow, one function per rule.

``demo``, ``preprocess``, ``train``, ``pose``, ``segment``, ``levelset``, ``evaluate``,
``morphometry`` and ``report`` are named as ``rules/<step>.smk``; each function is named
as its rule (``steps.pose.select_peaks`` runs rule ``select_peaks``). A step reads its
input files, calls the method's functions (``lumbar_core.preprocess``, ``localize``,
``crop``, ``models``, ``levelset``, ``metrics``, ``morphometry``, ``plots``, ``tables``)
and writes its outputs; it holds no algorithm of its own. Each step can be run and tested
without Snakemake.

Every per-image output carries a ``status``:

- ``"ok"``;
- ``"excluded"``: the image or its annotation cannot be used (unreadable, truncated, too
  small, no contrast, a level missing...). The message says why. Downstream steps carry
  the status on (:func:`lumbar_core.steps._common.forward_exclusion`), so one bad file
  costs only itself and the cohort completes;
- ``"failed"``: the method ran and failed on the image (fewer than five peaks). The image
  counts against the success rate and in the "all images" column of Table 2;
- ``"implausible"``: five centres were found in an image without annotation but they do
  not form a plausible lumbar spine (:func:`lumbar_core.localize.check_plausibility`).
  Carried on like ``"failed"``: the image gets no masks, heights or grades. In annotated
  images the flag (``plausible: false``) is recorded and the status stays ``"ok"``.

Files are written atomically by :mod:`lumbar_core.io`, so an interrupted job never leaves a
file that looks complete. Keras is imported only inside the functions of the model rules.
"""

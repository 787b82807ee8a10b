"""The workflow's machinery, apart from the method.

``cohort`` reads and validates the sample sheet and cuts it into shards; ``ingest`` turns
a folder of films into a sample sheet (the ``lumbar-ingest`` command); ``gpu`` gives each
concurrent model job its own GPU; ``environment`` prepares a model job (threads, oneDNN,
GPU slot, Keras backend) before Keras is imported; ``scheduling`` keeps Snakemake's
scheduler from piling up re-selection timers. None of it is part of the paper's method.
"""

"""lumbar-ingest: time per file on a generated folder of small films.

Writes the tree the tests use (tests/film_tree.py: PNG, TIFF, JPEG, DICOM with patient
data in the header, a BUU-LSPINE-style subset with corner-point CSVs, unreadable files)
into a temporary folder and times :func:`lumbar_core.workflow.ingest.ingest_folder` on it, decoding
every film (the default) and reading headers only (``--quick``), with 1 and 2 worker
processes. Each figure is the median of ``--repeats`` runs after one warm-up run (the
files then sit in the page cache, as on a second pass over an archive).

Run: ``.venv/bin/python benchmarks/ingest.py [--films 1000] [--repeats 3]``
"""

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _bench import median_s  # noqa: E402
from film_tree import write_film_tree  # noqa: E402

from lumbar_core.workflow.ingest import ingest_folder  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--films", type=int, default=1000, help="readable films (default 1000)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per row (default 3)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "films"
        start = time.perf_counter()
        tree = write_film_tree(root, args.films, seed=0)
        written = time.perf_counter() - start
        n_files = sum(1 for _ in root.rglob("*") if _.is_file())
        n_buu = sum(f["annotated"] for f in tree["films"].values())
        print(f"tree: {n_files} files ({len(tree['films'])} films, {n_buu} of them with a "
              f"corner-point CSV, {len(tree['unreadable'])} unreadable, "
              f"{len(tree['other'])} other files), written in {written:.1f} s")
        print(f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
              f"Python {platform.python_version()}")
        print()
        print("| mode | jobs | seconds | ms per file |")
        print("| --- | --- | --- | --- |")
        sink = open(os.devnull, "w")
        for verify, jobs in ((True, 1), (True, 2), (False, 1), (False, 2)):
            sheet = Path(tmp) / f"sheet-{verify}-{jobs}" / "samples.tsv"

            def run():
                ingest_folder(root, sheet, verify=verify, jobs=jobs, log=sink)

            seconds = median_s(run, args.repeats)
            mode = "decode every film" if verify else "headers only (--quick)"
            print(f"| {mode} | {jobs} | {seconds:.2f} | {1000 * seconds / n_files:.2f} |")


if __name__ == "__main__":
    main()

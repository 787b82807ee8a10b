"""How long Snakemake takes to plan the whole workflow for a large cohort.

For each size N (``--sizes``, default 1,000, 10,000 and 50,000 images) the script
writes a sample sheet of N rows that all point at ONE tiny placeholder image and ONE
placeholder annotation in a temporary folder (distinct ``image_id``; splits 60/15/25 %
train/val/test, cycling in blocks of 20 ids; modality and group alternating), so
nothing but the sheet grows. On that sheet it times, each in a fresh process:

(a) ``snakemake all -n --quiet``: the dry run, i.e. parsing the Snakefile and the
    sheet, building the DAG and checking every job. ``--quiet`` hides the job-count
    table; a small hook prints it anyway (see ``_DRIVER``), so the jobs are counted in
    the same run. (``-n --quiet rules``, as in ``make test``, also passes every job
    through the dry-run scheduler afterwards, which adds about a quarter.)
(b) ``snakemake --list-rules``: parsing only (Snakefile, config and sample-sheet
    validation, the module-level id lists of ``rules/common.smk``), no DAG.

````--jobs shard`` runs the per-image steps one job per shard of ``--shard-size`` images
(``per_image_steps`` in config.yaml) instead of one job per image (``--jobs image``, the
default); ``--jobs image shard`` measures both, one table each.

``DAG = (a) - (b)`` is the cost of the DAG alone. The table gives images, jobs, the wall
seconds of (a), (b) and their difference, (a)'s CPU seconds and peak memory
(``os.wait4``), seconds per 1,000 images and the growth factor between sizes (time
ratio over size ratio: 1.0 is linear). The goal is 100,000 images in at most 60 s on
2 cores; the 1-minute load average is printed beside each row because other work on
the machine slows the runs.

For reference, the same dry run of a bare workflow (five ``shell:`` rules per image,
no input functions, logs, benchmarks, scripts or environments) at the smallest size
gives Snakemake's own cost per job on this machine (``--no-floor`` skips it).

``--profile N`` then runs the dry run of size N under ``cProfile`` and prints where the
time goes: parsing, the DAG build (``Workflow._build_dag``), Snakemake's per-job check
of each job's script (``ScriptProcessor``), and the functions of this repository
(``Snakefile``, ``rules/*.smk``, ``lumbar_core``) by cumulative time, e.g. the input
functions that run once per job.

Usage: ``python benchmarks/dag.py [--sizes 1000,10000,50000] [--cores 2]
[--jobs image shard] [--shard-size 64] [--profile N] [--no-floor] [--timeout S] [--keep DIR]``
"""

import argparse
import os
import pstats
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
_SNAKEMAKE = Path(sys.executable).with_name("snakemake")
_SPLITS = ["train"] * 12 + ["val"] * 3 + ["test"] * 5  # 60/15/25 % in blocks of 20


def write_placeholders(folder):
    """One tiny 8 x 8 PNG and one placeholder annotation JSON; returns their paths."""
    import imageio.v3 as iio
    import numpy as np

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    image, annotation = folder / "placeholder.png", folder / "placeholder.json"
    iio.imwrite(image, np.zeros((8, 8), np.uint8))
    annotation.write_text("{}\n")
    return image, annotation


def write_sheet(path, n, image, annotation):
    """A sample sheet of ``n`` images, every row pointing at the same two files."""
    lines = ["image_id\timage\tannotation\tsplit\tmodality\tgroup"]
    for k in range(n):
        lines.append(f"img{k:06d}\t{image}\t{annotation}\t{_SPLITS[k % 20]}\t"
                     f"{('DR', 'CR')[k % 2]}\t{('normal', 'abnormal')[(k // 2) % 2]}")
    Path(path).write_text("\n".join(lines) + "\n")


#: Snakemake's command line, with one addition: the job-count table that ``--quiet``
#: hides is printed to stderr when Snakemake computes it (DAG.stats), so that the dry run
#: timed is exactly ``snakemake -n --quiet`` and still reports its number of jobs.
_DRIVER = """
import sys
from snakemake.cli import main
from snakemake import dag

_stats = getattr(dag.DAG, "stats", None)
if _stats is not None:
    def _printing_stats(self):
        message, counts = _stats(self)
        print(message, file=sys.stderr, flush=True)
        return message, counts
    dag.DAG.stats = _printing_stats
sys.exit(main(sys.argv[1:]))
"""


def _snakemake(*args):
    return [sys.executable, "-c", _DRIVER, *args]


def _options(workdir, sheet, cores, jobs="image", shard_size=64):
    # The job mode by a config file: --config would pass the shard size as a string.
    mode = Path(workdir).parent / f"jobs_{jobs}_{shard_size}.yaml"
    mode.write_text(f"per_image_steps:\n  jobs: {jobs}\n  shard_size: {shard_size}\n")
    return ["-s", str(_ROOT / "Snakefile"), "--directory", str(workdir), "--configfile",
            str(mode), "--config", f"samples={sheet}", "--cores", str(cores)]


def _snakemake_cmd(workdir, sheet, cores, *args, **mode):
    # The target goes first: a word after --quiet would be read as one of its choices.
    return _snakemake(*args, *_options(workdir, sheet, cores, **mode))


def run(cmd, *, timeout):
    """Run ``cmd``; returns wall and CPU seconds, peak memory (MiB), output and exit code.

    CPU (user + system) and peak resident memory are the process's own, from
    ``os.wait4``; the exit code is ``"timeout"`` when it ran past ``timeout`` seconds.
    """
    with tempfile.TemporaryFile("w+") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=_ROOT)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - start > timeout:
                proc.kill()
                os.wait4(proc.pid, 0)
                proc.returncode = -9
                nan = float("nan")
                return {"wall": nan, "cpu": nan, "rss": nan, "text": "", "rc": "timeout"}
            time.sleep(0.05)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read()
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime,
            "rss": usage.ru_maxrss / 1024, "text": text, "rc": proc.returncode}


def count_jobs(text):
    """The ``total`` of Snakemake's job-count table (None when absent)."""
    match = re.search(r"^total\s+(\d+)", text, flags=re.MULTILINE)
    return int(match.group(1)) if match else None


def _fail(what, result):
    tail = "".join(result["text"].splitlines(True)[-25:])
    sys.exit(f"{what} failed ({result['rc']}):\n{tail}")


def measure(n, folder, *, cores, timeout, **mode):
    """Dry run and parse-only baseline of one size and job mode; returns a row of figures."""
    folder = Path(folder)
    image, annotation = write_placeholders(folder)
    sheet = folder / f"samples_{n}.tsv"
    write_sheet(sheet, n, image.name, annotation.name)
    workdir = folder / f"work_{n}_{mode.get('jobs', 'image')}"
    workdir.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]
    parse = run(_snakemake_cmd(workdir, sheet, cores, "--list-rules", **mode), timeout=timeout)
    if parse["rc"] not in (0, "timeout"):
        _fail(f"--list-rules at {n} images", parse)
    dry = run(_snakemake_cmd(workdir, sheet, cores, "all", "-n", "--quiet", **mode),
              timeout=timeout)
    if dry["rc"] not in (0, "timeout"):
        _fail(f"dry run at {n} images", dry)
    return {"images": n, "jobs": count_jobs(dry["text"]), "dry": dry["wall"],
            "dry_cpu": dry["cpu"], "rss": dry["rss"], "parse": parse["wall"],
            "dag": dry["wall"] - parse["wall"], "load": load}


_FLOOR_RULES = "abcde"


def _floor_snakefile():
    """A bare workflow: per image a chain of five shell rules, nothing else."""
    lines = ['IDS = [f"img{k:06d}" for k in range(int(config["size"]))]', "", "",
             "rule all:", "    input:", '        expand("e/{i}.txt", i=IDS),', ""]
    previous = None
    for name in _FLOOR_RULES:
        lines += ["", f"rule {name}:"]
        if previous:
            lines += ["    input:", f'        "{previous}/{{i}}.txt",']
        lines += ["    output:", f'        "{name}/{{i}}.txt",', "    shell:",
                  '        "touch {output}"', ""]
        previous = name
    return "\n".join(lines)


def measure_floor(n, folder, *, cores, timeout):
    """Dry run of the bare five-rule workflow on ``n`` images: Snakemake's own floor."""
    folder = Path(folder) / "floor"
    folder.mkdir(parents=True, exist_ok=True)
    snakefile = folder / "Snakefile"
    snakefile.write_text(_floor_snakefile())
    cmd = _snakemake("all", "-n", "--quiet", "-s", str(snakefile), "--directory",
                     str(folder / f"work_{n}"), "--config", f"size={n}", "--cores", str(cores))
    result = run(cmd, timeout=timeout)
    if result["rc"] not in (0, "timeout"):
        _fail(f"the bare workflow at {n} images", result)
    return {"images": n, "jobs": count_jobs(result["text"]), "dry": result["wall"]}


def print_table(rows):
    print(f"{'images':>7} {'jobs':>8} {'dry run s':>10} {'parse s':>8} {'DAG s':>8} "
          f"{'CPU s':>7} {'MiB':>6} {'s/1000 img':>10} {'growth':>7} {'load':>5}")
    previous = None
    for row in rows:
        per_k = 1000 * row["dry"] / row["images"]
        growth = ""
        if previous is not None:
            growth = (f"{(row['dry'] / previous['dry']) / (row['images'] / previous['images']):7.2f}")
        jobs = row["jobs"] if row["jobs"] is not None else "?"
        print(f"{row['images']:7d} {jobs:>8} {row['dry']:10.1f} {row['parse']:8.1f} "
              f"{row['dag']:8.1f} {row['dry_cpu']:7.1f} {row['rss']:6.0f} {per_k:10.2f} {growth:>7} "
              f"{row['load']:5.2f}")
        previous = row
    print("growth: (time ratio) / (size ratio) against the previous size; 1.00 is linear. "
          "load: 1-minute load average at the start of the size.")
    for row in rows:
        if row["images"] == 100_000:
            verdict = "meets" if row["dry"] <= 60 else "misses"
            per_job = f", {1000 * row['dry'] / row['jobs']:.2f} ms per job" if row["jobs"] else ""
            print(f"goal: 100,000 images in <= 60 s on 2 cores: {row['dry']:.1f} s, {verdict} it"
                  f"{per_job}.")


def _stat(stats, file_end, name):
    """Cumulative seconds and calls of the functions named ``name`` in files ending so."""
    hits = [(v[3], v[1]) for (f, _, fn), v in stats.stats.items()
            if fn == name and f.replace(os.sep, "/").endswith(file_end)]
    return sum(h[0] for h in hits), sum(h[1] for h in hits)


def _source_line(path, line, name):
    """The line of ``def name(`` in a .smk file; cProfile reports the compiled line there."""
    if not path.endswith(".smk"):
        return str(line)
    pattern = re.compile(rf"^\s*def {re.escape(name)}\(")
    with open(path) as handle:
        for number, text in enumerate(handle, start=1):
            if pattern.match(text):
                return str(number)
    return f"{line} (compiled)"


def profile(n, folder, *, cores, top=12, **mode):
    """cProfile the dry run of ``n`` images and print where its time goes."""
    folder = Path(folder)
    image, annotation = write_placeholders(folder)
    sheet = folder / f"samples_{n}.tsv"
    write_sheet(sheet, n, image.name, annotation.name)
    out = folder / f"dry_{n}.prof"
    cmd = [sys.executable, "-m", "cProfile", "-o", str(out), str(_SNAKEMAKE), "all", "-n",
           "--quiet", *_options(folder / f"work_{n}", sheet, cores, **mode)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          cwd=_ROOT)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"profiled dry run failed:\n{proc.stderr[-3000:]}")
    stats = pstats.Stats(str(out))
    total = stats.total_tt
    print(f"\nprofile of the dry run at {n} images (cProfile; {wall:.1f} s wall with "
          f"profiling, {total:.1f} s profiled):")
    phases = [
        ("Snakefile, rules/*.smk and the sheet parsed", _stat(stats, "/Snakefile", "<module>")),
        ("DAG build (Workflow._build_dag)", _stat(stats, "snakemake/workflow.py", "_build_dag")),
        ("per-job script checks (DAG processors)", _stat(stats, "snakemake/dag.py", "process")),
        ("  of which script.get_source", _stat(stats, "snakemake/script/__init__.py",
                                               "get_source")),
        ("  of which namedtuple classes (smart_open)", _stat(stats, "collections/__init__.py",
                                                              "namedtuple")),
        ("input functions applied (Rule.apply_input_function)",
         _stat(stats, "snakemake/rules.py", "apply_input_function")),
        ("  of which calling the functions (Rule.apply_func)", _stat(stats, "snakemake/rules.py",
                                                        "apply_func")),
    ]
    for label, (seconds, calls) in phases:
        print(f"  {label:<52} {seconds:8.1f} s {100 * seconds / total:5.1f} % {calls:>9} calls")
    root = str(_ROOT)
    mine = tuple(os.path.join(root, p) for p in ("Snakefile", "rules" + os.sep,
                                                  "lumbar_core" + os.sep))
    own = [(v[3], v[1], f, line, fn) for (f, line, fn), v in stats.stats.items()
           if f.startswith(mine) and fn != "<module>"]
    own.sort(reverse=True)
    print(f"the repository's functions (Snakefile, rules/, lumbar_core/) by cumulative time "
          f"(top {top}):")
    for seconds, calls, f, line, fn in own[:top]:
        where = f"{os.path.relpath(f, root)}:{_source_line(f, line, fn)} {fn}"
        print(f"  {where:<52} {seconds:8.2f} s {calls:>9} calls {1e6 * seconds / calls:8.1f} us/call")


def _sizes(text):
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"sizes must be comma-separated integers; got {text!r}")
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"sizes must be positive; got {text!r}")
    return sizes


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=_sizes, default=[1000, 10_000, 50_000],
                        help="comma-separated cohort sizes (default 1000,10000,50000; "
                             "1000 is a quick run)")
    parser.add_argument("--cores", type=int, default=2, help="snakemake --cores (default 2)")
    parser.add_argument("--jobs", nargs="+", choices=["image", "shard"], default=["image"],
                        help="per-image steps as one job per image and/or per shard "
                             "(per_image_steps.jobs; default image)")
    parser.add_argument("--shard-size", type=int, default=64,
                        help="images per shard with --jobs shard (default 64)")
    parser.add_argument("--profile", type=int, default=None, metavar="N",
                        help="also profile the dry run at N images (takes about 1.7 times "
                             "an unprofiled run)")
    parser.add_argument("--no-floor", action="store_true", help="skip the dry run of a bare "
                        "five-rule workflow at the smallest size (Snakemake's cost per job)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds allowed per "
                        "snakemake call (default 900); a size that runs out shows nan")
    parser.add_argument("--keep", type=Path, default=None, help="write the sheets and "
                        "Snakemake's folders here and keep them (default: a temporary folder)")
    args = parser.parse_args(argv)
    if args.cores < 1:
        parser.error(f"--cores must be >= 1; got {args.cores}")
    if args.shard_size < 1:
        parser.error(f"--shard-size must be >= 1; got {args.shard_size}")

    folder = Path(args.keep or tempfile.mkdtemp(prefix="lumbar-dag-")).resolve()
    try:
        print(f"dry run of target 'all' on sheets whose rows share one placeholder image; "
              f"snakemake --cores {args.cores}, {os.cpu_count()} CPU cores")
        tables = {}
        for jobs in args.jobs:
            rows = tables[jobs] = []
            for n in args.sizes:
                rows.append(measure(n, folder, cores=args.cores, timeout=args.timeout,
                                    jobs=jobs, shard_size=args.shard_size))
                print(f"  {jobs} jobs, {n} images done: {rows[-1]['dry']:.1f} s", flush=True)
        floor = None
        if not args.no_floor:
            floor = measure_floor(min(args.sizes), folder, cores=args.cores,
                                  timeout=args.timeout)
        for jobs, rows in tables.items():
            size = f" of {args.shard_size} images" if jobs == "shard" else ""
            print(f"\nper-image steps: one job per {jobs}{size}")
            print_table(rows)
        if floor and floor["jobs"]:
            rows = tables[args.jobs[0]]
            ours = next(r for r in rows if r["images"] == floor["images"])
            ms_floor = 1000 * floor["dry"] / floor["jobs"]
            ms_ours = 1000 * ours["dry"] / ours["jobs"] if ours["jobs"] else float("nan")
            print(f"Snakemake's floor: a bare workflow of {len(_FLOOR_RULES)} shell rules per "
                  f"image, {floor['images']} images, {floor['jobs']} jobs: {floor['dry']:.1f} s, "
                  f"{ms_floor:.2f} ms per job; this workflow {ms_ours:.2f} ms per job "
                  f"({ms_ours / ms_floor:.2f}x), {ours['jobs'] / ours['images']:.2f} jobs per image.")
        if args.profile:
            profile(args.profile, folder, cores=args.cores, jobs=args.jobs[0],
                    shard_size=args.shard_size)
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()

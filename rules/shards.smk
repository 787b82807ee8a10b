# Per-shard jobs of the per-image rules (per_image_steps: shard). For every per-image rule
# <step> (STEP_IDS), rule <step>_shard runs the same call (lumbar_core.workflow.per_image)
# on every image of a shard, one job for all of them. It is derived from the per-image rule
# itself, so that its inputs, outputs and params are written once: each image's job is
# that rule's, with every file a per-image rule writes moved into the shard folders
# (in_shards). Its outputs are one folder per output and shard,
# results/<step>/<output>/<shard>/, holding the per-image files under their usual names;
# a folder of an intermediate output is temp() as the per-image file is. Snakemake thus
# plans a few jobs per shard, not per image, and a killed shard job reruns only its shard.
from types import SimpleNamespace

from snakemake.io import is_flagged


def _expand(value, wildcards):
    """A per-image rule's input or params item for one image."""
    if callable(value):
        return value(wildcards)
    if isinstance(value, str):
        # Plain strings: Snakemake's own path objects do not pickle into the job's script.
        return str(value).format(image_id=wildcards.image_id)
    return value


#: (step, shard) -> its images' jobs, between the input and the params function of a job.
_PLANNED = {}


def _plan(step, part):
    """For each image of the shard, the input, output and params its per-image job of
    `step` would get, with the per-image rules' files in shards; and the files and shard
    folders the shard job needs."""
    proxy = getattr(rules, step)
    jobs, needed = [], set()
    for image_id in STEP_SHARDS[step][part]:
        w = SimpleNamespace(image_id=image_id)
        inputs = {}
        for n, v in proxy.input.items():
            value = _expand(v, w)
            moved = [
                in_shards(str(x))
                for x in ([value] if isinstance(value, str) else value)
            ]
            needed.update(folder or path for path, folder in moved)
            inputs[n] = moved[0][0] if isinstance(value, str) else [m[0] for m in moved]
        outputs = {
            n: in_shards(str(v).format(image_id=image_id))[0]
            for n, v in proxy.output.items()
        }
        params = {n: _expand(v, w) for n, v in proxy.params.items()}
        jobs.append(
            {"image_id": image_id, "input": inputs, "output": outputs, "params": params}
        )
    return jobs, sorted(needed)


def shard_inputs(step):
    """Input function: everything the shard's images need, the files of per-image rules
    as the shard folders that hold them."""

    def inputs(wildcards):
        _PLANNED[step, wildcards.part] = _plan(step, wildcards.part)
        return _PLANNED[step, wildcards.part][1]

    return inputs


def shard_jobs(step):
    """Params function: the per-image jobs of the shard (_plan)."""

    def jobs(wildcards):
        planned = _PLANNED.pop((step, wildcards.part), None)
        return (planned or _plan(step, wildcards.part))[0]

    return jobs


def shard_outputs(step):
    """Output: one folder per output of the per-image rule, temp() where its file is."""
    proxy = getattr(rules, step)
    outputs = {}
    for k, (name, pattern) in enumerate(proxy.output.items()):
        folder = directory(shard_folder_of(str(pattern), name, "{part}"))
        is_temp = is_flagged(proxy.rule.output[k], "temp")
        outputs[name] = temp(folder) if is_temp else folder
    return outputs


for _step in STEP_IDS:

    rule:
        name:
            f"{_step}_shard"
        input:
            shard_inputs(_step),
        output:
            **shard_outputs(_step),
        log:
            f"logs/{_step}_shard/{{part}}.log",
        benchmark:
            f"results/benchmarks/{_step}_shard/{{part}}.tsv"
        conda:
            "../envs/cpu.yaml"
        threads: 1
        resources:
            # One image at a time, as the per-image jobs, the largest of which ask 2,000.
            mem_mb=2000,
        params:
            jobs=shard_jobs(_step),
        script:
            "../workflow_scripts/per_image_shard.py"

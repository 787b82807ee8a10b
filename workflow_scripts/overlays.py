"""Rule overlays: input image, GT outlines, predicted centres and outlines per method."""

import sys
from pathlib import Path

sys.stderr = open(snakemake.log[0], "w")

from lumbar_core.workflow.per_image import image_paths
from lumbar_core.steps import report

inp = snakemake.input
ids = snakemake.params.image_ids  # the order of the per-image inputs
shard_of = snakemake.params.shard_of
annotated = snakemake.params.annotated
points = dict(zip(annotated, image_paths(inp.points, annotated), strict=True))
mnet = {Path(d).name: Path(d) for d in inp.mnet}
mnet_whole = {Path(d).name: Path(d) for d in inp.mnet_whole}
inputs = {
    i: {
        "image": image,
        "points": points.get(i),
        "peaks": peaks,
        "refined": refined,
        "mnet": mnet[shard_of["segmentation"][i]] / f"{i}.npz",
        "mnet_whole": mnet_whole[shard_of["whole_image"][i]] / f"{i}.npz",
    }
    for i, image, peaks, refined in zip(
        ids, inp.images, image_paths(inp.peaks, ids), image_paths(inp.refined, ids), strict=True
    )
}
chosen = report.overlays(
    segmentation=image_paths(inp.segmentation, annotated),
    inputs=inputs,
    out_dir=snakemake.output.overlays,
    n=snakemake.params.n,
)
print(f"drew {', '.join(chosen)}", file=sys.stderr)

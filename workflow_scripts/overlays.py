"""Rule overlays: input image, GT outlines, predicted centres and outlines per method."""

import sys

sys.stderr = open(snakemake.log[0], "w")

from lumbar_core.stages import run_overlays

shard_of = snakemake.params.shard_of
annotated = set(snakemake.params.annotated)
inputs = {
    i: {
        "image": path,
        "points": f"results/ground_truth/{i}.json" if i in annotated else None,
        "peaks": f"results/select_peaks/{i}.json",
        "refined": f"results/levelset_refine/{i}.npz",
        "mnet": f"results/mnet_infer/{shard_of['segmentation'][i]}/{i}.npz",
        "mnet_whole": f"results/mnet_whole_infer/{shard_of['whole_image'][i]}/{i}.npz",
    }
    for i, path in snakemake.params.images.items()
}
chosen = run_overlays(
    snakemake.input.segmentation, inputs, snakemake.output.overlays, n=snakemake.params.n
)
print(f"drew {', '.join(chosen)}", file=sys.stderr)

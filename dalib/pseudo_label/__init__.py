"""Pseudo-labelling: run the teacher over unlabelled images and save (image, disparity) shards.

The student of Depth Anything learns from real images labelled by the teacher (notebook
05_pseudo_labelling). This module does that labelling for any `datasets.Dataset` with an `image`
column, batched, on any device, resumably and split across processes:

    python -m dalib.pseudo_label --teacher runs/cpu/teacher --source synth-photo --split train --out DIR
    python -m dalib.pseudo_label ... --shard 1/4              # worker 1 of 4 (any machine, same DIR)
    torchrun --nproc-per-node 4 -m dalib.pseudo_label ...     # shard RANK/WORLD_SIZE, one GPU each
    >>> from dalib.pseudo_label.pool import load_pseudo_labels, load_pseudo_pool
    >>> ds = load_pseudo_labels(DIR)                          # all shards of all workers, source order
    >>> pool = load_pseudo_pool([DIR, DIR2])                  # image + disparity of several folders (student)

Labels: the teacher's raw relative disparity (>= 0) at each image's own resolution, as the official
`infer_image` computes it (aspect-keeping resize to a multiple of 14 with shorter side >= input_size,
bicubic, ImageNet normalisation, bilinear resize of the prediction back). Not normalised: training
maps every crop to [0, 1] itself (`dalib.transforms.finalize_target`), so the stored scale is the
teacher's and nothing is lost.

On-disk layout of `out_dir` (rows are cut into a fixed grid of shards; shard k = rows
[k * shard_size, (k + 1) * shard_size)):

    index.json            what is being labelled: source, rows, shard_size, input_size, teacher, columns
    shard-00000/          `save_to_disk` of shard 0: image (Image), source_row (int64),
                          disparity (float32 H x W, nested lists), kept source columns
    shard-00000.json      written after the folder is in place: rows, sha256 and sizes of its files
    ...
    .lock-0-of-1          held by the process labelling as worker 0 of 1 (one per worker spec i/n)

Worker i of n computes the shards k with k % n == i, a pure function of (i, n), so any number of
processes can share one `out_dir`. A shard is complete when its folder matches its .json entry;
folders are written to a temporary name and renamed, so an interrupted run leaves complete shards
only and a re-run computes just the missing or damaged ones. Loading checks each shard's sha256 once
per process: a shard whose bytes changed on disk is an error naming it, never served.

Two processes started with the same worker spec on one `out_dir` (the same command twice) never run at
once: the second says so on stderr and waits for the first, then skips the shards it completed. Workers
with different i of one n run in parallel; all workers of a folder use the same n.
"""

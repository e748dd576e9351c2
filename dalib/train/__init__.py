"""One training loop for the Depth Anything teacher and student (notebooks 04_teacher_training, 06_student_training).

    python -m dalib.train --config configs/train.yaml                       # a YAML of TrainConfig fields
    python -m dalib.train --datasets synth-indoor --crop 112 --steps 200 --out-dir runs/t
    torchrun --nproc_per_node 2 -m dalib.train --datasets synth-indoor ...  # DDP (NCCL on GPUs, gloo on CPU)
    >>> from dalib.train.config import TrainConfig
    >>> from dalib.train.loop import train
    >>> result = train(TrainConfig(datasets=[my_hf_dataset], crop=70, steps=6))

What one step does (the V2 recipe, arXiv 2406.09414, and the official fine-tuning code):
    batch   B images mixed from the sources by `ratios` (V1 student: labelled:unlabelled = 1:2), each
            resized keeping aspect, randomly cropped to crop x crop (a multiple of 14) and flipped; targets
            are normalised disparity (metric depth -> 1/depth -> per-image [0, 1]; pseudo-labels as is)
    loss    per source i:  L_i = ssi(pred, d; align, trim_i) + gm_weight * gm(pred, d)   (V2: 1:2)
            total = sum_i loss_weight_i * L_i  (+ extra terms from hooks, e.g. feature alignment)
    update  AdamW, encoder lr and a 10x decoder lr, linear warmup then poly decay (1 - t)^0.9,
            gradient clipping, bf16 autocast on CUDA and on CPUs with native bf16 (fp32 elsewhere);
            a non-finite loss or gradient stops the run (FloatingPointError), the last checkpoint intact

Exact resume: the data of step s is a pure function of (seed, s): each source walks through its own
seeded permutation of rows, and each sample's crop/flip comes from a generator seeded by (seed,
source, epoch, row). A checkpoint therefore needs only the model, optimiser, scheduler, RNG states
and the step. Checkpoints are folders `out_dir/checkpoints/step-XXXXXXXX/` (model.safetensors +
config.json from `save_pretrained`, train_state.pt), built under a temporary name and renamed into
place, then published in `checkpoints/latest.json`: a kill at any moment leaves the last published
checkpoint intact, and re-running the same command continues from it.

Distributed runs: the global batch is split evenly across ranks, every source's share too, so rank r
sees images r*B/W .. of the same global batch a single process would see. Loss reduction: with
reduction="image" both terms are means over images (SSI: of each image's mean residual; gradient
matching: of each image's sum over scales of S_k / C_k), so the average of the ranks' losses (what DDP's
gradient averaging computes) equals the single-process loss of the global batch, holes and sky included.

Modules (import each name from its module): `config` (TrainConfig, per_batch, chapter_config), `plan` (the data
of each step), `step` (TrainHooks, TrainState, the batch loss, one step), `checkpoints` (checkpoints, RNG states,
the log, training_summary), `loop` (train, launch), `diagnostics` (lr range test, overfit check), `cli` (the
command line).
"""

"""One training loop for the Depth Anything teacher and student (notebooks 04_teacher_training, 06_student_training).

    python -m dalib.train --config configs/train.yaml                       # a YAML of TrainConfig fields
    python -m dalib.train --datasets synth-indoor --crop 112 --steps 200 --out-dir runs/t
    torchrun --nproc_per_node 2 -m dalib.train --datasets synth-indoor ...  # DDP (NCCL on GPUs, gloo on CPU)
    >>> from dalib.train import TrainConfig, train
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

Modules: `config` (TrainConfig, per_batch), `plan` (the data of each step), `step` (hooks, model, optimiser,
loss, one step), `checkpoints` (checkpoints, RNG states, the log), `loop` (train, launch), `diagnostics`
(lr range test, overfit check), `cli` (the command line). Everything public is importable from `dalib.train`.
"""
from dalib.train.checkpoints import (LATEST_FILE, LOG_FILE, STATE_FILE, STATE_FORMAT, latest_checkpoint,
                                     load_train_state, read_log, save_checkpoint, training_seconds)
from dalib.train.cli import command_error, config_from_args, field_comments, main, train_and_report
from dalib.train.config import TrainConfig, config_from_mapping, describe_source, per_batch, read_config_file
from dalib.train.diagnostics import lr_range_test, overfit_batch
from dalib.train.loop import CONFIG_FILE, RESULT_FILE, launch, train
from dalib.train.plan import BatchPlan, build_plan, open_training_dataset
from dalib.train.step import (TrainHooks, build_model, build_optimizer, compute_loss, freeze_unused, gm_weight_at,
                              lr_factor, train_device, train_step, use_autocast)

__all__ = [
    "BatchPlan", "CONFIG_FILE", "LATEST_FILE", "LOG_FILE", "RESULT_FILE", "STATE_FILE", "STATE_FORMAT", "TrainConfig",
    "TrainHooks", "build_model", "build_optimizer", "build_plan", "command_error", "compute_loss", "config_from_args",
    "config_from_mapping", "describe_source", "field_comments", "freeze_unused", "gm_weight_at", "latest_checkpoint",
    "launch", "load_train_state", "lr_factor", "lr_range_test", "main", "open_training_dataset", "overfit_batch",
    "per_batch", "read_config_file", "read_log", "save_checkpoint", "train", "train_device", "train_step",
    "train_and_report", "training_seconds", "use_autocast",
]

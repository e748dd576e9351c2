"""Self-supervised pretraining of the course's own encoder (DINOv2 family, with MAE as the control).

On the cpu profile the `vitt` encoder has no released DINOv2 weights; Depth Anything is "DINOv2 + data",
so this package trains that encoder on unlabelled images (renders of the `pretrain` splits and the bundled
photographs) and exports it as a file that `dalib.weights.build_model("vitt", pretrained_encoder=FILE)` loads.

    python -m dalib.pretrain --objective dino --steps 2000 --out-dir runs/pretrain/dino \
        --export runs/pretrain/dino/vitt-dino.safetensors
    python -m dalib.pretrain --objective mae --steps 6000 --out-dir runs/pretrain/mae

Modules: `config` (PretrainConfig), `views` (image pool, multi-crop views, patch masks), `heads` (DINO head,
MAE decoder), `losses` (DINO, iBOT, KoLeo, MAE, Sinkhorn-Knopp, entropies), `objectives` (DINOv2 and MAE as
modules, schedules), `loop` (optimiser, checkpoints, `pretrain`), `export` (the encoder file), `cli`.
No notebook teaches it yet; `studies/pretrain_downstream.py` measures what an exported encoder does for the
cpu profile's teacher. The MAE control of the same images:

    python -m dalib.pretrain --objective mae --batch-size 64 --lr 5e-4 --weight-decay 0.05,0.05 \
        --layer-decay 1.0 --patch-embed-lr-mult 1.0 --steps 3000 --out-dir runs/pretrain/mae
"""

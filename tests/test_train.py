"""dalib.train: config checks, schedule, batch plan, determinism, resume after SIGKILL, DDP vs one process."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from dalib.runfiles import REPO_ROOT
from dalib.train.checkpoints import latest_checkpoint, load_train_state
from dalib.train.cli import config_from_args
from dalib.train.config import TrainConfig
from dalib.train.loop import train
from dalib.train.plan import BatchPlan
from dalib.train.step import lr_factor
from dalib.transforms import JointTransform


def make_scenes(n, h=64, w=80, seed=0, holes=False, label="depth"):
    """Tiny scenes in the training schema: a receding floor plus boxes in front, image shaded by depth."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cols = {"image": [], label: [], "mask": []}
    for _ in range(n):
        d = 2.0 + 6.0 * (1 - yy / h) * rng.uniform(0.5, 1.5)
        img = np.stack([np.sin(xx / rng.uniform(2, 6)), np.cos(yy / rng.uniform(2, 6)), np.zeros_like(xx)], -1) * 0.2 + 0.5
        for _ in range(3):
            y0, x0 = rng.integers(0, h - 8), rng.integers(0, w - 8)
            y1, x1 = y0 + rng.integers(6, h // 2), x0 + rng.integers(6, w // 2)
            d[y0:y1, x0:x1] = rng.uniform(0.8, 3.0)
            img[y0:y1, x0:x1] = rng.uniform(0, 1, 3)
        img = img / (0.3 + d[..., None] / 8)
        m = np.ones((h, w), bool)
        if holes:  # a band of invalid pixels ("sky") of random height
            m[: rng.integers(2, h // 4)] = False
        d = np.where(m, d if label == "depth" else 1.0 / d, 0).astype(np.float32)
        cols["image"].append((np.clip(img, 0, 1) * 255).astype(np.uint8))
        cols[label].append(d)
        cols["mask"].append(m)
    feats = datasets.Features({"image": datasets.Image(), label: datasets.Array2D((h, w), "float32"),
                               "mask": datasets.Array2D((h, w), "bool")})
    return datasets.Dataset.from_dict(cols, features=feats)


def tiny(out_dir, ds, **kw):
    """A CPU-sized run: vitt at 56 px, batch 2, in the test process (1 thread, no workers)."""
    base = dict(datasets=[ds], encoder="vitt", crop=56, batch_size=2, steps=6, lr_encoder=1e-4, warmup_steps=1,
                log_every=1, checkpoint_every=0, num_workers=0, threads=1, progress=False, out_dir=str(out_dir))
    base.update(kw)
    return TrainConfig(**base)


def log_of(run):
    return [json.loads(line) for line in (Path(run) / "train_log.jsonl").read_text().splitlines()]


def final_weights(run):
    return load_file(str(latest_checkpoint(run) / "model.safetensors"))


def cli(ds_dir, out_dir, steps, **flags):
    args = dict(datasets=ds_dir, encoder="vitt", crop=56, batch_size=2, steps=steps, lr_encoder=1e-4, warmup_steps=1,
                log_every=1, checkpoint_every=0, num_workers=0, threads=1, progress="false", out_dir=out_dir)
    args.update(flags)
    return [x for k, v in args.items() for x in ("--" + k.replace("_", "-"), str(v))]


def env_1thread():
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


@pytest.fixture(scope="module")
def scenes():
    return make_scenes(12, seed=0, holes=True)


@pytest.fixture(scope="module")
def scenes_dir(tmp_path_factory, scenes):
    d = tmp_path_factory.mktemp("data") / "scenes"
    scenes.save_to_disk(str(d))
    return str(d)


# ----------------------------------------------------------------------------- config, schedule, plan
def test_config_errors_name_the_field(scenes):
    with pytest.raises(ValueError, match="TrainConfig.crop=50"):
        TrainConfig(datasets=[scenes], crop=50).validate()
    with pytest.raises(ValueError, match="ratios"):
        TrainConfig(datasets=[scenes, scenes], ratios=[1, 2], batch_size=4).validate()
    with pytest.raises(ValueError, match="TrainConfig.trims has 3 entries"):
        TrainConfig(datasets=[scenes, scenes], trims=[0, 0.1, 0.2]).validate()
    with pytest.raises(ValueError, match="batch_size=3 is not divisible by the 2 processes"):
        TrainConfig(datasets=[scenes], batch_size=3).validate(world_size=2)
    with pytest.raises(ValueError, match="gets 3 images per batch, not divisible by 2 processes"):
        TrainConfig(datasets=[scenes, scenes], ratios=[1, 1], batch_size=6).validate(world_size=2)
    with pytest.raises(ValueError, match="TrainConfig.warmup_steps"):
        TrainConfig(datasets=[scenes], steps=5, warmup_steps=5).validate()
    for field_name, bad in (("lr_encoder", -1.0), ("lr_encoder", 0.0), ("lr_encoder", float("nan")),
                            ("decoder_lr_mult", float("inf")), ("weight_decay", -0.01), ("grad_clip", -1.0)):
        with pytest.raises(ValueError, match=f"TrainConfig.{field_name}="):
            TrainConfig(datasets=[scenes], **{field_name: bad}).validate()
    with pytest.raises(ValueError, match="TrainConfig.betas"):
        TrainConfig(datasets=[scenes], betas=(0.9, 1.0)).validate()
    with pytest.raises(ValueError, match="TrainConfig.loss_weights: nan"):
        TrainConfig(datasets=[scenes], loss_weights=[float("nan")]).validate()


def test_cli_rejects_a_negative_learning_rate(scenes_dir, tmp_path, capsys):
    from dalib.train.cli import main

    out = tmp_path / "run"
    rc = main(cli(scenes_dir, out, 1, lr_encoder=-1))
    assert rc == 2 and "TrainConfig.lr_encoder=-1.0" in capsys.readouterr().err
    assert not (out / "result.json").exists()


def test_lr_schedule_warmup_then_poly():
    f = [lr_factor(s, 10, warmup=2, power=0.9) for s in range(10)]
    assert f[0] == pytest.approx(0.5) and f[1] == pytest.approx(1.0) and f[2] == pytest.approx(1.0)
    assert f[6] == pytest.approx((1 - 4 / 8) ** 0.9)
    assert all(a > b for a, b in zip(f[2:], f[3:]))
    assert lr_factor(0, 10) == 1.0 and lr_factor(10, 10) == 0.0


def test_batch_plan_mixes_sources_and_splits_ranks(scenes):
    a, b = scenes.with_format("numpy"), make_scenes(5, seed=1, label="disparity").with_format("numpy")
    tf = JointTransform(28)
    one = BatchPlan([a, b], [2, 4], ["auto", "auto"], tf, seed=3)
    ranks = [BatchPlan([a, b], [2, 4], ["auto", "auto"], tf, seed=3, rank=r, world_size=2) for r in range(2)]
    seen_b = []
    for step in range(4):
        full = one.rows(step)
        assert [s for s, _, _ in full] == [0, 0, 1, 1, 1, 1]  # labelled:unlabelled 1:2 per batch
        shares = [r.rows(step) for r in ranks]
        assert sorted(shares[0] + shares[1]) == sorted(full)  # the ranks split the same global batch
        seen_b += [row for s, _, row in full if s == 1]
    # source b (5 rows) walks a permutation per epoch: the first 5 draws are each row once
    assert sorted(seen_b[:5]) == list(range(5))
    batch = one[1]
    assert batch["image"].shape == (6, 3, 28, 28) and batch["source"].tolist() == [0, 0, 1, 1, 1, 1]
    again = BatchPlan([a, b], [2, 4], ["auto", "auto"], tf, seed=3)[1]
    assert all(torch.equal(batch[k], again[k]) for k in batch)


def test_cli_config_file_and_flags(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("datasets: [synth-indoor, synth-photo]\nratios: [1, 2]\ncrop: 70\ntrims: [0.0, 0.1]\n")
    cfg = config_from_args(["--config", str(y), "--steps", "7", "--scale", "1.0,1.5", "--amp", "false"])
    assert cfg.datasets == ["synth-indoor", "synth-photo"] and cfg.ratios == [1, 2] and cfg.crop == 70
    assert cfg.steps == 7 and cfg.scale == (1.0, 1.5) and cfg.amp is False and cfg.trims == [0.0, 0.1]
    y.write_text("crop_size: 70\n")
    with pytest.raises(ValueError, match="unknown TrainConfig fields"):
        config_from_args(["--config", str(y)])


# ----------------------------------------------------------------------------- determinism, files
def test_same_seed_same_loss_curve(tmp_path, scenes):
    r1 = train(tiny(tmp_path / "a", scenes))
    r2 = train(tiny(tmp_path / "b", scenes, num_workers=2))  # workers must not change the data
    train(tiny(tmp_path / "c", scenes, seed=1))
    l1, l2, l3 = (log_of(tmp_path / x) for x in "abc")
    keys = ("step", "ssi", "gm", "total", "grad_norm", "lr_encoder")
    assert [[r[k] for k in keys] for r in l1] == [[r[k] for k in keys] for r in l2]
    assert [r["total"] for r in l1] != [r["total"] for r in l3]
    assert l1[-1]["total"] < l1[0]["total"]  # it learns
    assert r1["final"] == r2["final"] and r1["steps"] == 6 and r1["images_per_s"] > 0
    w1, w2 = final_weights(tmp_path / "a"), final_weights(tmp_path / "b")
    assert all(torch.equal(w1[k], w2[k]) for k in w1)

    # run folder contents
    cfg = json.loads((tmp_path / "a" / "config.json").read_text())
    assert cfg["config"]["crop"] == 56 and cfg["config"]["datasets"][0].startswith("<Dataset rows=12")
    assert "torch" in cfg["environment"]["packages"] and "git_revision" in cfg["environment"]
    rec = l1[-1]
    for k in ("step", "ssi", "gm", "total", "lr_encoder", "lr_decoder", "images_per_s"):
        assert k in rec
    assert rec["lr_decoder"] == pytest.approx(10 * rec["lr_encoder"])
    assert l1[0]["lr_encoder"] == pytest.approx(1e-4)  # warmup of one step, then poly decay
    # checkpoint files: safetensors model + a state that loads with weights_only=True
    ck = Path(r1["checkpoint"])
    assert ck.name == "step-00000006" and (ck / "model.safetensors").is_file()
    state = load_train_state(ck)
    assert state["step"] == 6 and state["scheduler"]["last_epoch"] == 6 and "optimizer" in state
    from dalib.model import DepthAnything

    m = DepthAnything.from_pretrained(ck)
    assert m.encoder == "vitt"
    assert not list((tmp_path / "a" / "checkpoints").glob(".*tmp*"))
    again = train(tiny(tmp_path / "a", scenes))  # a finished run: nothing to do, same summary
    assert again["start_step"] == 6 and again["final"] == r1["final"]


def test_hooks_add_loss_terms(tmp_path, scenes):
    """The student recipe plugs in through TrainHooks: perturbed inputs and extra loss terms on the tokens."""
    from dalib.train.step import TrainHooks

    class Extra(TrainHooks):
        seen = []

        wants_tokens = True

        def perturb_batch(self, batch, step):
            self.seen.append(step)
            batch["image"] = batch["image"] * 0.5  # e.g. a photometric perturbation
            return batch

        def extra_losses(self, batch, tokens, step):
            return {"feat": 0.1 * tokens.float().pow(2).mean()}

    train(tiny(tmp_path / "h", scenes, steps=3), hooks=Extra())
    assert Extra.seen == [0, 1, 2]
    for r in log_of(tmp_path / "h"):
        assert r["total"] == pytest.approx(r["ssi"] + 2 * r["gm"] + r["feat"], rel=1e-5)


def test_resume_in_process_and_mixed_sources(tmp_path, scenes):
    """Stopping after step 3 and resuming equals an uninterrupted run (two sources, trim, workers)."""
    pseudo = make_scenes(6, seed=4, label="disparity")
    kw = dict(datasets=[scenes, pseudo], ratios=[1, 1], trims=[0.0, 0.1], batch_size=2, steps=5, checkpoint_every=3)
    train(tiny(tmp_path / "full", scenes, **kw))
    train(tiny(tmp_path / "part", scenes, **{**kw, "steps": 5}))
    # cut the second run back to its step-3 checkpoint, as if it had died after it
    root = tmp_path / "part" / "checkpoints"
    shutil.rmtree(root / "step-00000005")
    (root / "latest.json").write_text(json.dumps({"step": 3, "dir": "step-00000003"}))
    r = train(tiny(tmp_path / "part", scenes, **kw, num_workers=1))
    assert r["start_step"] == 3
    a, b = final_weights(tmp_path / "full"), final_weights(tmp_path / "part")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [x["total"] for x in log_of(tmp_path / "full")] == [x["total"] for x in log_of(tmp_path / "part")]
    assert "src1" in log_of(tmp_path / "full")[0]
    with pytest.raises(ValueError, match="TrainConfig.crop was 56"):
        train(tiny(tmp_path / "part", scenes, **{**kw, "crop": 42}))


# ----------------------------------------------------------------------------- real kill, real processes
@pytest.mark.slow
def test_sigkill_mid_run_then_rerun_matches_uninterrupted(tmp_path, scenes, scenes_dir):
    out = str(tmp_path / "killed")
    cmd = [sys.executable, "-m", "dalib.train", *cli(scenes_dir, out, 8, checkpoint_every=2)]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env_1thread(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    latest = Path(out) / "checkpoints" / "latest.json"
    deadline = time.time() + 120
    while not latest.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    proc.stderr.close()
    killed_at = json.loads(latest.read_text())["step"]
    assert 2 <= killed_at < 8
    # what a kill leaves: published checkpoints are complete and load safely; partial ones are hidden
    for d in (Path(out) / "checkpoints").glob("step-*"):
        assert {"model.safetensors", "config.json", "train_state.pt"} <= {p.name for p in d.iterdir()}
        assert load_train_state(d)["step"] == int(d.name.split("-")[1])

    done = subprocess.run(cmd, cwd=REPO_ROOT, env=env_1thread(), capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["start_step"] >= killed_at >= 2
    assert not list((Path(out) / "checkpoints").glob(".*tmp*"))

    train(tiny(tmp_path / "straight", scenes_dir, steps=8))  # the same run without interruption
    a, b = final_weights(out), final_weights(tmp_path / "straight")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    steps = [r["step"] for r in log_of(out)]
    assert steps == list(range(1, 9))  # lines after the checkpoint were rewritten, not duplicated
    assert [r["total"] for r in log_of(out)] == [r["total"] for r in log_of(tmp_path / "straight")]


@pytest.mark.slow
@pytest.mark.parametrize("holes", [False, True], ids=["fully-valid", "with-holes"])
def test_ddp_two_gloo_processes_match_one_process(tmp_path, scenes_dir, holes):
    """torchrun, 2 CPU processes x 2 images vs 1 process x 4 images: the same weights.

    With holes the images have invalid bands of different heights (different valid counts): with
    reduction="image" both loss terms are means over images, so averaging the ranks' gradients still
    equals the gradient of the global batch. Both runs are float32 (amp off): under bf16 autocast a batch of 2
    and one of 4 round differently (~2^-8 per product), which after Adam is no smaller than a missing rank.
    """
    full = make_scenes(8, seed=2, holes=holes)
    d = tmp_path / "full"
    full.save_to_disk(str(d))
    out = str(tmp_path / "ddp")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "dalib.train", *cli(str(d), out, 4, batch_size=4, amp="false")]
    env = env_1thread()
    done = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((Path(out) / "config.json").read_text())["world_size"] == 2

    train(tiny(tmp_path / "single", str(d), steps=4, batch_size=4, amp=False))
    a, b = final_weights(out), final_weights(tmp_path / "single")
    # Summing gradients over 2 ranks instead of 4 images changes float32 rounding only (~1e-8 absolute), and
    # Adam's update g / sqrt(v) lifts that to ~1e-5 on parameters whose gradients are near zero. The head's last
    # bias has a gradient of exactly zero up to rounding (the SSI and gradient-matching losses are shift-invariant
    # and the final ReLU passes at every pixel), so Adam walks it by +-lr per step on noise alone: not compared.
    shift_only = "depth_head.scratch.output_conv2.2.bias"
    assert (a.pop(shift_only) - b.pop(shift_only)).abs().max() < 4 * 4 * 1e-3  # steps x decoder lr, with room
    diff = {k: ((a[k] - b[k]).norm() / b[k].norm().clamp_min(1e-12)).item() for k in a}
    total = (torch.cat([(a[k] - b[k]).flatten() for k in a]).norm() / torch.cat([b[k].flatten() for k in a]).norm()).item()
    assert total < 1e-5, total  # measured 7e-8 and 2e-6; a missing rank moves almost every weight by ~lr
    assert max(diff.values()) < 5e-3, max(diff.items(), key=lambda kv: kv[1])  # measured 1e-4 and 7e-4
    la, lb = log_of(out), log_of(tmp_path / "single")
    assert [r["step"] for r in la] == [1, 2, 3, 4]
    assert np.allclose([r["total"] for r in la], [r["total"] for r in lb], rtol=1e-5)


def test_pretrained_encoder_auto_falls_back_to_random_init_with_a_warning(tmp_path, scenes):
    with pytest.warns(RuntimeWarning, match="pretrained_encoder='auto'"):
        auto = train(tiny(tmp_path / "auto", scenes, steps=2, pretrained_encoder="auto"))
    plain = train(tiny(tmp_path / "plain", scenes, steps=2))
    a, b = final_weights(tmp_path / "auto"), final_weights(tmp_path / "plain")
    assert all(torch.equal(a[k], b[k]) for k in a)  # the same seeded random start
    assert auto["steps"] == plain["steps"] == 2


def test_read_log_and_training_seconds_add_resumed_segments(tmp_path):
    from dalib.train.checkpoints import read_log, training_seconds

    recs = [{"step": 1, "elapsed_s": 1.0}, {"step": 2, "elapsed_s": 2.5},  # first segment, killed
            {"step": 3, "elapsed_s": 0.8}, {"step": 4, "elapsed_s": 1.5}]  # resumed: the timer restarts
    (tmp_path / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs) + "\n")
    log = read_log(tmp_path)
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    assert training_seconds(log) == pytest.approx(4.0)
    assert training_seconds([]) == 0.0


def test_non_finite_loss_stops_the_run_and_keeps_the_last_checkpoint(tmp_path, scenes):
    run = tmp_path / "nan"
    train(tiny(run, scenes, steps=2, checkpoint_every=1))
    good = final_weights(run)
    # a learning rate of 1e30 makes the first update explode: the next loss is non-finite
    with pytest.raises(FloatingPointError, match="non-finite training loss"):
        train(tiny(run, scenes, steps=6, lr_encoder=1e30, resume=False))
    w = final_weights(run)  # the published checkpoint is still the good run's
    assert set(w) == set(good) and all(torch.equal(w[k], good[k]) for k in w)


def test_lr_range_test_records_a_geometric_sweep(scenes):
    from dalib.train.diagnostics import lr_range_test

    rec = lr_range_test(tiny("unused", scenes), lr_min=1e-6, lr_max=1e-1, steps=12)
    lrs = [r["lr_encoder"] for r in rec]
    assert lrs[0] == pytest.approx(1e-6)
    assert all(b / a == pytest.approx((1e-1 / 1e-6) ** (1 / 11), rel=1e-6) for a, b in zip(lrs, lrs[1:]))
    assert all(np.isfinite(r["loss"]) for r in rec)
    assert not Path("unused").exists()  # nothing written


def test_overfit_one_batch_drives_the_loss_down(scenes):
    from dalib.train.diagnostics import overfit_batch

    losses = overfit_batch(tiny("unused", scenes, lr_encoder=3e-4, warmup_steps=2), steps=40)
    assert len(losses) == 40
    assert min(losses[-5:]) < 0.5 * losses[0], losses


def test_bf16_autocast_only_where_it_pays_off(monkeypatch):
    from dalib.distributed import bf16_autocast_supported, cpu_has_native_bf16
    from dalib.train.step import use_autocast

    cfg = TrainConfig()
    monkeypatch.setenv("DALIB_CPU_BF16", "0")
    assert not cpu_has_native_bf16() and not use_autocast(cfg, torch.device("cpu"))
    monkeypatch.setenv("DALIB_CPU_BF16", "1")
    assert bf16_autocast_supported("cpu") and use_autocast(cfg, torch.device("cpu"))
    assert not use_autocast(TrainConfig(amp=False), torch.device("cpu"))


def test_bf16_training_matches_float32_within_bf16_precision(tmp_path, scenes, monkeypatch):
    """A run under bf16 autocast (forced, so any CPU runs it) starts from the float32 run's loss: the same weights
    and batch give loss terms within a few bf16 rounding units (u = 2^-8), and it trains; config.json says which
    arithmetic the run used. (Exactness tests pin float32; this is the bf16 path's own test.)"""
    monkeypatch.setenv("DALIB_CPU_BF16", "1")
    low = train(tiny(tmp_path / "bf16", scenes, steps=4))
    ref = train(tiny(tmp_path / "fp32", scenes, steps=4, amp=False))
    assert low["bf16_autocast"] is True and ref["bf16_autocast"] is False
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["bf16_autocast"] is True
    first_low, first_ref = log_of(tmp_path / "bf16")[0], log_of(tmp_path / "fp32")[0]
    u = 2.0**-8
    for k in ("ssi", "gm", "total"):
        assert first_low[k] == pytest.approx(first_ref[k], rel=4 * u), k
    assert first_low["ssi"] != first_ref["ssi"]  # bf16 really ran: float32 would give the same bits
    assert log_of(tmp_path / "bf16")[-1]["total"] < first_low["total"]


# ----------------------------------------------------------------------------- bad inputs: one clear error each
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, scenes):
    """A 2-step run with its final checkpoint, copied by each test that damages it."""
    out = tmp_path_factory.mktemp("finished") / "run"
    train(tiny(out, scenes, steps=2))
    return out


@pytest.mark.parametrize("content", ["random-bytes", "pickle-with-objects"])
def test_resume_from_a_damaged_train_state_names_the_file_and_what_to_do(tmp_path, scenes, finished_run, content):
    import pickle

    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    state = latest_checkpoint(out) / "train_state.pt"
    if content == "random-bytes":  # these bytes trip torch's unpickler with a bare IndexError
        state.write_bytes(np.random.default_rng(17).bytes(2000))
    else:  # torch's own message for it advises weights_only=False, i.e. running the pickled code
        state.write_bytes(pickle.dumps({"step": 2, "where": Path("elsewhere")}, protocol=2))
    with pytest.raises(ValueError) as err:
        train(tiny(out, scenes, steps=2))
    msg = str(err.value)
    assert str(state) in msg and "resume=False" in msg and "delete the checkpoint folder" in msg
    assert "weights_only=False" not in msg


def test_resume_with_a_garbage_latest_json_names_the_file_and_what_to_do(tmp_path, scenes, finished_run):
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    ptr = out / "checkpoints" / "latest.json"
    ptr.write_text("{garbage")
    with pytest.raises(ValueError, match=rf"{ptr}: is not JSON .*step-.*resume=False"):
        train(tiny(out, scenes, steps=2))


def _bad_train_settings(case, tmp_path, scenes_dir, read_only_dir):
    """Command-line arguments of `python -m dalib.train` for one bad setting, and what its error line names."""
    config = tmp_path / "run.yaml"
    if case == "read-only-out-dir":
        return cli(scenes_dir, read_only_dir, 2), [str(read_only_dir)]
    if case == "unknown-config-key":
        config.write_text("steps: 1\nnonsense: 1\n")
        return ["--config", config], [str(config), "unknown TrainConfig fields ['nonsense']"]
    if case == "missing-config-file":
        return ["--config", tmp_path / "nope.yaml"], [str(tmp_path / "nope.yaml"), "no such config file"]
    if case == "config-is-a-yaml-list":
        config.write_text("- steps\n- 1\n")
        return ["--config", config], [str(config), "expected a mapping", "list"]
    if case == "unknown-dataset-name":
        return cli("no-such-dataset", tmp_path / "run", 2), ["TrainConfig.datasets", "'no-such-dataset'"]
    assert case == "lr-overflows-float32"
    return cli(scenes_dir, tmp_path / "run", 2, lr_encoder=1e39), ["TrainConfig.lr_encoder=1e+39", "float32"]


@pytest.mark.parametrize("case", ["read-only-out-dir", "unknown-config-key", "missing-config-file",
                                  "config-is-a-yaml-list", "unknown-dataset-name", "lr-overflows-float32"])
def test_cli_bad_setting_is_one_error_line_and_exit_2(tmp_path, scenes_dir, read_only_dir, cli_error, case):
    args, named = _bad_train_settings(case, tmp_path, scenes_dir, read_only_dir)
    line = cli_error(2, "dalib.train", *args, env={"DALIB_DATA": str(tmp_path / "data")})
    assert line.startswith("dalib.train: error: ") and all(n in line for n in named), line
    assert not (tmp_path / "run" / "result.json").exists()


def test_cli_boolean_flags_accept_only_boolean_words(tmp_path, scenes_dir, cli_error):
    line = cli_error(2, "dalib.train", *cli(scenes_dir, tmp_path / "run", 2, resume="treu"))
    assert "--resume" in line and "'treu'" in line
    assert not (tmp_path / "run").exists()  # nothing ran
    for word, value in (("off", False), ("No", False), ("0", False), ("YES", True), ("on", True), ("1", True)):
        assert config_from_args(cli(scenes_dir, tmp_path / "run", 2, resume=word)).resume is value
    with pytest.raises(ValueError, match="TrainConfig.resume='treu'; expected true or false"):
        TrainConfig(resume="treu").validate()  # a YAML string is not a boolean either

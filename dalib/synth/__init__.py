"""Synthetic data engine: procedural 3D scenes with exact depth, and sensor-label simulation.

Taught in notebook 00_depth_data. Quick start:

    from dalib.synth.engine import generate, iter_generate, render_scenes
    from dalib.synth.sensor import simulate_sensor
    out = generate("indoor", 8, seed=0, height=112, width=112)            # clean synthetic domain
    real = generate("outdoor", 8, seed=0, height=112, width=112, style="photo")  # camera-like proxy
    stereo = simulate_sensor(out["depth"], out["material"], "stereo", np.random.default_rng(0),
                             apparent_depth=out["apparent_depth"])
    for part in iter_generate("indoor", 10_000, seed=0, height=112, width=112, workers=2):
        ...  # chunks of a few dozen samples: write them to a shard; memory stays flat

Sample i depends only on (kind, style, seed, index): shards built with `start_index` concatenate to
exactly the same data as one big call. Explicit scenes (for analytic checks) render with
`render_scenes([Scene().look(...).add_sphere(...)], H, W)`.

Modules: `scenes` (scene descriptions), `samplers` (random indoor / outdoor scenes), `batch` (scenes packed into tensors), `intersect`
(ray / primitive hits and culling), `render` (surfaces, shading, the full render),
`textures` (procedural + bundled-photo texture atlas), `style` (clean / photo appearance),
`sensor` (stereo / LiDAR / RGB-D label simulation), `engine` (`generate`, chunked and deterministic).
"""

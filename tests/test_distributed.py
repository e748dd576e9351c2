"""dalib.distributed: device resolution and the notebooks' device line."""
import pytest
import torch

from dalib.distributed import dist_env, notebook_device, resolve_device


def test_dist_env_defaults(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert dist_env() == (0, 1, 0)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert dist_env() == (3, 4, 1)


def test_notebook_device_is_the_training_choice_and_sets_threads(monkeypatch):
    before = torch.get_num_threads()
    try:
        dev = notebook_device(1)
        assert torch.get_num_threads() == 1
        assert dev == resolve_device("auto", mps=False)
        assert dev.type == ("cuda" if torch.cuda.is_available() else "cpu")
        notebook_device(0)  # 0 keeps what is set
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError, match="num_threads"):
        notebook_device(-1)


def test_notebook_device_never_picks_mps(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    if getattr(torch.backends, "mps", None) is not None:
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert notebook_device() == torch.device("cpu")

"""dalib.hub: the cache first (laid out as huggingface_hub writes it), then the network, else one clear error."""
import hashlib

import pytest

import dalib.hub
from dalib.hub import HubFileError, download_command, hub_cache_dir, hub_file, hub_url

REPO, FILE, REV = "example-org/tiny-depth", "data/test-00000.parquet", "0123456789abcdef0123456789abcdef01234567"


def _cached(cache, repo=REPO, filename=FILE, rev=REV, data=b"parquet bytes", repo_type="dataset"):
    """A file in a hub cache laid out as huggingface_hub writes it (snapshots/<rev>/<file>, refs/)."""
    root = cache / f"{repo_type}s--{repo.replace('/', '--')}"
    path = root / "snapshots" / rev / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(rev)
    return path


@pytest.fixture
def network(monkeypatch):
    """Record every hub call; calls that would use the network fail as if it were down."""
    calls, real = [], dalib.hub.hf_hub_download

    def fake(repo_id, filename, **kw):
        calls.append(kw.get("local_files_only", False))
        if kw.get("local_files_only"):
            return real(repo_id, filename, **kw)
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr(dalib.hub, "hf_hub_download", fake)
    return calls


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path):
    for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HUGGINGFACE_HUB_CACHE", "HF_HOME"):
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub-cache"))


def test_a_cached_file_is_returned_without_the_network(tmp_path, network):
    want = _cached(tmp_path / "hub-cache")
    got = hub_file(REPO, FILE, REV, repo_type="dataset")
    assert got.read_bytes() == want.read_bytes() and network == [True]  # only the local lookup


def test_hf_home_is_respected_when_no_cache_folder_is_named(tmp_path, monkeypatch, network):
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    assert hub_cache_dir() == tmp_path / "hf-home" / "hub"
    _cached(tmp_path / "hf-home" / "hub")
    assert hub_file(REPO, FILE, REV, repo_type="dataset").is_file()


def test_offline_and_not_cached_fails_with_the_command_that_fetches_it(tmp_path, monkeypatch, network):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubFileError) as e:
        hub_file(REPO, FILE, REV, repo_type="dataset")
    msg = str(e.value)
    for part in (REPO, FILE, REV, str(tmp_path / "hub-cache"), "offline",
                 f"hf download {REPO} {FILE} --repo-type dataset --revision {REV}"):
        assert part in msg, part
    assert network == [True]  # offline: the network is never asked


def test_a_failing_download_names_the_error_and_the_command(network):
    with pytest.raises(HubFileError, match=r"download failed: ConnectionError: Name or service not known.*hf download"):
        hub_file(REPO, FILE, REV, repo_type="dataset")
    assert network == [True, False]  # cache first, then the network


def test_a_download_lands_in_the_cache_and_is_found_there_next_time(tmp_path, monkeypatch):
    def fake(repo_id, filename, **kw):
        if kw.get("local_files_only"):
            raise FileNotFoundError("not cached")
        return str(_cached(kw["cache_dir"], repo_id, filename, kw["revision"], repo_type=kw["repo_type"]))

    monkeypatch.setattr(dalib.hub, "hf_hub_download", fake)
    assert hub_file(REPO, FILE, REV, repo_type="dataset").read_bytes() == b"parquet bytes"


def test_sha256_is_checked_when_given(tmp_path, network):
    _cached(tmp_path / "hub-cache", data=b"abc")
    good = hashlib.sha256(b"abc").hexdigest()
    assert hub_file(REPO, FILE, REV, repo_type="dataset", sha256=good).is_file()
    with pytest.raises(HubFileError, match=f"has sha256 {good}, expected 0+; delete it"):
        hub_file(REPO, FILE, REV, repo_type="dataset", sha256="0" * 64)


@pytest.mark.parametrize("args, match", [
    ((REPO, FILE, "main"), "revision 'main' is not a full 40-hex commit hash"),
    ((REPO, FILE, REV[:7]), "is not a full 40-hex commit hash"),
    (("no-owner", FILE, REV), "expected 'owner/name'"),
])
def test_malformed_references_are_named(args, match):
    with pytest.raises(ValueError, match=match):
        hub_file(*args)


def test_models_and_datasets_get_their_own_command_and_address():
    assert download_command("o/m", "w.pth", REV) == f"hf download o/m w.pth --revision {REV}"
    assert hub_url(REPO, FILE, REV, "dataset") == f"hf://datasets/{REPO}@{REV}/{FILE}"
    with pytest.raises(ValueError, match="repo_type 'space'"):
        hub_file("o/m", "w.pth", REV, repo_type="space")

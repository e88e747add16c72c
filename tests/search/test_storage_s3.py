"""Run folders on an S3-compatible server: moto's local S3 server (``moto[server]``, a ``[dev]``
dependency), reached through the standard ``AWS_ENDPOINT_URL`` (read by pyarrow, which both our
sync and Ray Tune's storage use). A search writes ``s3://bucket/runs/<name>``; ``rts report``
and ``rts analyze`` read it back and print what they print for the local folder."""

from __future__ import annotations

import socket

import pandas as pd
import pytest

import rts.search.engine.storage as storage
from rts.cli import main
from rts.search.config.convert import load_config
from rts.search.results.pipeline import run_search
from tests.search.fake_trial import FakeTrial
from tests.search.tiny import TINY_FAKE_GRID

ray = pytest.importorskip("ray")
moto_server = pytest.importorskip("moto.server", reason="moto[server] (the [dev] extra)")


@pytest.fixture
def s3(monkeypatch):
    """A moto S3 server on a free local port with the bucket ``bucket``; its endpoint in the
    environment (credentials are moto's test ones)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
    }.items():
        monkeypatch.setenv(key, value)
    import boto3

    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="bucket")
    yield endpoint
    server.stop()


@pytest.mark.slow
def test_search_writes_to_s3_and_report_reads_it_back(s3, local_ray, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(storage.STAGING_ENV, str(tmp_path / "staging"))
    cfg = load_config(None, ["name=s3run", *TINY_FAKE_GRID, "stage2.top_k=1"])
    uri = "s3://bucket/runs"
    out = run_search(cfg, storage=uri, trial_fn=FakeTrial())
    assert out.paths.remote == "s3://bucket/runs/s3run"
    import pyarrow.fs as pafs

    fs, base = pafs.FileSystem.from_uri(out.paths.remote)
    names = {i.base_name for i in fs.get_file_info(pafs.FileSelector(base, recursive=True))}
    assert {"trials.parquet", "summary.md", "config.yaml", "images.parquet"} <= names
    with fs.open_input_file(f"{base}/trials.parquet") as fh:
        remote = pd.read_parquet(fh)
    pd.testing.assert_frame_equal(remote, out.trials)

    # a fresh "machine": another staging folder, reading the run only from S3
    monkeypatch.setenv(storage.STAGING_ENV, str(tmp_path / "other"))
    capsys.readouterr()
    assert main(["report", out.paths.remote, "--resamples", "99"]) == 0
    staged = storage.staging_dir(uri, "s3run")
    assert (staged / "report" / "report.html").is_file()
    assert main(["report", str(out.paths.root), "--resamples", "99"]) == 0
    capsys.readouterr()
    a = (staged / "report" / "summary.md").read_text().replace(str(staged), "RUN")
    b = (out.paths.root / "report" / "summary.md").read_text().replace(str(out.paths.root), "RUN")
    assert a == b

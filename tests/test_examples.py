"""The cluster recipes under examples/ parse, and the commands they run are valid rts commands."""

from __future__ import annotations

import shlex
from pathlib import Path

import yaml

from rts.cli import build_parser
from rts.search.config.convert import load_config

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "examples" / "cluster"


def _check_rts_command(line: str) -> None:
    argv = shlex.split(line)
    assert argv[0] == "rts"
    args, extra = build_parser().parse_known_args(argv[1:])
    assert not [e for e in extra if "=" not in e]
    assert args.command == "search" and args.address == "auto"
    assert args.storage.startswith("s3://")
    overrides = [*args.overrides, *extra]
    load_config(ROOT / args.config, overrides, check=False)  # the config and keys exist


def test_rayjob_manifest_runs_rts_search_on_shared_storage():
    job = yaml.safe_load((CLUSTER / "rayjob.yaml").read_text())
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    _check_rts_command(job["spec"]["entrypoint"])
    workers = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    assert workers[0]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]


def test_cluster_launcher_config_installs_rts_on_every_node():
    cfg = yaml.safe_load((CLUSTER / "ray-cluster.yaml").read_text())
    assert cfg["head_node_type"] in cfg["available_node_types"]
    assert any("pip install" in c and "rts" in c for c in cfg["setup_commands"])
    header = (CLUSTER / "ray-cluster.yaml").read_text().split("cluster_name")[0]
    line = header.split("'cd rts && ")[1].split("'")[0].replace("\\\n#", " ")
    _check_rts_command(" ".join(line.split()))

"""Options of a run that change no result: per-stage resources, trackers, Ray's logs, dashboard
and environment, ``-v`` on either side of the subcommand. No Ray is started here."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest

from rts.cli.main import build_parser, main, parse_args
from rts.search.config.convert import diff_configs, dump_config, load_config, read_yaml
from rts.search.config.schema import ConfigError, MlflowConfig, stage_resources
from rts.search.engine.plan import format_plan, plan_search
from rts.search.engine.session import check_dashboard, ray_init_kwargs


def test_stage_resources_override_the_top_level_block_field_by_field():
    cfg = load_config(
        None,
        [
            "resources.cpus_per_trial=2",
            "resources.gpus_per_trial=1",
            "resources.max_concurrent=8",
            "stage1.resources.gpus_per_trial=0.25",
            "stage2.resources.max_concurrent=2",
        ],
    )
    s1, s2 = stage_resources(cfg, 1), stage_resources(cfg, 2)
    assert (s1.cpus_per_trial, s1.gpus_per_trial, s1.max_concurrent) == (2, 0.25, 8)
    assert (s2.cpus_per_trial, s2.gpus_per_trial, s2.max_concurrent) == (2, 1, 2)
    assert stage_resources(load_config(None), 1) == load_config(None).resources
    plan = format_plan(cfg, plan_search(cfg))
    assert (
        "stage 1 2 CPU and 0.25 GPU per trial, at most 8 at once; stage 2 2 CPU and 1 GPU" in plan
    )


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("stage2.resources.cpus_per_trial=0", "stage2.resources.cpus_per_trial: must be > 0"),
        ("stage1.resources.gpus_per_trial=1.5", "stage1.resources.gpus_per_trial: above 1"),
        ("stage1.resources.max_concurrent=0", "stage1.resources.max_concurrent: must be >= 1"),
        ("stage1.resources.device=cpu", "stage1.resources.device: unknown key; choose from"),
        ("tracking.mlflow.experiment=''", "tracking.mlflow.experiment: must not be empty"),
        ("tracking.tensorboard=maybe", "tracking.tensorboard: expected true or false"),
        ("tracking.neptune={}", "tracking.neptune: unknown key; choose from tensorboard, mlflow"),
    ],
)
def test_bad_stage_resources_and_tracking_name_their_path(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_config(None, [override])


def test_resources_and_tracking_may_change_on_resume_and_round_trip(tmp_path):
    a = load_config(None)
    b = load_config(
        None,
        [
            "stage1.resources.gpus_per_trial=0.5",
            "stage2.resources.cpus_per_trial=4",
            "tracking.tensorboard=false",
            "tracking.mlflow.tracking_uri=file:///tmp/mlruns",
            "tracking.wandb.project=p",
        ],
    )
    assert diff_configs(a, b) == []
    assert b.tracking.mlflow == MlflowConfig(tracking_uri="file:///tmp/mlruns")
    path = tmp_path / "config.yaml"
    path.write_text(dump_config(b))
    assert load_config(path) == load_config(path)
    assert read_yaml(path)["tracking"]["wandb"] == {"project": "p", "group": None}
    assert load_config(None, ["tracking.mlflow={}"]).tracking.mlflow == MlflowConfig()


def test_a_tracker_without_its_package_is_a_one_line_error(monkeypatch):
    pytest.importorskip("ray")
    from rts.search.engine import tracking

    monkeypatch.setitem(tracking.EXTRAS, "mlflow", "rts_no_such_package")
    cfg = load_config(None, ["tracking.mlflow.tracking_uri=file:///tmp/x"])
    with pytest.raises(ConfigError, match=r'tracking.mlflow: .* pip install "robust-task-search\['):
        tracking.check_trackers(cfg.tracking)
    tracking.check_trackers(load_config(None).tracking)  # no tracker asked for: nothing needed


def test_rts_search_exits_2_when_a_tracker_is_missing(monkeypatch, tmp_path, capsys):
    pytest.importorskip("ray")
    from rts.search.engine import tracking

    monkeypatch.setitem(tracking.EXTRAS, "wandb", "rts_no_such_package")
    code = main(["search", "configs/quickstart.yaml", "tracking.wandb.project=p"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rts: error: tracking.wandb: ") and "\n" not in err
    assert "[wandb]" in err


def test_tensorboard_false_writes_nothing(tmp_path):
    pytest.importorskip("ray")
    from rts.search.engine.tracking import TensorBoardCallback, tracking_callbacks

    off = tracking_callbacks(
        load_config(None, ["tracking.tensorboard=false"]).tracking, "r", tmp_path, 1
    )
    assert [type(c) for c in off] == [TensorBoardCallback] and off[0].root is None
    trial = SimpleNamespace(trial_id="t1", experiment_tag="1_x", config={})
    off[0].log_trial_result(1, trial, {"epoch": 1, "vuln": 0.5})
    off[0].log_trial_end(trial)
    assert not list(tmp_path.iterdir())
    on = tracking_callbacks(load_config(None).tracking, "r", tmp_path, 2, first=0)[0]
    assert on.folder(trial) == tmp_path / "stage2" / "s2-0002"


def test_ray_init_arguments_for_logs_and_dashboard():
    local = ray_init_kwargs(None, 2)
    assert local["address"] == "local" and local["num_cpus"] == 2
    assert local["log_to_driver"] is False and local["include_dashboard"] is False
    loud = ray_init_kwargs(None, None, worker_logs=True, dashboard=True)
    assert loud["log_to_driver"] is True and loud["include_dashboard"] is True
    joined = ray_init_kwargs("ray://head:10001", None, worker_logs=True, dashboard=True)
    assert joined["address"] == "ray://head:10001" and joined["log_to_driver"] is True
    assert "include_dashboard" not in joined and "num_cpus" not in joined


def test_dashboard_without_its_packages_is_a_config_error(monkeypatch):
    pytest.importorskip("ray")
    monkeypatch.setitem(sys.modules, "ray.dashboard.optional_deps", None)  # import fails
    with pytest.raises(ConfigError, match=r"--dashboard: .*ray\[default\]"):
        check_dashboard()


@pytest.mark.parametrize(
    ("argv", "verbose"),
    [
        (["search", "c.yaml"], 0),
        (["-v", "search", "c.yaml"], 1),
        (["search", "-v", "c.yaml"], 1),
        (["search", "c.yaml", "-v", "a.b=1"], 1),
        (["-v", "search", "-v", "c.yaml"], 2),
        (["report", "-vv", "runs/x"], 2),
    ],
)
def test_verbose_counts_before_and_after_the_subcommand(argv, verbose):
    args = parse_args(build_parser(), argv)
    assert args.verbose == verbose
    if args.command == "search":
        assert args.config == "c.yaml" and args.dashboard is False


def test_rts_search_passes_worker_logs_and_dashboard_to_the_search(monkeypatch, capsys):
    pytest.importorskip("ray")
    from rts.search.engine.experiment import SearchInterrupted
    from rts.search.results import pipeline

    seen = {}

    def fake_run_search(cfg, **kw):
        seen.update(kw)
        raise SearchInterrupted("stopped by the test")

    monkeypatch.setattr(pipeline, "run_search", fake_run_search)
    assert main(["search", "-v", "configs/quickstart.yaml", "--dashboard"]) == 130
    assert seen["worker_logs"] is True and seen["dashboard"] is True
    assert main(["search", "configs/quickstart.yaml"]) == 130
    assert seen["worker_logs"] is False and seen["dashboard"] is False

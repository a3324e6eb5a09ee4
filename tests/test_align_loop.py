"""The loop's parts on their own: when it logs, evaluates and saves, what a metrics record holds, pooling parsed
once."""

from __future__ import annotations

import dataclasses

import pytest

import afp_cli.align.config as config_module
from afp_cli.align.config import MCLConfig, TrainConfig, build_config
from afp_cli.align.train import MetricsWindow, MicroBatchResult, Schedule
from afp_cli.model.pooling import Pooling
from afp_cli.typed_yaml import ConfigValueError


def steps_where(predicate, max_steps: int) -> list[int]:
    return [step for step in range(1, max_steps + 1) if predicate(step)]


def test_the_schedule_logs_evaluates_and_saves_at_its_steps_and_always_at_the_end():
    schedule = Schedule(TrainConfig(max_steps=10, log_every=4, eval_every=3, save_every=5))
    assert steps_where(schedule.evaluates, 10) == [3, 6, 9]  # not 10: the final step is evaluated after the loop
    assert steps_where(schedule.logs, 10) == [3, 4, 6, 8, 9, 10]  # every evaluation is logged with its record
    assert steps_where(schedule.saves, 10) == [5, 10]


def test_a_schedule_of_zeros_evaluates_never_and_saves_only_at_the_end():
    schedule = Schedule(TrainConfig(max_steps=4, log_every=10, eval_every=0, save_every=0))
    assert steps_where(schedule.evaluates, 4) == []
    assert steps_where(schedule.logs, 4) == [4]
    assert steps_where(schedule.saves, 4) == [4]


def window_for(mcl_weight: float, cit_weight: float) -> MetricsWindow:
    config = build_config(
        {
            "model": {"name_or_path": "x"},
            "data": {"train_file": "x"},
            "mcl": {"weight": mcl_weight},
            "cit": {"weight": cit_weight},
        }
    )
    return MetricsWindow(config, "cpu")


def test_a_metrics_record_holds_the_mean_of_the_window_and_reset_empties_it():
    window = window_for(1.0, 1.5)
    window.add(MicroBatchResult(total=4.0, mcl=1.0, cit=2.0, tokens=30))
    window.add(MicroBatchResult(total=6.0, mcl=2.0, cit=3.0, tokens=50))
    record = window.record(step=7, lr=1e-4)
    assert list(record) == ["step", "loss", "lr", "tokens_per_s", "mcl", "cit"]
    assert (record["step"], record["loss"], record["lr"], record["mcl"], record["cit"]) == (7, 5.0, 1e-4, 1.5, 2.5)
    assert record["tokens_per_s"] > 0
    window.reset()
    window.add(MicroBatchResult(total=1.0, mcl=0.0, cit=1.0, tokens=10))
    assert window.record(step=8, lr=1e-4)["loss"] == 1.0


def test_a_metrics_record_leaves_out_the_objective_that_is_off():
    window = window_for(0.0, 1.5)
    window.add(MicroBatchResult(total=3.0, mcl=0.0, cit=2.0, tokens=10))
    assert list(window.record(step=1, lr=1e-4)) == ["step", "loss", "lr", "tokens_per_s", "cit"]


def test_pooling_is_parsed_once_and_stays_out_of_the_fields(monkeypatch):
    calls = []
    real = config_module.parse_pooling
    monkeypatch.setattr(config_module, "parse_pooling", lambda spec: calls.append(spec) or real(spec))
    mcl = MCLConfig(pooling="avg-3")
    assert mcl.pooled == mcl.pooled == Pooling("avg", 3) and calls == ["avg-3"]
    assert {"pooled", "requested_pooling"}.isdisjoint(item.name for item in dataclasses.fields(mcl))
    assert dataclasses.asdict(mcl)["pooling"] == "avg-3" and "pooled" not in dataclasses.asdict(mcl)


def test_a_bad_pooling_is_still_refused_by_name():
    with pytest.raises(ConfigValueError, match="'first-1' is not one of"):
        MCLConfig(pooling="first-1")

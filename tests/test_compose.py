"""mibench.compose.parsed_once: each YAML file parsed once per process while composing, and the same configs."""
from __future__ import annotations

import time

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from mibench.compose import _PARSED, CONF_DIR, parsed_once


@pytest.fixture
def hydra_at():
    def init(path):
        GlobalHydra.instance().clear()
        return initialize_config_dir(config_dir=str(path), version_base="1.3")
    yield init
    GlobalHydra.instance().clear()


@pytest.mark.parametrize("overrides", [[], ["experiment=poole_fig2"], ["benchmark=dim", "estimator=js"],
                                       ["experiment=remine_table2", "benchmark=slb"], ["hardware=slurm_cpu"]])
def test_the_same_config_as_hydra_parsing_every_file(overrides, hydra_at):
    with hydra_at(CONF_DIR):
        want = OmegaConf.to_container(compose("config", overrides=overrides, return_hydra_config=True))
        with parsed_once():
            first = OmegaConf.to_container(compose("config", overrides=overrides, return_hydra_config=True))
            again = OmegaConf.to_container(compose("config", overrides=overrides, return_hydra_config=True))
    assert first == want and again == want


def test_a_changed_file_is_parsed_again_and_nothing_leaks(tmp_path, hydra_at):
    (tmp_path / "g").mkdir()
    (tmp_path / "config.yaml").write_text("defaults:\n  - g: a\n  - _self_\nx: 1\n")
    (tmp_path / "g" / "a.yaml").write_text("v: 1\n")
    with hydra_at(tmp_path), parsed_once():
        one = compose("config")
        one.g.v = 99  # a change to one composed config reaches no later one
        assert compose("config").g.v == 1
        time.sleep(0.01)
        (tmp_path / "g" / "a.yaml").write_text("v: 22\n")
        assert compose("config").g.v == 22
        assert compose("config", overrides=["g.v=5"]).g.v == 5
    assert sum(k[0] == str((tmp_path / "g" / "a.yaml").resolve()) for k in _PARSED) == 2  # parsed once per version

"""Options declared once: the settings dataclasses' fields are the command-line options."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields

import pytest

from genrec.errors import DataError
from genrec.evaluation.config import EvalConfig
from genrec.options import add_options, option, options_from_args
from genrec.training.config import TrainConfig


def parser_for(cls) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(exit_on_error=False)
    add_options(p, cls)
    return p


@pytest.mark.parametrize("cls, given", [(TrainConfig, {}), (EvalConfig, {"dataset": "d", "methods": ["pop"]})])
def test_no_options_given_is_the_dataclass_defaults(cls, given):
    assert options_from_args(cls, parser_for(cls).parse_args([]), **given) == cls(**given)


def test_each_option_sets_its_field():
    args = parser_for(TrainConfig).parse_args(
        ["--lr", "3e-4", "--max-steps", "7", "--no-group-by-length", "--lora", "--samples-per-user", "0",
         "--max-batch-tokens", "0", "--teacher", "markov", "--drop-layers", "2-4"]
    )  # fmt: skip
    config = options_from_args(TrainConfig, args)
    assert (config.learning_rate, config.max_steps, config.group_by_length, config.lora) == (3e-4, 7, False, True)
    assert config.samples_per_user is None and config.max_batch_tokens is None  # 0: no limit
    assert (config.teacher, config.drop_layers) == ("markov", "2-4")
    args = parser_for(EvalConfig).parse_args(["-k", "15", "--rerank-grid", "0,0.5,1", "--history-grid", "5,10",
                                              "--prior-aggregations", "max", "--dtype", "bfloat16"])  # fmt: skip
    config = options_from_args(EvalConfig, args, dataset="d", methods=["genrec"])
    assert (config.k, config.rerank_grid, config.history_grid) == (15, (0.0, 0.5, 1.0), (5, 10))
    assert (config.prior_aggregations, config.dtype) == (("max",), "bfloat16")


def test_bad_input_is_refused_naming_the_option():
    with pytest.raises(DataError, match=r"--prior-grid takes comma-separated numbers, got '0,half'"):
        options_from_args(EvalConfig, parser_for(EvalConfig).parse_args(["--prior-grid", "0,half"]), dataset="d", methods=[])
    with pytest.raises(argparse.ArgumentError, match="not allowed with argument"):
        parser_for(TrainConfig).parse_args(["--epochs", "2", "--max-steps", "3"])
    with pytest.raises(argparse.ArgumentError, match="invalid choice"):
        parser_for(TrainConfig).parse_args(["--mode", "sideways"])
    with pytest.raises(DataError, match="EvalConfig needs dataset, methods"):
        options_from_args(EvalConfig, parser_for(EvalConfig).parse_args([]))


def test_a_new_setting_is_one_field():
    @dataclass
    class Settings:
        width: int = option(3, "how wide")
        names: tuple[str, ...] = option(("a", "b"), "which")
        quiet: bool = option(False, "say less")
        internal: float = 0.5

    p = parser_for(Settings)
    flags = {a.option_strings[0] for a in p._actions if a.option_strings and a.dest != "help"}
    assert flags == {"--width", "--names", "--quiet"}  # a field without option() is no option
    assert options_from_args(Settings, p.parse_args(["--width", "4", "--names", "c", "--quiet"])) == Settings(4, ("c",), True)
    assert [f.name for f in fields(Settings)] == ["width", "names", "quiet", "internal"]

"""The ``scratchllm`` command line on jsonargparse: spellings, YAML configs, --print-config, errors, speed."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest

from scratchllm.cli import COMMANDS, build_parser, main, parse_command
from scratchllm.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "tiny-cpu.yaml")


def _paths(table=COMMANDS, prefix=()):
    for name, entry in table.items():
        if isinstance(entry, dict):
            yield from _paths(entry, (*prefix, name))
        else:
            yield (*prefix, name)


def kwargs_of(*argv: str) -> dict:
    return parse_command(list(argv))[1]


def one_line_error(argv, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("scratchllm: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_module_help_lists_every_subcommand_without_importing_torch():
    code = (
        "import sys, runpy\n"
        "sys.argv = ['scratchllm', '--help']\n"
        "try:\n    runpy.run_module('scratchllm', run_name='__main__')\n"
        "except SystemExit as exc:\n    assert exc.code == 0, exc.code\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    for name in COMMANDS:
        assert name in out
    assert out.rstrip().endswith("NO-TORCH")
    for argv in (["pretrain", "--help"], ["generate", "--help"], ["prepare", "--help"]):
        code = code.replace("['scratchllm', '--help']", repr(["scratchllm", *argv]))
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        assert out.rstrip().endswith("NO-TORCH"), argv


def test_every_subcommand_has_help_from_its_docstring(capsys):
    for path in _paths():
        with pytest.raises(SystemExit) as exit_info:
            main([*path, "--help"])
        assert exit_info.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith("usage: scratchllm") and f" {path[-1]} [--config CONFIG]" in out
    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    out = capsys.readouterr().out
    assert "peak learning rate, reached at the end of warmup" in out  # from TrainConfig's docstring
    with pytest.raises(SystemExit):
        main(["prepare", "--help"])
    assert "drop documents shorter than this many characters" in capsys.readouterr().out  # data.prepare's


def test_version_and_console_script(capsys):
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.startswith("scratchllm ")
    target = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]["scratchllm"]
    module, _, name = target.partition(":")
    assert getattr(__import__(module, fromlist=[name]), name) is main
    assert build_parser().prog == "scratchllm"


def test_old_spellings_and_jsonargparse_spellings_agree():
    old = kwargs_of(
        "generate", "--model", "m", "--prompt", "p", "--max-new-tokens", "5", "--no-cache", "--stream", "--top-k", "3"
    )
    new = kwargs_of(
        "generate", "--model", "m", "--prompt", "p", "--max_new_tokens=5", "--cache", "false", "--stream=true",
        "--top_k", "3",
    )  # fmt: skip
    assert old == new
    assert (old["max_new_tokens"], old["cache"], old["stream"], old["top_k"]) == (5, False, True, 3)
    lists = kwargs_of("pretrain", "--data.dirs", "a", "b", "--data.weights", "1", "3")
    assert kwargs_of("pretrain", "--data.dirs", "[a, b]", "--data.weights=[1, 3]") == lists
    assert lists["data"].dirs == [Path("a"), Path("b")] and lists["data"].weights == [1.0, 3.0]
    flags = kwargs_of("pretrain", "--data.dirs", "a", "--train.compile", "--no-train.skip-nonfinite", "--resume")
    assert flags["train"].compile is True and flags["train"].skip_nonfinite is False and flags["resume"] is True
    # a bare word where the command allows one, and the flag
    assert kwargs_of("download", "the-verdict", "--force")["name"] == "the-verdict"
    assert kwargs_of("download", "--name", "the-verdict")["name"] == "the-verdict"
    # list values that look like options or hold spaces and quotes survive
    words = kwargs_of("demo", "--prompts", "I had", 'She "said"', "--max-new-tokens", "3")
    assert words["prompts"] == ["I had", 'She "said"'] and words["max_new_tokens"] == 3
    # a group's fields spelled flat, as LoRA flags usually are (--lora-rank for --lora.rank)
    base = ("finetune", "classify", "--model", "m", "--data", "d")
    flat = kwargs_of(*base, "--lora-rank", "8", "--lora-alpha", "32", "--lora-targets", "q_proj", "v_proj")
    dotted = kwargs_of(*base, "--lora.rank", "8", "--lora.alpha", "32", "--lora.targets", "[q_proj, v_proj]")
    assert flat == dotted and (flat["lora"].rank, flat["lora"].alpha, flat["lora"].targets) == (8, 32, ["q_proj", "v_proj"])


def test_precedence_default_then_yaml_then_flag(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("data:\n  dirs: [x]\ntrain:\n  lr: 3.0e-3\n  max_steps: 7\nout_dir: runs/y\n")
    got = kwargs_of("pretrain", "--config", str(cfg), "--train.max-steps", "9")
    assert got["train"].lr == 3e-3  # YAML beats the default
    assert got["train"].max_steps == 9  # the flag beats YAML
    assert got["train"].warmup_steps == TrainConfig().warmup_steps  # untouched: the dataclass default
    assert got["out_dir"] == Path("runs/y") and got["data"].dirs == [Path("x")]


def test_print_config_replays_to_the_same_arguments(tmp_path, capsys):
    argv = ["pretrain", "--config", TINY, "--data.dirs", "a", "b", "--train.lr", "3e-4", "--no-train.compile"]
    argv += ["--model.n-layers", "2", "--out-dir", "runs/z", "--resume"]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--print-config"])
    assert exit_info.value.code == 0
    saved = tmp_path / "saved.yaml"
    saved.write_text(capsys.readouterr().out)
    assert "lr: 0.0003" in saved.read_text()
    assert kwargs_of("pretrain", "--config", str(saved)) == kwargs_of(*argv)


def test_parse_errors_and_bad_configs_are_one_line_naming_the_field(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  learning_rate: 0.1\n")
    assert "train.learning_rate" in one_line_error(["pretrain", "--config", str(bad), "--data.dirs", "a"], capsys)
    bad.write_text("train:\n  lr: fast\n")
    err = one_line_error(["pretrain", "--config", str(bad), "--data.dirs", "a"], capsys)
    assert "train.lr" in err and "fast" in err
    bad.write_text("model:\n  preset: gpt5\n")
    assert "model.preset: unknown preset 'gpt5'" in one_line_error(
        ["pretrain", "--config", str(bad), "--data.dirs", "a"], capsys
    )
    bad.write_text("model: [\n")
    assert "bad.yaml:2: invalid YAML" in one_line_error(["pretrain", "--config", str(bad)], capsys)
    assert "nope.yaml: config file not found" in one_line_error(["pretrain", "--config", "nope.yaml"], capsys)
    assert "train.max_steps" in one_line_error(["pretrain", "--data.dirs", "a", "--train.max-steps", "x"], capsys)
    assert "errors\": Expected one of 'strict', 'replace'. Got value: bogus" in one_line_error(
        ["tokenizer", "train", "--input", "a", "--vocab-size", "300", "--out", "o", "--errors", "bogus"], capsys
    )
    assert "tokenizer" in one_line_error(["prepare", "--input", "a"], capsys)  # required flags are named
    assert "bogus" in one_line_error(["bogus"], capsys)
    assert "--bogus" in one_line_error(["generate", "--model", "m", "--prompt", "p", "--bogus", "1"], capsys)
    assert "data.dirs: give at least one" in one_line_error(["pretrain"], capsys)  # a ScratchLLMError


def test_cli_defaults_are_the_library_defaults():
    """Where the command forwards to a library function, the defaults come from that function's signature."""
    from scratchllm.data.download import download
    from scratchllm.data.prepare import prepare
    from scratchllm.recipes.demo import demo
    from scratchllm.recipes.pretrain import pretrain
    from scratchllm.tokenizer.bpe_train import train_bpe

    def defaults(func, skip=()):
        return {
            name: p.default
            for name, p in inspect.signature(func).parameters.items()
            if p.default is not inspect.Parameter.empty and name not in skip
        }

    got = kwargs_of("prepare", "--input", "x", "--tokenizer", "t", "--out", "o")
    assert {k: got[k] for k in defaults(prepare)} == defaults(prepare)
    got = kwargs_of("tokenizer", "train", "--input", "x", "--vocab-size", "300", "--out", "o")
    lib = defaults(train_bpe, skip=("pattern", "progress"))  # the CLI's pattern is a name ("gpt2"); progress: on
    assert {k: got[k] for k in lib} == {k: (list(v) if isinstance(v, tuple) else v) for k, v in lib.items()}
    got = kwargs_of("download", "x")
    assert {k: got[k] for k in defaults(download)} == defaults(download)
    # pretrain and demo are the recipes' own functions: one declaration
    assert parse_command(["pretrain", "--data.dirs", "a"])[0] is pretrain
    func, got = parse_command(["demo"])
    assert func is demo and got == defaults(demo)


def test_adding_a_command_is_one_line(monkeypatch, capsys):
    def hello(who: str, times: int = 1, shout: bool = False) -> dict:
        """Say hello.

        Args:
            who: whom to greet.
            times: how often.
            shout: in capitals.
        """
        text = f"hello {who}" * times
        return {"said": text.upper() if shout else text}

    monkeypatch.setitem(COMMANDS, "hello", hello)
    assert main(["hello", "--who", "you", "--shout"]) == 0
    assert '"said": "HELLO YOU"' in capsys.readouterr().out  # a returned mapping is printed as JSON

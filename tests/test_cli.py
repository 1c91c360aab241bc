"""The command line teaches: every verb's help ends with examples, every option says its default and
choices; an unknown ``--set`` key names ``--set`` and the nearest known key; the console stays quiet."""

import argparse
import os
import subprocess
import sys

import pytest

from mammo_seg.cli import build_parser
from mammo_seg.config import load_config
from mammo_seg.errors import MammoError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "experiments", "tiny.yaml")


def parsers(parser, name="mammo"):
    """(name, parser) of every verb and dataset below ``parser``."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for verb, sub in action.choices.items():
                yield f"{name} {verb}", sub
                yield from parsers(sub, f"{name} {verb}")


def test_every_verb_has_examples_and_every_option_its_default_and_choices():
    found = dict(parsers(build_parser()))
    assert sorted(n for n in found if n.count(" ") == 1) == [
        "mammo demo", "mammo evaluate", "mammo export", "mammo inspect", "mammo predict", "mammo prep",
        "mammo study", "mammo synth", "mammo train"]
    for name, parser in found.items():
        text = parser.format_help()
        examples = text.split("\nexamples:\n")
        assert len(examples) == 2, name
        lines = examples[1].strip().splitlines()
        assert 1 <= len(lines) <= 2 and all(line.strip().startswith(name) for line in lines), (name, lines)
        for action in parser._actions:
            if action.option_strings and not isinstance(action, (argparse._HelpAction, argparse._StoreTrueAction)):
                what = f"{name} {action.option_strings[-1]}"
                assert action.help, what
                assert action.required or "default" in action.help, what
                for choice in action.choices or ():
                    assert choice in action.help, (what, choice)


@pytest.mark.parametrize("override, message", [
    ("train.epoch=2", "--set train.epoch: unknown key; did you mean train.epochs? (known: batch_size, "
                      "checkpoint, checkpoint_metric, deep_supervision, ema, epochs, freeze, init_from, jit_compile, "
                      "lr, lr_decay, lr_decay_epochs, mixed_precision, schedule, steps_per_epoch, strategy, "
                      "validation_freq, validation_steps, warmup_epochs, weight_decay)"),
    ("trian.epochs=2", "--set trian: unknown key; did you mean train? (known: cv, data, loss, model, "
                       "name, operating_point, prep, seed, stages, train)"),
    ("model.zzz=1", "--set model.zzz: unknown key"),
])
def test_an_unknown_set_key_names_set_and_the_nearest_key(override, message):
    with pytest.raises(MammoError) as error:
        load_config(TINY, [override])
    assert str(error.value).startswith(message)
    if override.startswith("model"):
        assert "did you mean" not in str(error.value)


CURRICULUM = """
name: c
data: {dir: somewhere, crop: 64}
train: {epochs: 4, batch_size: 2}
stages:
  - name: crops
  - name: whole
    train: {epochs: 2, batch_size: 1}
"""


def test_set_addresses_an_item_of_a_list_from_either_end(tmp_path):
    from mammo_seg.config import stage_configs

    path = tmp_path / "c.yaml"
    path.write_text(CURRICULUM)
    config = load_config(str(path), ["stages[-1].train.epochs=6", "stages[0].train.lr=0.5",
                                     "stages[1].data.crop=128"])
    (_, crops), (_, whole) = stage_configs(config)
    assert (crops.train.epochs, crops.train.lr, crops.data.crop) == (4, 0.5, 64)
    assert (whole.train.epochs, whole.train.batch_size, whole.data.crop) == (6, 1, 128)


@pytest.mark.parametrize("override, message", [
    ("stages[2].train.epochs=1", "--set stages[2].train.epochs: 'stages' has 2 items: no item [2]"),
    ("stages[-3].train.epochs=1", "--set stages[-3].train.epochs: 'stages' has 2 items: no item [-3]"),
    ("seed[0]=1", "--set seed[0]: 'seed' is not a list"),
    ("data.crop.x=1", "--set data.crop.x: 'data.crop' is not a mapping"),
    ("stages[1].train.epochs[0]=1", "--set stages[1].train.epochs[0]: 'stages[1].train.epochs' is not a list"),
    ("stages[x].train.epochs=1", "--set stages[x].train.epochs: 'stages[x]' is not a key or key[index]"),
    ("stages[1].train.epoch=1", "--set stages[1].train.epoch: unknown key; did you mean train.epochs?"),
])
def test_a_bad_list_item_in_set_is_one_line_naming_it(tmp_path, override, message):
    path = tmp_path / "c.yaml"
    path.write_text(CURRICULUM)
    with pytest.raises(MammoError) as error:
        load_config(str(path), [override])
    assert str(error.value).startswith(message), str(error.value)


def test_an_unknown_key_in_the_file_names_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(open(TINY).read() + "\nseeed: 3\n")
    with pytest.raises(MammoError, match=rf"^{path}: seeed: unknown key; did you mean seed\? \(known: "):
        load_config(str(path))


QUIET = """
import sys
from mammo_seg.cli import quiet_console
quiet_console({verbose})
import tensorflow as tf
tf.constant(1.0) + 1
print("imported", file=sys.stderr)
"""


@pytest.mark.slow
def test_tensorflow_start_up_lines_stay_off_the_console_unless_verbose():
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    run = subprocess.run([sys.executable, "-c", QUIET.format(verbose=False)], capture_output=True, text=True,
                         env={**env, "PYTHONPATH": ROOT}, cwd=ROOT)
    assert run.returncode == 0 and run.stderr == "imported\n", run.stderr

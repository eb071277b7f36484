"""One option table (issue #24): every option of ``r3dp generate`` and ``r3dp batch`` is defined once, in
``r3dp_core/pipeline/options.py``, and the parsers, ``GenerateRequest``, validation's range checks, the node widgets
that mirror an option and the README's option tables all read it."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from r3dp_core import cli, defaults
from r3dp_core.errors import InputError
from r3dp_core.pipeline import options as opts
from r3dp_core.pipeline.options import BATCH, GENERATE
from r3dp_core.pipeline.pose import PoseRecipe
from r3dp_core.pipeline.request import GenerateRequest, request_from_options

REPO = Path(__file__).resolve().parents[1]


def _subparser(name: str) -> argparse.ArgumentParser:
    parser = cli.build_parser()
    sub = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    return sub.choices[name]


@pytest.mark.parametrize("table", [GENERATE, BATCH], ids=lambda table: table.command)
def test_readme_option_tables_are_the_generated_ones(table):
    """README's block between ``<!-- options:COMMAND -->`` markers is exactly the table's markdown; regenerate with
    ``python -m r3dp_core.pipeline.options --update-readme``."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = opts.readme_block(readme, table.command)
    assert block is not None, f"README.md lacks the <!-- options:{table.command} --> markers"
    assert block == opts.markdown_table(table), ("README's option table drifted from r3dp_core/pipeline/options.py: "
                                                 "run `python -m r3dp_core.pipeline.options --update-readme`")
    assert opts.update_readme(readme) == readme
    rows = block.splitlines()[2:]
    shown = [option.metavar if option.positional else option.flag for option in table]
    assert len(rows) == len(shown) and all(f"`{flag}" in row for flag, row in zip(shown, rows))


def test_a_drifted_readme_block_is_noticed_and_rewritten():
    text = "intro\n<!-- options:batch -->\n| stale |\n<!-- /options:batch -->\nafter\n"
    assert opts.readme_block(text, "batch") == "| stale |"
    fixed = opts.update_readme(text)
    assert opts.readme_block(fixed, "batch") == opts.markdown_table(BATCH)
    assert fixed.startswith("intro\n") and fixed.endswith("\nafter\n")


def test_markdown_generator_command_prints_the_table(capsys):
    assert opts.main(["--markdown", "generate"]) == 0
    printed = capsys.readouterr().out
    assert printed.strip() == opts.markdown_table(GENERATE)
    assert "| `--mouth-amp` | `0.45` | 0–2 | `0.45` |" in printed
    assert "| `--camera` | `auto` |" in printed and "| `--min-face-area` | `0.2` | (0, 1] |" in printed
    assert "source \\| SECC" in printed  # a '|' in a doc is escaped, so the row keeps its five cells


@pytest.mark.parametrize(("command", "table"), [("generate", GENERATE), ("batch", BATCH)])
def test_parsers_are_built_from_the_table(command, table):
    parser = _subparser(command)
    actions = [action for action in parser._actions if action.dest != "help"]
    assert [action.dest for action in actions] == list(table.names())
    for action, option in zip(actions, table):
        assert action.help == option.doc.replace("%", "%%")
        assert action.required == (option.required or option.positional)
        assert action.choices in (None, option.choices) and (action.choices is None) == (not option.choices)
        if option.type is bool:
            assert action.default is option.default and action.nargs == 0
            assert isinstance(action, argparse.BooleanOptionalAction) == option.negatable
        elif not option.required:
            assert action.default == option.default, option.name
        if option.type in (int, float):
            assert action.type is option.type


def test_generate_help_still_prints_every_option(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["generate", "--help"])
    assert done.value.code == 0
    printed = capsys.readouterr().out
    assert all(option.flag in printed for option in GENERATE)
    assert "auto (the default" in printed and "1 % of" in printed


def test_request_defaults_are_the_tables():
    fields = {field.name: field for field in dataclasses.fields(GenerateRequest)}
    assert set(fields) == {option.name for option in GENERATE if option.request}
    for option in GENERATE:
        if option.request and not option.required:
            assert fields[option.name].default == option.default, option.name
    assert GenerateRequest(Path("a.png"), Path("b.mp4")).camera == defaults.POSE_MODE == PoseRecipe().mode == "auto"


def test_request_from_the_command_line_and_from_defaults_agree():
    args = _subparser("generate").parse_args(["--image", "p.png", "--out", "o.mp4"])
    assert request_from_options(args) == GenerateRequest(image=Path("p.png"), out=Path("o.mp4"))
    args = _subparser("generate").parse_args([
        "--image", "p.png", "--out", "o.mp4", "--audio", "a.wav", "--face", "2", "--no-blink", "--camera", "static",
        "--mouth-scale", "1.5", "--chunk-size", "8", "--natural-on-top", "--head-mask", "h.png"])
    request = request_from_options(args)
    assert (request.audio, request.face, request.blink, request.camera) == (Path("a.wav"), 2, False, "static")
    assert (request.mouth_scale, request.chunk_size, request.natural_on_top) == (1.5, 8, True)
    assert request.head_mask == Path("h.png") and request.body_mask is None and request.motion is None
    args.face = "left"
    with pytest.raises(InputError, match="--face 'left': give 'largest' or an index"):
        request_from_options(args)


# the messages validation gave before the table; the table's entries must keep them
LEGACY_MESSAGES = {
    "head_threshold": (1.5, "--head-threshold 1.5 is outside 0..1 (official 0.9)."),
    "mouth_amp": (2.5, "--mouth-amp 2.5 is outside 0..2 (official default 0.45)."),
    "mouth_scale": (9.0, "--mouth-scale 9.0 is outside 0..3 (1 keeps the motion)."),
    "min_face_area": (0.0, "--min-face-area 0.0 must be a fraction in (0, 1] (official 0.2)."),
    "temperature": (-0.1, "--temperature must be >= 0, got -0.1."),
}


def test_range_messages_are_the_ones_validation_always_gave():
    for name, (value, message) in LEGACY_MESSAGES.items():
        assert GENERATE[name].range_error(value) == message
        assert GENERATE[name].range_error(GENERATE[name].default) is None


def test_validation_refuses_every_option_outside_its_tables_range(tmp_path):
    from r3dp_core.pipeline.validation import _check_options

    base = GenerateRequest(image=tmp_path / "p.png", out=tmp_path / "o.mp4", audio=tmp_path / "a.wav")
    _check_options(base)
    ranged = [option for option in GENERATE if option.minimum is not None or option.maximum is not None]
    assert {option.name for option in ranged} == {*LEGACY_MESSAGES, "pose_strength", "pose_smoothing"}
    for option in ranged:
        step = 1 if option.type is int else 0.01
        inside = [option.maximum] if option.maximum is not None else []
        inside += [] if option.exclusive_minimum else [option.minimum]
        for value in inside:
            _check_options(dataclasses.replace(base, **{option.name: option.type(value)}))
        outside = [option.minimum if option.exclusive_minimum else option.minimum - step]
        outside += [option.maximum + step] if option.maximum is not None else []
        for value in outside:
            with pytest.raises(InputError, match=r"outside|must be") as refused:
                _check_options(dataclasses.replace(base, **{option.name: option.type(value)}))
            if option.name in LEGACY_MESSAGES:
                assert str(refused.value) == option.range_error(option.type(value))


def test_batch_reads_generate_options_without_the_command_line_module():
    """``cli`` → ``batch`` → ``cli`` was an import cycle: the batch reads generate's options from the table."""
    code = ("import sys; from r3dp_core.batch import jobs, run; "
            "assert set(jobs.job_options()) == set(__import__('r3dp_core.pipeline.options', fromlist=['x']).GENERATE"
            ".names()) - {'dry_run', 'models_dir', 'device', 'dtype'}; "
            "assert 'r3dp_core.cli' not in sys.modules, 'the batch imported the command line'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, cwd=REPO)


def test_widgets_that_mirror_an_option_take_its_default_and_bounds(tmp_path):
    sys.path.insert(0, str(REPO / "tests"))
    from fakes.comfyui import fake_comfyui

    mirrored = {
        "R3DP_HeadPose": {"mode": "camera", "easing": "easing", "map_to_source": "map_to_init_pose",
                          "pose_strength": "pose_strength", "pose_smoothing": "pose_smoothing",
                          "natural_on_top": "natural_on_top", "seed": "seed"},
        "R3DP_AudioToMotion": {"mouth_amplitude": "mouth_amp", "temperature": "temperature", "blink": "blink",
                               "seed": "seed"},
        "R3DP_PnccBuilder": {"blink": "blink", "preview_chunk": "chunk_size", "mouth_scale": "mouth_scale",
                             "seed": "seed"},
        "R3DP_HtbsrComposite": {"head_threshold": "head_threshold", "chunk_size": "chunk_size"},
        "R3DP_ImageToTriplane": {"min_face_area": "min_face_area", "face": "face"},
        "R3DP_TalkingPortrait": {"mouth_amplitude": "mouth_amp", "temperature": "temperature", "blink": "blink",
                                 "seed": "seed", "chunk_size": "chunk_size"},
    }
    with fake_comfyui(tmp_path, REPO) as comfy:
        schemas = {cls.define_schema().node_id: cls.define_schema() for cls in comfy.nodes.NODE_CLASSES}
        for node_id, widgets in mirrored.items():
            inputs = {item.id: item for item in schemas[node_id].inputs}
            for widget, name in widgets.items():
                expected = GENERATE[name].widget_kwargs()
                seen = {key: getattr(inputs[widget], key) for key in expected}
                assert seen == expected, (node_id, widget)
        assert schemas["R3DP_HeadPose"].inputs[0].default == "auto"  # new Head Pose nodes start on auto


def test_the_frame_side_is_defined_once():
    """The 512² frame side is ``defaults.FRAME_SIZE``: no other module of the core or the nodes sets a constant to 512
    (the face detector's downscale, ``framing.DETECTION_SIDE``, the mel STFT's FFT length and the loss networks'
    embedding widths are other ideas; the parity harness mirrors the official cases)."""
    allowed = {("r3dp_core/defaults.py", "FRAME_SIZE"), ("r3dp_core/geometry/framing.py", "DETECTION_SIDE"),
               ("r3dp_core/audio/pitch.py", "MEL_FFT"),
               ("r3dp_core/talk3d/loss_networks/arcface.py", "EMBEDDING_DIM"),
               ("r3dp_core/talk3d/loss_networks/syncnet.py", "EMBEDDING_DIM")}
    found = []
    for path in [*(REPO / "r3dp_core").rglob("*.py"), *(REPO / "nodes").glob("*.py")]:
        relative = path.relative_to(REPO).as_posix()
        if relative.startswith("r3dp_core/parity/"):
            continue
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, ast.Constant) \
                    and node.value.value == 512:
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                found += [(relative, target.id) for target in targets if isinstance(target, ast.Name)]
    assert set(found) == allowed, f"define the frame side once, as defaults.FRAME_SIZE: {sorted(set(found) - allowed)}"
    assert defaults.FRAME_SIZE == 512

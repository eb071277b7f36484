"""Saved workflows keep loading: the example graphs as they were shipped (``tests/data/saved_workflows``, copies of
``workflows/`` and ``workflows/api/`` taken before node internals were refactored) still fit the nodes' schemas.

A saved graph stores a node's id, its sockets by name (the UI format) or its inputs by name (the API format), its
output slots by index and its widget values in order (UI) or by name (API). Renaming what users see (display
names, tooltips) is free; these tests fail when a stored id, name, type, slot or widget would no longer match.
Running the graphs in a real ComfyUI is ``tests/e2e``'s job.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fakes.comfyui import fake_comfyui

SAVED = Path(__file__).parent / "data" / "saved_workflows"
UI_GRAPHS = sorted(SAVED.glob("*.json"))
API_GRAPHS = sorted((SAVED / "api").glob("*.json"))
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
#: What the frontend stores after a widget with a control (``control_after_generate``).
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}
#: The media files the example graphs pick in ComfyUI's input folder (workflows/README.md).
INPUT_FILES = ("portrait.png", "two_people.png", "background.png", "speech.wav", "speech_second_voice.wav",
               "driving.mp4")


@pytest.fixture(scope="module")
def schemas(tmp_path_factory):
    base = tmp_path_factory.mktemp("comfy")
    with fake_comfyui(base, Path(__file__).resolve().parents[1]) as comfy:
        for name in INPUT_FILES:
            (comfy.base / "input" / name).write_bytes(b"")
        yield {cls.define_schema().node_id: cls.define_schema() for cls in comfy.nodes.NODE_CLASSES}


def _accepts(io_type: str, stored: str) -> bool:
    """A stored socket type still fits an input that now takes a union of types (``io.MultiType``, "A,B")."""
    return stored == "*" or stored in io_type.split(",")


def _widgets(schema) -> list:
    """The widget inputs in the order the frontend stores their values: required ones, then optional ones."""
    widgets = [item for item in schema.inputs if item.io_type in WIDGET_TYPES]
    return [w for w in widgets if not w.optional] + [w for w in widgets if w.optional]


def _check_value(node: str, widget, value) -> None:
    where = f"{node}.{widget.id} = {value!r}"
    if widget.io_type == "COMBO":
        assert value in widget.options, f"{where}: not an option of the widget ({widget.options})"
    elif widget.io_type == "BOOLEAN":
        assert isinstance(value, bool), where
    elif widget.io_type == "STRING":
        assert isinstance(value, str), where
    else:
        assert isinstance(value, (int, float)) and not isinstance(value, bool), where
        assert widget.min is None or value >= widget.min, f"{where}: below the widget's minimum {widget.min}"
        assert widget.max is None or value <= widget.max, f"{where}: above the widget's maximum {widget.max}"


def test_the_snapshot_holds_every_shipped_example():
    assert len(UI_GRAPHS) >= 9 and [p.name for p in UI_GRAPHS] == [p.name for p in API_GRAPHS]


@pytest.mark.parametrize("path", UI_GRAPHS, ids=lambda p: p.stem)
def test_saved_graphs_fit_the_nodes(schemas, path):
    graph = json.loads(path.read_text())
    nodes = {node["id"]: node for node in graph["nodes"]}
    ours = [node for node in graph["nodes"] if node["type"].startswith("R3DP_")]
    assert ours, "no r3dp node in the graph"
    for node in ours:
        assert node["type"] in schemas, f"node id {node['type']} is no longer registered"
        schema = schemas[node["type"]]
        inputs = {item.id: item for item in schema.inputs}
        for socket in node.get("inputs", []):
            assert socket["name"] in inputs, f"{node['type']}: input {socket['name']!r} is gone"
            if "widget" not in socket:
                assert _accepts(inputs[socket["name"]].io_type, socket["type"]), (node["type"], socket["name"])
        for slot, output in enumerate(node.get("outputs", [])):
            assert slot < len(schema.outputs), f"{node['type']}: output slot {slot} is gone"
            assert schema.outputs[slot].io_type == output["type"], (node["type"], slot)
        values = list(node.get("widgets_values", []))
        for widget in _widgets(schema):
            assert values, f"{node['type']}: no stored value for widget {widget.id!r}"
            _check_value(node["type"], widget, values.pop(0))
            if values and widget.io_type == "INT" and values[0] in CONTROL_VALUES:
                values.pop(0)
        assert values == [], f"{node['type']}: stored widget values left over: {values}"
    for link_id, origin, origin_slot, target, target_slot, kind in graph["links"]:
        for end, slot, side in ((origin, origin_slot, "outputs"), (target, target_slot, "inputs")):
            node = nodes[end]
            if node["type"].startswith("R3DP_"):
                name = node[side][slot]["name"]
                items = schemas[node["type"]].outputs if side == "outputs" else [
                    item for item in schemas[node["type"]].inputs if item.id == name]
                item = items[slot] if side == "outputs" else items[0]
                assert _accepts(item.io_type, kind), f"link {link_id}: {node['type']} {side} {name} {kind}"


@pytest.mark.parametrize("path", API_GRAPHS, ids=lambda p: p.stem)
def test_saved_api_prompts_fit_the_nodes(schemas, path):
    prompt = json.loads(path.read_text())
    for node_id, node in prompt.items():
        kind = node["class_type"]
        if not kind.startswith("R3DP_"):
            continue
        assert kind in schemas, f"node id {kind} is no longer registered"
        schema = schemas[kind]
        inputs = {item.id: item for item in schema.inputs}
        for name, value in node["inputs"].items():
            assert name in inputs, f"{kind} (node {node_id}): input {name!r} is gone"
            if isinstance(value, list):  # a link [node, slot]
                source = prompt[str(value[0])]
                if source["class_type"].startswith("R3DP_"):
                    output = schemas[source["class_type"]].outputs[value[1]]
                    assert _accepts(inputs[name].io_type, output.io_type), (kind, name)
            else:
                _check_value(kind, inputs[name], value)
        for item in schema.inputs:
            assert item.optional or item.id in node["inputs"], f"{kind} (node {node_id}): {item.id!r} now required"

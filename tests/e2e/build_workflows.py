"""Regenerate ``workflows/*.json`` (UI format) and ``workflows/api/*.json`` (their API-format twins).

The graphs are built by ComfyUI's own frontend in a headless Chromium from ``workflow_specs.WORKFLOWS``, so the
saved JSON is exactly what the editor writes, and each twin is the frontend's own ``graphToPrompt`` of it.

    COMFYUI_DIR=... COMFYUI_PYTHON=... python -m tests.e2e.build_workflows
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from .browser import Browser, find_chromium
from .comfy_client import REPO_ROOT, ComfyServer, install_pack
from .fixtures import write_inputs
from .workflow_specs import WORKFLOWS

WORKFLOW_DIR = REPO_ROOT / "workflows"

# Builds one graph in the live editor: nodes by type, widget values by name, links by input name, columns laid
# out top to bottom with the real node sizes. Returns the editor's UI JSON and its API prompt.
BUILD_JS = r"""
async (spec) => {
  const graph = app.graph;
  graph.clear();
  app.canvas.ds.scale = 1;
  app.canvas.ds.offset = [0, 0];
  const byKey = {};
  const columns = {};
  const place = (node, column) => {
    (columns[column] ??= []).push(node);
  };
  for (const [column, text] of spec.notes) {
    const note = LiteGraph.createNode("Note");
    graph.add(note);
    note.widgets[0].value = text;
    note.size = [420, 300];
    note.color = "#432";
    note.bgcolor = "#653";
    place(note, column);
  }
  for (const [key, type, column, widgets, title] of spec.nodes) {
    const node = LiteGraph.createNode(type);
    if (!node) throw new Error(`node type ${type} is not registered`);
    graph.add(node);
    for (const [name, value] of Object.entries(widgets)) {
      const widget = node.widgets?.find((w) => w.name === name);
      if (!widget) throw new Error(`${type} has no widget ${name}: ${node.widgets?.map((w) => w.name)}`);
      widget.value = value;
      widget.callback?.(value, app.canvas, node);
    }
    if (title) node.title = title;
    byKey[key] = node;
    place(node, column);
  }
  for (const [from, slot, to, input] of spec.links) {
    const source = byKey[from];
    const target = byKey[to];
    if (!source || !target) throw new Error(`link ${from} -> ${to}: unknown node`);
    const index = target.findInputSlot(input);
    if (index < 0) throw new Error(`${target.type} has no input ${input}`);
    if (!source.connect(slot, target, index)) throw new Error(`cannot link ${from}[${slot}] -> ${to}.${input}`);
  }
  // media widgets (LoadImage/LoadVideo previews) appear asynchronously and change node sizes
  await new Promise((resolve) => setTimeout(resolve, 1500));
  let x = 40;
  for (const column of Object.keys(columns).map(Number).sort((a, b) => a - b)) {
    let y = 60;
    let width = 0;
    for (const node of columns[column]) {
      const size = node.computeSize();
      node.size = [Math.max(node.size[0], size[0], 320), Math.max(node.size[1], size[1])];
      node.pos = [x, y];
      y += node.size[1] + 70;
      width = Math.max(width, node.size[0]);
    }
    x += width + 70;
  }
  graph.setDirtyCanvas(true, true);
  const prompt = await app.graphToPrompt();
  return { workflow: prompt.workflow, api: prompt.output };
}
"""

# Ready = every node the server knows is registered in the editor (registration is incremental) and the r3dp
# web extensions are loaded.
WAIT_FOR_APP = """(async () => {
  if (!(window.app && app.graph && window.LiteGraph && app.extensions)) return false;
  const known = Object.keys(await (await fetch(api.apiURL("/object_info"))).json());
  return known.every((type) => LiteGraph.registered_node_types[type])
    && ["r3dp.AudioLoader", "r3dp.CameraPath", "r3dp.VideoPreview"]
      .every((name) => app.extensions.some((e) => e.name === name));
})()"""


def open_editor(browser: Browser, url: str) -> None:
    browser.navigate(url)
    browser.wait_for("window.comfyAPI && window.comfyAPI.api", timeout=180)
    browser.evaluate("window.api = window.comfyAPI.api.api; true")
    browser.wait_for(WAIT_FOR_APP, timeout=180, poll=1.0)


# Fit the whole graph into the window and report where the canvas is, for the template thumbnail.
FIT_JS = r"""
(() => {
  const nodes = app.graph._nodes;
  const x0 = Math.min(...nodes.map((n) => n.pos[0]));
  const y0 = Math.min(...nodes.map((n) => n.pos[1] - 30));
  const x1 = Math.max(...nodes.map((n) => n.pos[0] + n.size[0]));
  const y1 = Math.max(...nodes.map((n) => n.pos[1] + n.size[1]));
  const rect = app.canvas.canvas.getBoundingClientRect();
  const scale = Math.min(rect.width / (x1 - x0 + 40), rect.height / (y1 - y0 + 40));
  app.canvas.ds.scale = scale;
  app.canvas.ds.offset = [20 / scale - x0, 20 / scale - y0];
  app.graph.setDirtyCanvas(true, true);
  return {x: rect.left, y: rect.top, width: Math.min(rect.width, (x1 - x0 + 40) * scale),
          height: Math.min(rect.height, (y1 - y0 + 40) * scale)};
})()
"""


def declared_inputs_only(prompt: dict, object_info: dict) -> dict:
    """An API prompt without the frontend-only widget values (e.g. LoadVideo's preview) the server ignores."""
    clean = {}
    for node_id, node in prompt.items():
        schema = object_info[node["class_type"]]["input"]
        declared = {*schema.get("required", {}), *schema.get("optional", {})}
        clean[node_id] = {**node, "inputs": {k: v for k, v in node["inputs"].items() if k in declared}}
    return clean


def thumbnail(browser: Browser, path: Path, width: int = 640) -> None:
    import base64
    import time

    area = browser.evaluate(FIT_JS)
    time.sleep(0.5)
    clip = {**area, "scale": width / area["width"]}
    data = browser.command("Page.captureScreenshot", {"format": "jpeg", "quality": 80, "clip": clip},
                           session=True)["data"]
    path.write_bytes(base64.b64decode(data))


def build_all(browser: Browser, url: str, names: list[str] | None = None) -> dict[str, dict]:
    open_editor(browser, url)
    object_info = browser.evaluate("fetch(api.apiURL('/object_info')).then((r) => r.json())")
    built = {}
    for name, spec in WORKFLOWS.items():
        if names and name not in names:
            continue
        payload = json.dumps({"nodes": spec["nodes"], "links": spec["links"], "notes": spec["notes"]})
        result = browser.evaluate(f"({BUILD_JS})({payload})", timeout=120)
        result["workflow"].setdefault("extra", {})["r3dp_example"] = name
        result["api"] = declared_inputs_only(result["api"], object_info)
        thumbnail(browser, WORKFLOW_DIR / f"{name}.jpg")
        built[name] = result
    return built


def write(built: dict[str, dict]) -> None:
    (WORKFLOW_DIR / "api").mkdir(parents=True, exist_ok=True)
    for name, result in built.items():
        (WORKFLOW_DIR / f"{name}.json").write_text(json.dumps(result["workflow"], indent=2) + "\n")
        (WORKFLOW_DIR / "api" / f"{name}.json").write_text(json.dumps(result["api"], indent=2, sort_keys=True) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="use an already running ComfyUI (its input folder must hold the example files)")
    parser.add_argument("names", nargs="*", help="only these workflows")
    args = parser.parse_args()
    chromium = find_chromium()
    if chromium is None:
        raise SystemExit("no Chromium found: install one or set CHROMIUM")
    server = None
    with tempfile.TemporaryDirectory(prefix="r3dp-build-workflows-") as tmp:
        url = args.url
        if url is None:
            base = Path(tmp)
            install_pack(base / "custom_nodes")
            shared = Path(os.environ.get("R3DP_SHARED", REPO_ROOT.parent / "shared"))
            write_inputs(base / "input", shared)
            server = ComfyServer(Path(os.environ["COMFYUI_DIR"]), os.environ["COMFYUI_PYTHON"], base)
            server.wait_ready()
            server.post("/settings/Comfy.TutorialCompleted", True)
            url = server.url
        browser = Browser(chromium)
        try:
            write(build_all(browser, url, args.names))
        finally:
            browser.close()
            if server is not None:
                server.stop()
    print(f"wrote {len(args.names or WORKFLOWS)} workflows to {WORKFLOW_DIR}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

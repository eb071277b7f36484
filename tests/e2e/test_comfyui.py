"""The pack in a real ComfyUI: import, node registration, every shipped workflow run headlessly on a short clip,
saved motions/avatars reloaded, clear missing-model errors, and the frontend in a headless Chromium.

Run: ``COMFYUI_DIR=/path/to/ComfyUI COMFYUI_PYTHON=/path/to/its/python python -m pytest tests/e2e -q``
(``CHROMIUM=...`` selects the browser; without one the frontend test is skipped).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from .fixtures import (
    BODY_MASK,
    HEAD_MASK,
    PERSONA,
    SPEECH,
    TWO_PEOPLE,
    TWO_PEOPLE_BODY_MASK,
    TWO_PEOPLE_HEAD_MASK,
)

pytestmark = pytest.mark.e2e

NODE_IDS = {
    "R3DP_LoadVideoModel", "R3DP_LoadAudioModel", "R3DP_LoadHubert", "R3DP_LoadBFM", "R3DP_LoadFaceLandmarker",
    "R3DP_LoadSegmenter", "R3DP_SegmenterFromMasks", "R3DP_ImageToTriplane", "R3DP_AudioToMotion",
    "R3DP_VideoToMotion", "R3DP_HeadPose", "R3DP_PnccBuilder", "R3DP_MotionAdapter", "R3DP_VolumeRender",
    "R3DP_HtbsrComposite", "R3DP_BackgroundLoader", "R3DP_LoadAudio", "R3DP_SaveMotion", "R3DP_LoadMotion",
    "R3DP_SaveAvatar", "R3DP_LoadAvatar", "R3DP_TalkingPortrait", "R3DP_PasteBack", "R3DP_PasteBackStream",
    "R3DP_SaveVideo", "R3DP_PersonaLoader", "R3DP_LoadWav2Vec2", "R3DP_PersonaAudioToTriplane",
    "R3DP_PersonaSuperResolution", "R3DP_PersonaPasteBack", "R3DP_PersonaPasteBackStream", "R3DP_Personalise",
}
WORKFLOW_API = Path(__file__).resolve().parents[2] / "workflows" / "api"
# the persona workflows have tests of their own (a stand-in persona, a training run on the tiny preset)
SHIPPED = sorted(p.stem for p in WORKFLOW_API.glob("*.json") if not p.stem.startswith("r3dp_persona_"))
CORE_OR_OURS = {"LoadImage", "LoadVideo", "LoadImageMask", "CreateVideo", "SaveVideo", "PreviewImage", "ImageFlip",
                "ImageBatch", "MaskToImage", "AudioMerge"}
# what each shipped workflow writes: (mp4 files, in-node previews, frame size); the default is one 512² clip
EXPECTED_OUTPUTS = {"r3dp_two_portraits_core_mix": (2, 2, (512, 512)),
                    "r3dp_two_people_one_photo": (1, 2, (1024, 512)),
                    "r3dp_two_people_long_clip": (1, 2, (1024, 512))}


def swap_segmenter(prompt: dict) -> dict:
    """The 6-class segmenter model cannot exist here: feed head/body masks instead (the only node swapped), the
    masks of the photo the workflow loads."""
    prompt = copy.deepcopy(prompt)
    two_people = any(n["class_type"] == "LoadImage" and n["inputs"].get("image") == TWO_PEOPLE for n in prompt.values())
    mask_files = (TWO_PEOPLE_HEAD_MASK, TWO_PEOPLE_BODY_MASK) if two_people else (HEAD_MASK, BODY_MASK)
    for node_id, node in list(prompt.items()):
        if node["class_type"] not in ("R3DP_LoadSegmenter", "R3DP_TalkingPortrait"):
            continue
        masks = {}
        for name, image in zip(("head_mask", "body_mask"), mask_files):
            prompt[f"{node_id}_{name}"] = {"class_type": "LoadImageMask", "inputs": {"image": image, "channel": "red"}}
            masks[name] = [f"{node_id}_{name}", 0]
        if node["class_type"] == "R3DP_LoadSegmenter":
            prompt[node_id] = {"class_type": "R3DP_SegmenterFromMasks", "inputs": {**masks, "threshold": 0.5}}
        else:
            node["inputs"].update(masks)
    return prompt


def saved_videos(entry: dict) -> list[dict]:
    return [item for output in entry["outputs"].values() for item in output.get("images", [])
            if item["filename"].endswith(".mp4") and item["type"] == "output"]


def test_pack_imports_and_registers_every_node(comfy):
    log = comfy.log()
    assert "IMPORT FAILED" not in log and "Cannot import" not in log, log[-3000:]
    assert "custom_nodes/r3dp" in log.replace("\\", "/")
    info = comfy.get("/object_info")
    assert NODE_IDS <= set(info), sorted(NODE_IDS - set(info))
    for node_id in NODE_IDS:
        schema = info[node_id]
        assert schema["category"].startswith("Real3DPortrait")
        for group in ("required", "optional"):
            for name, spec in schema["input"].get(group, {}).items():
                assert len(spec) > 1 and spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"
    # the BFM lives only in the folder added by extra_model_paths.yaml: the folders were merged, not replaced
    assert "BFM/BFM_model_front.mat" in info["R3DP_LoadBFM"]["input"]["required"]["bfm_file"][1]["options"]
    assert "face_landmarker.task" in info["R3DP_LoadFaceLandmarker"]["input"]["required"]["model_file"][1]["options"]
    extensions = comfy.get("/extensions")
    assert {f"/extensions/r3dp/js/r3dp_{name}.js" for name in ("audio_loader", "camera_path", "video_preview")} \
        <= set(extensions)


def test_missing_model_names_the_file_and_its_source(comfy):
    prompt = {"1": {"class_type": "R3DP_LoadSegmenter", "inputs": {"model_file": "selfie_multiclass_256x256.tflite"}},
              "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}
    with pytest.raises(AssertionError) as failure:
        comfy.run(prompt, timeout=120)
    message = str(failure.value)
    assert "selfie_multiclass_256x256.tflite" in message
    assert "storage.googleapis.com/mediapipe-models" in message  # where to get it
    assert "real3dportrait" in message                          # where it was looked for


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_workflow_runs(comfy, e2e_base, name):
    from r3dp_core.video_io import probe_video

    shipped = json.loads((Path(__file__).resolve().parents[2] / "workflows" / "api" / f"{name}.json").read_text())
    assert all(n["class_type"].startswith("R3DP_") or n["class_type"] in CORE_OR_OURS for n in shipped.values())
    entry = comfy.run(swap_segmenter(shipped), timeout=3600)
    videos = saved_videos(entry)
    clips, preview_count, size = EXPECTED_OUTPUTS.get(name, (1, 1, (512, 512)))
    assert len(videos) == clips, entry["outputs"]
    for video in videos:
        info = probe_video(e2e_base["base"] / "output" / video["subfolder"] / video["filename"])
        assert info["frames"] == round(e2e_base["seconds"] * 25) == e2e_base["frames"]
        assert (info["width"], info["height"]) == size
        assert info["audio_seconds"] == pytest.approx(e2e_base["seconds"], abs=0.05)
    previews = [item for output in entry["outputs"].values() for item in output.get("r3dp_video", [])]
    assert len(previews) == preview_count
    for preview in previews:
        assert (e2e_base["base"] / "temp" / preview["subfolder"] / preview["filename"]).is_file()


def _persona_frames_expected(e2e_base) -> tuple[int, tuple[int, int]]:
    """(frames, (width, height)) of the stand-in persona's speech video: round(25 × speech), its training video's
    size."""
    from r3dp_core.talk3d.standin_persona import VIDEO_SIZE

    return round(e2e_base["seconds"] * 25), VIDEO_SIZE


def _check_video(e2e_base, video: dict, frames: int, size: tuple[int, int]) -> Path:
    from r3dp_core.video_io import probe_video

    path = e2e_base["base"] / "output" / video["subfolder"] / video["filename"]
    info = probe_video(path)
    assert info["frames"] == frames and (info["width"], info["height"]) == size
    assert info["audio_seconds"] == pytest.approx(e2e_base["seconds"], abs=0.05)
    return path


def test_persona_speech_workflow_runs(comfy, e2e_base):
    """r3dp_persona_speech on the stand-in persona: new speech → the persona's frames (played in Persona
    Super-Resolution) → pasted back into its training video (its size, round(25 × speech) frames, the speech as
    audio); the long-clip variant (Persona Paste Back (stream) → Save Video (r3dp)) writes the same frames."""
    import numpy as np

    from r3dp_core.video_io import read_video_frames

    prompt = json.loads((WORKFLOW_API / "r3dp_persona_speech.json").read_text())
    assert all(n["class_type"].startswith("R3DP_") or n["class_type"] in CORE_OR_OURS for n in prompt.values())
    entry = comfy.run(prompt, timeout=1800)
    frames, size = _persona_frames_expected(e2e_base)
    videos = saved_videos(entry)
    assert len(videos) == 1
    image_path = _check_video(e2e_base, videos[0], frames, size)
    previews = [item for output in entry["outputs"].values() for item in output.get("r3dp_video", [])]
    assert len(previews) == 1 and (e2e_base["base"] / "temp" / previews[0]["subfolder"] /
                                   previews[0]["filename"]).is_file()

    # the long-clip path: the same graph with the stream paste into Save Video (r3dp)
    stream = copy.deepcopy(prompt)
    paste = next(k for k, n in stream.items() if n["class_type"] == "R3DP_PersonaPasteBack")
    drive = next(k for k, n in stream.items() if n["class_type"] == "R3DP_PersonaAudioToTriplane")
    render = next(k for k, n in stream.items() if n["class_type"] == "R3DP_VolumeRender")
    for key in [k for k, n in stream.items() if n["class_type"] in ("CreateVideo", "SaveVideo")] + [paste]:
        del stream[key]
    stream["s1"] = {"class_type": "R3DP_PersonaPasteBackStream", "inputs": {"render": [render, 0]}}
    stream["s2"] = {"class_type": "R3DP_SaveVideo", "inputs": {
        "frames": ["s1", 0], "fps": [drive, 2], "audio": [drive, 1], "filename_prefix": "r3dp/persona_stream",
        "chunk_size": 3}}
    entry = comfy.run(stream, timeout=1800)
    stream_path = _check_video(e2e_base, entry["outputs"]["s2"]["images"][0], frames, size)

    def decoded(path: Path) -> np.ndarray:
        return np.concatenate([f for f, _ in read_video_frames(path)]).astype(np.float32)

    # two H.264 encodes (core's Save Video and r3dp's, other quality settings) of a noise-textured stand-in video;
    # before encoding the two paths agree to a unit (tests/test_nodes_persona.py)
    assert float(np.abs(decoded(image_path) - decoded(stream_path)).mean()) < 6.0


def test_persona_train_workflow_trains_and_resumes(comfy, e2e_base):
    """r3dp_persona_train on the tiny preset (a few steps on the synthetic talking video): the persona lands in
    models/real3dportrait/personas/NAME, the trained persona speaks in the same run, and running it again with more
    steps continues from the checkpoint."""
    prompt = json.loads((WORKFLOW_API / "r3dp_persona_train.json").read_text())
    assert all(n["class_type"].startswith("R3DP_") or n["class_type"] in CORE_OR_OURS for n in prompt.values())
    train = next(k for k, n in prompt.items() if n["class_type"] == "R3DP_Personalise")
    prompt[train]["inputs"].update({"preset": "tiny", "steps": 4, "save_every": 2, "name": "e2e_trained"})
    entry = comfy.run(prompt, timeout=1800)
    folder = e2e_base["base"] / "models" / "real3dportrait" / "personas" / "e2e_trained"
    assert (folder / "persona.json").is_file() and (folder / "previews" / "step_000004.png").is_file()
    assert json.loads((folder / "persona.json").read_text())["steps"]["unet"] == 4
    assert "U-Net step 4" in entry["outputs"][train]["text"][0]
    previews = [item for output in entry["outputs"].values() for item in output.get("r3dp_video", [])]
    assert len(previews) == 1                       # the new persona speaking, in Persona Super-Resolution ...
    videos = saved_videos(entry)                    # ... and its aligned face as an mp4 (64²: the tiny preset)
    assert len(videos) == 1
    _check_video(e2e_base, videos[0], round(e2e_base["seconds"] * 25), (64, 64))
    prompt[train]["inputs"]["steps"] = 6
    entry = comfy.run(prompt, timeout=1800)
    assert "resumed from 4" in entry["outputs"][train]["text"][0]
    assert json.loads((folder / "persona.json").read_text())["steps"]["unet"] == 6
    info = comfy.get("/object_info/R3DP_PersonaLoader")["R3DP_PersonaLoader"]
    assert {PERSONA, "e2e_trained"} <= set(info["input"]["required"]["persona"][1]["options"])


def test_second_paste_leaves_the_first_person_alone(comfy, e2e_base):
    """r3dp_two_people_one_photo, whose people's crop squares overlap (each square holds a strip of the other
    person): the second Paste Back changes no pixel of the first person, as the first Paste Back animated them,
    and the first Paste Back none of the second person's."""
    import numpy as np
    from PIL import Image

    name = "r3dp_two_people_one_photo"
    prompt = swap_segmenter(json.loads((Path(__file__).resolve().parents[2] / "workflows" / "api" /
                                        f"{name}.json").read_text()))
    pastes = [key for key, node in prompt.items() if node["class_type"] == "R3DP_PasteBack"]
    second = next(key for key in pastes if isinstance(prompt[key]["inputs"].get("background_frames"), list))
    first = prompt[second]["inputs"]["background_frames"][0]
    assert prompt[first]["class_type"] == "R3DP_PasteBack"
    for key, source in (("r3dp_test_first", first), ("r3dp_test_second", second)):  # lossless PNG frames
        prompt[key] = {"class_type": "PreviewImage", "inputs": {"images": [source, 0]}}
    entry = comfy.run(prompt, timeout=3600)

    def frames(key: str) -> np.ndarray:
        items = entry["outputs"][key]["images"]
        return np.stack([np.asarray(Image.open(e2e_base["base"] / item["type"] / item["subfolder"] / item["filename"])
                                    .convert("RGB")) for item in items])

    inputs = e2e_base["base"] / "input"
    photo = np.asarray(Image.open(inputs / TWO_PEOPLE).convert("RGB"))
    person = np.maximum(*(np.asarray(Image.open(inputs / mask).convert("L"))
                          for mask in (TWO_PEOPLE_HEAD_MASK, TWO_PEOPLE_BODY_MASK))) > 127
    seam = e2e_base["two_people_seam"]
    columns = np.arange(photo.shape[1])
    left_person, right_person = person & (columns < seam), person & (columns >= seam)
    pasted_first, pasted_second = frames("r3dp_test_first"), frames("r3dp_test_second")
    assert pasted_first.shape == pasted_second.shape == (e2e_base["frames"], *photo.shape)
    # the strip of the left person inside the right person's square was animated by the first paste ...
    strip = left_person & (columns >= seam - 24)
    assert (pasted_first[:, strip] != photo[strip]).any()
    # ... and the second paste left every pixel of the left person as the first paste made it
    assert np.array_equal(pasted_second[:, left_person], pasted_first[:, left_person])
    assert all(np.array_equal(frame[right_person], photo[right_person]) for frame in pasted_first)
    assert (pasted_second[:, right_person] != pasted_first[:, right_person]).any()   # the right person is pasted


def test_saved_motion_and_avatar_load_back(comfy, e2e_base):
    """Video-driven saved its motion, the two-portrait workflow its avatars: the Load nodes read them back."""
    motions = sorted((e2e_base["base"] / "output" / "r3dp" / "motions").glob("driving_motion_*.safetensors"))
    avatars = sorted((e2e_base["base"] / "output" / "r3dp" / "avatars").glob("two_portraits_*.safetensors"))
    if not motions or not avatars:
        pytest.skip("run together with the video-driven and two-portrait workflows")
    prompt = {"1": {"class_type": "R3DP_LoadMotion", "inputs": {"motion_file": motions[-1].name}},
              "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 2]}},
              "3": {"class_type": "R3DP_LoadAvatar", "inputs": {"avatar_file": avatars[-1].name}},
              "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 1]}}}
    entry = comfy.run(prompt, timeout=300)
    assert entry["outputs"]["2"]["text"] == [str(e2e_base["frames"])]
    assert len(entry["outputs"]["4"]["images"]) == 1


def test_frontend_loads_workflows_with_widgets(comfy, e2e_base, workflows_dir):
    """A real headless Chromium: every shipped workflow loads with no missing node, the twins are the frontend's
    own API conversion, the camera-path canvas edits the keyframes input, and the all-in-one run plays in the
    node's video player."""
    from .browser import Browser, find_chromium
    from .build_workflows import declared_inputs_only, open_editor

    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no Chromium (set CHROMIUM or install chromium)")
    browser = Browser(chromium)
    try:
        open_editor(browser, comfy.url)
        object_info = comfy.get("/object_info")
        for path in sorted(workflows_dir.glob("*.json")):
            workflow = json.loads(path.read_text())
            # a renamed socket type leaves the saved links with the old name, which the twins cannot show
            node_types = {node["id"]: node["type"] for node in workflow["nodes"]}
            # (a link into a multi-type input, e.g. Volume Render's planes, carries the input's union "A,B")
            stale_links = [(link[0], link[5]) for link in workflow["links"]
                           if object_info[node_types[link[1]]]["output"][link[2]] not in link[5].split(",")]
            assert stale_links == [], f"{path.name}: links of a renamed type; run python -m tests.e2e.build_workflows"
            report = browser.evaluate(f"""(async () => {{
                const workflow = {json.dumps(workflow)};
                const missing = workflow.nodes.map((n) => n.type).filter((t) => !LiteGraph.registered_node_types[t]);
                await app.loadGraphData(workflow, true, true, {json.dumps(path.stem)});
                const prompt = await app.graphToPrompt();
                return {{missing, nodes: app.graph._nodes.length, api: prompt.output}};
            }})()""")
            assert report["missing"] == [], (path.name, report["missing"])
            assert report["nodes"] == len(workflow["nodes"])
            twin = json.loads((workflows_dir / "api" / path.name).read_text())
            assert declared_inputs_only(report["api"], object_info) == twin, \
                f"{path.name}: workflows/api/{path.name} is stale; run python -m tests.e2e.build_workflows"

        # camera path widget: drawn on the Head Pose node, a click adds a key and writes it into `keyframes`
        edit = browser.evaluate(f"""(async () => {{
            await app.loadGraphData({(workflows_dir / "r3dp_background_swap.json").read_text()}, true, true, "cam");
            const node = app.graph._nodes.find((n) => n.type === "R3DP_HeadPose");
            const widget = node.widgets.find((w) => w.name === "r3dp_camera_path");
            const keyframes = node.widgets.find((w) => w.name === "keyframes");
            const before = keyframes.value;
            await new Promise((r) => setTimeout(r, 300));
            const canvas = widget.editor.canvas;
            const rect = canvas.getBoundingClientRect();
            const at = {{clientX: rect.left + rect.width * 0.8, clientY: rect.top + rect.height * 0.25,
                         button: 0, bubbles: true, pointerId: 1}};
            canvas.dispatchEvent(new PointerEvent("pointerdown", at));
            canvas.dispatchEvent(new PointerEvent("pointerup", at));
            const prompt = await app.graphToPrompt();
            const id = String(node.id);
            return {{inDom: document.body.contains(canvas), width: rect.width, before, after: keyframes.value,
                     keys: widget.editor.keys.length, api: prompt.output[id].inputs.keyframes}};
        }})()""")
        assert edit["inDom"] and edit["width"] > 100
        assert edit["keys"] == edit["before"].count(";") + 2
        assert edit["after"] != edit["before"] and edit["api"] == edit["after"]

        # the audio loader's own upload: a file given to it lands in input/, is selected and plays in the node
        uploaded = browser.evaluate(f"""(async () => {{
            await app.loadGraphData({(workflows_dir / "r3dp_audio_driven.json").read_text()}, true, true, "up");
            const node = app.graph._nodes.find((n) => n.type === "R3DP_LoadAudio");
            const bytes = await (await fetch(api.apiURL("/view?type=input&filename=" + {json.dumps(SPEECH)}))).blob();
            const widget = node.widgets.find((w) => w.name === "r3dp_audio_player");
            await widget.upload(new File([bytes], "uploaded_voice.wav", {{type: "audio/wav"}}));
            const choice = node.widgets.find((w) => w.name === "audio");
            const button = node.widgets.find((w) => w.type === "button");
            return {{value: choice.value, src: widget.player.src, button: button?.name}};
        }})()""")
        assert uploaded["value"] == "uploaded_voice.wav" and "uploaded_voice.wav" in uploaded["src"]
        assert uploaded["button"] == "choose audio file to upload"
        assert (e2e_base["base"] / "input" / "uploaded_voice.wav").is_file()

        # run the all-in-one from the editor (stages cached by the API run) and watch the in-node player
        player = browser.evaluate(f"""(async () => {{
            await app.loadGraphData({(workflows_dir / "r3dp_talking_portrait_all_in_one.json").read_text()},
                                    true, true, "aio");
            const talking = app.graph._nodes.find((n) => n.type === "R3DP_TalkingPortrait");
            const masks = [["head_mask", {json.dumps(HEAD_MASK)}], ["body_mask", {json.dumps(BODY_MASK)}]];
            for (const [input, file] of masks) {{
                const mask = LiteGraph.createNode("LoadImageMask");
                app.graph.add(mask);
                mask.widgets.find((w) => w.name === "image").value = file;
                mask.widgets.find((w) => w.name === "channel").value = "red";
                mask.connect(0, talking, talking.findInputSlot(input));
            }}
            // a new chunk size re-runs the composite (everything before it is cached), so the player gets a fresh video
            talking.widgets.find((w) => w.name === "chunk_size").value = 8;
            await app.queuePrompt(0, 1);
            const deadline = Date.now() + 1800 * 1000;
            let widget;
            while (Date.now() < deadline) {{
                widget = talking.widgets.find((w) => w.name === "r3dp_video_player");
                if (widget && widget.video.readyState >= 1) break;
                await new Promise((r) => setTimeout(r, 1000));
            }}
            if (!widget) return {{found: false}};
            return {{found: true, inDom: document.body.contains(widget.video), duration: widget.video.duration,
                     src: widget.video.src, width: widget.video.videoWidth}};
        }})()""", timeout=1900)
        assert player["found"], player
        assert player["inDom"] and "/view?" in player["src"]
        assert player["width"] == 512
        assert player["duration"] == pytest.approx(e2e_base["seconds"], abs=0.06)
        errors = [e for e in browser.console_errors() if "r3dp" in e.lower()]
        assert errors == []
    finally:
        browser.close()

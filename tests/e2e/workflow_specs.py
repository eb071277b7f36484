"""The example workflows, described compactly; ``build_workflows.py`` turns them into real UI graphs by driving
ComfyUI's own frontend (so node shapes, widget order and links are exactly what the editor writes).

A spec: ``nodes`` = ``(key, node type, column, widget values, title)``; ``links`` = ``(from key, output slot,
to key, input name)``; ``notes`` = ``(column, text)`` placed at the top of that column.
"""

from __future__ import annotations

from .fixtures import (
    BACKGROUND,
    DRIVING,
    PERSONA,
    PERSONA_TRAINING_VIDEO,
    PORTRAIT,
    SECOND_SPEECH,
    SPEECH,
    TWO_PEOPLE,
)

VIDEO_CKPT = "secc2plane_torso/model_ckpt_steps_100000.ckpt"
AUDIO_CKPT = "audio2secc_vae/model_ckpt_steps_400000.ckpt"
HUBERT = "hubert/hubert-large-ls960-ft"
BFM = "BFM/BFM_model_front.mat"
LANDMARKER = "face_landmarker.task"
SEGMENTER = "selfie_multiclass_256x256.tflite"

MODELS_NOTE = (
    "Model files go in ComfyUI/models/real3dportrait/ (or a 'real3dportrait:' entry of extra_model_paths.yaml):\n"
    f"- {VIDEO_CKPT} + config.yaml, {AUDIO_CKPT} + config.yaml: the official Real3D-Portrait release "
    "(checkpoints/240210_real3dportrait_orig/)\n"
    f"- {HUBERT}/: facebook/hubert-large-ls960-ft from Hugging Face\n"
    f"- {BFM}, BFM/index_mp468_from_mesh35709.npy, BFM/bfm_left_eye_faces.npy, BFM/bfm_right_eye_faces.npy: "
    "the BFM bundle of the official README\n"
    f"- {LANDMARKER}, {SEGMENTER}: MediaPipe models (Apache-2.0)\n"
    "A loader that cannot find its file says which file, where it looked and where to get it."
)


def _loaders(column: int, audio: bool = True) -> list[tuple]:
    nodes = [
        ("video_model", "R3DP_LoadVideoModel", column, {"ckpt_name": VIDEO_CKPT, "precision": "auto"}, None),
        ("bfm", "R3DP_LoadBFM", column, {"bfm_file": BFM}, None),
        ("landmarker", "R3DP_LoadFaceLandmarker", column, {"model_file": LANDMARKER}, None),
        ("segmenter", "R3DP_LoadSegmenter", column, {"model_file": SEGMENTER}, None),
    ]
    if audio:
        nodes += [
            ("audio_model", "R3DP_LoadAudioModel", column, {"ckpt_name": AUDIO_CKPT}, None),
            ("hubert", "R3DP_LoadHubert", column, {"model_folder": HUBERT, "precision": "auto"}, None),
        ]
    return nodes


_AVATAR_LINKS = [
    ("portrait", 0, "avatar", "image"), ("video_model", 0, "avatar", "video_model"), ("bfm", 0, "avatar", "bfm"),
    ("landmarker", 0, "avatar", "landmarker"), ("segmenter", 0, "avatar", "segmenter"),
]
_AUDIO_LINKS = [
    ("speech", 0, "motion", "audio"), ("audio_model", 0, "motion", "audio_model"), ("hubert", 0, "motion", "hubert"),
]
_CHAIN_LINKS = [
    ("motion", 0, "pncc", "motion"), ("avatar", 0, "pncc", "avatar"), ("bfm", 0, "pncc", "bfm"),
    ("avatar", 0, "planes", "avatar"), ("pncc", 0, "planes", "pncc"), ("video_model", 0, "planes", "video_model"),
    ("planes", 0, "render", "planes"), ("camera", 0, "render", "camera"),
    ("render", 0, "composite", "render"),
    ("composite", 0, "create_video", "images"), ("composite", 4, "create_video", "audio"),
    ("composite", 5, "create_video", "fps"), ("create_video", 0, "save_video", "video"),
]
_MOTION_WIDGETS = {"mouth_amplitude": 0.45, "temperature": 0.2, "blink": True, "seed": 42,
                   "control_after_generate": "fixed"}


def _chain(column: int, camera: dict, prefix: str) -> list[tuple]:
    return [
        ("camera", "R3DP_HeadPose", column, camera, None),
        ("pncc", "R3DP_PnccBuilder", column + 1, {"blink": True, "preview_chunk": 4}, None),
        ("planes", "R3DP_MotionAdapter", column + 1, {}, None),
        ("render", "R3DP_VolumeRender", column + 1, {"seed": 0, "control_after_generate": "fixed",
                                                     "preview_chunk": 4}, None),
        ("composite", "R3DP_HtbsrComposite", column + 2, {"head_threshold": 0.9, "chunk_size": 4, "preview": True},
         None),
        ("create_video", "CreateVideo", column + 3, {}, None),
        ("save_video", "SaveVideo", column + 3, {"filename_prefix": f"r3dp/{prefix}"}, None),
    ]


def _static_camera(**changes) -> dict:
    return {"mode": "static", **changes}


WORKFLOWS: dict[str, dict] = {
    "r3dp_audio_driven": {
        "nodes": [
            ("portrait", "LoadImage", 0, {"image": PORTRAIT}, "Portrait"),
            ("speech", "R3DP_LoadAudio", 0, {"audio": SPEECH}, "Voice clip"),
            *_loaders(1),
            ("avatar", "R3DP_ImageToTriplane", 2, {"min_face_area": 0.2}, None),
            ("motion", "R3DP_AudioToMotion", 2, _MOTION_WIDGETS, None),
            ("crop_preview", "PreviewImage", 2, {}, "Source crop"),
            *_chain(3, _static_camera(), "audio_driven"),
        ],
        "links": [*_AVATAR_LINKS, *_AUDIO_LINKS, *_CHAIN_LINKS, ("avatar", 1, "crop_preview", "images")],
        "notes": [(0, "Audio-driven talking portrait (Real3D-Portrait).\n\nLoad a portrait photo and a voice clip, "
                      "press Run. The lips follow the speech (Audio → 3DMM), the head keeps the photo's pose (Head "
                      "Pose: static), torso and background come from the photo. HTB-SR Composite plays the result "
                      "with its sound inside the node; Create Video + Save Video write the mp4.\n\nTweak: "
                      "mouth_amplitude (0.45 official), temperature, blink, seed. Only the nodes after a change "
                      "re-run."),
                  (1, MODELS_NOTE)],
    },
    "r3dp_audio_natural_motion": {
        "nodes": [
            ("portrait", "LoadImage", 0, {"image": PORTRAIT}, "Portrait"),
            ("speech", "R3DP_LoadAudio", 0, {"audio": SPEECH}, "Voice clip"),
            *_loaders(1),
            ("avatar", "R3DP_ImageToTriplane", 2, {"min_face_area": 0.2}, None),
            ("motion", "R3DP_AudioToMotion", 2, _MOTION_WIDGETS, None),
            *_chain(3, {"mode": "natural", "pose_strength": 1.0, "pose_smoothing": 7, "seed": 42},
                    "audio_natural_motion"),
        ],
        "links": [*_AVATAR_LINKS, *_AUDIO_LINKS, *_CHAIN_LINKS],
        "notes": [(0, "Audio-driven with a living head: Head Pose 'natural' adds a calm head motion to the photo's "
                      "pose (about ±12° yaw, ±8° pitch, ±5° roll at most). It follows the speech of the motion's own "
                      "sound: more motion while the person speaks, settling in pauses, small nods on stressed "
                      "syllables.\n\nTweak on Head Pose: seed (another head path; the same seed gives the same "
                      "motion), pose_strength (0 = the photo's pose held, as 'static'; 2 = twice the motion), "
                      "pose_smoothing (camera averaging window, official 7). Orbit and keyframes can carry the same "
                      "motion on top (natural_on_top)."),
                  (1, MODELS_NOTE)],
    },
    "r3dp_video_driven": {
        "nodes": [
            ("portrait", "LoadImage", 0, {"image": PORTRAIT}, "Portrait"),
            ("driving", "LoadVideo", 0, {"file": DRIVING}, "Driving video"),
            *_loaders(1, audio=False),
            ("avatar", "R3DP_ImageToTriplane", 2, {"min_face_area": 0.2}, None),
            ("motion", "R3DP_VideoToMotion", 2, {"face": "largest"}, None),
            ("save_motion", "R3DP_SaveMotion", 2, {"filename_prefix": "driving_motion", "include_audio": True}, None),
            *_chain(3, {"mode": "driving", "map_to_source": True}, "video_driven"),
        ],
        "links": [*_AVATAR_LINKS, ("driving", 0, "motion", "video"), ("landmarker", 0, "motion", "landmarker"),
                  ("bfm", 0, "motion", "bfm"), ("motion", 0, "save_motion", "motion"),
                  ("motion", 0, "camera", "motion"), *_CHAIN_LINKS],
        "notes": [(0, "Video-driven: a driving video gives the expression AND the head pose (Video → 3DMM fits the "
                      "3DMM to every frame), Head Pose 'driving' maps that pose onto the photo's pose, and the video's "
                      "sound is muxed into the result.\n\nSave Motion stores the fitted motion in "
                      "output/r3dp/motions: Load Motion drives any other portrait with it later, on any machine."),
                  (1, MODELS_NOTE)],
    },
    "r3dp_background_swap": {
        "nodes": [
            ("portrait", "LoadImage", 0, {"image": PORTRAIT}, "Portrait"),
            ("speech", "R3DP_LoadAudio", 0, {"audio": SPEECH}, "Voice clip"),
            ("new_background", "LoadImage", 0, {"image": BACKGROUND}, "New background"),
            *_loaders(1),
            ("avatar", "R3DP_ImageToTriplane", 2, {"min_face_area": 0.2}, None),
            ("motion", "R3DP_AudioToMotion", 2, _MOTION_WIDGETS, None),
            ("background", "R3DP_BackgroundLoader", 2, {"mode": "image"}, None),
            *_chain(3, {"mode": "keyframes", "keyframes": "0: 0, 0; 0.12: 8, 2; 0.24: -8, -2; 0.32: 0, 0",
                        "easing": "smooth"}, "background_swap"),
            ("mask_image", "MaskToImage", 6, {}, None),
            ("mask_preview", "PreviewImage", 6, {}, "Person mask"),
        ],
        "links": [*_AVATAR_LINKS, *_AUDIO_LINKS, *_CHAIN_LINKS, ("new_background", 0, "background", "image"),
                  ("background", 0, "composite", "background"), ("composite", 3, "mask_image", "mask"),
                  ("mask_image", 0, "mask_preview", "images")],
        "notes": [(0, "Background swap: the Background Loader resizes any IMAGE to the 512² plate HTB-SR composites "
                      "the person over (mode 'color' gives a solid colour, 'source' the photo's own background with "
                      "the person removed). The composite also outputs head, torso and person MASKs for further "
                      "compositing.\n\nHead Pose uses 'keyframes': drag the yaw/pitch keys on its canvas; they are "
                      "stored in the keyframes text, so the path travels with the workflow."),
                  (1, MODELS_NOTE)],
    },
    "r3dp_orbit_novel_view": {
        "nodes": [
            ("portrait", "LoadImage", 0, {"image": PORTRAIT}, "Portrait"),
            ("speech", "R3DP_LoadAudio", 0, {"audio": SPEECH}, "Voice clip"),
            *_loaders(1),
            ("avatar", "R3DP_ImageToTriplane", 2, {"min_face_area": 0.2}, None),
            ("motion", "R3DP_AudioToMotion", 2, _MOTION_WIDGETS, None),
            *_chain(3, {"mode": "orbit", "yaw_degrees": 25.0, "pitch_degrees": 8.0, "loops": 1.0},
                    "orbit_novel_view"),
            ("raw_preview", "PreviewImage", 4, {}, "Raw 128² render"),
        ],
        "links": [*_AVATAR_LINKS, *_AUDIO_LINKS, *_CHAIN_LINKS, ("render", 1, "raw_preview", "images")],
        "notes": [(0, "Novel views: Real3D-Portrait reconstructs the head in 3D (a tri-plane), so the camera can move. "
                      "Head Pose 'orbit' sweeps the view left/right (yaw) and up/down (pitch) around the talking "
                      "head; 'keyframes' follows a path drawn on its canvas.\n\nVolume Render's raw_rgb output shows "
                      "the 128² neural render before super-resolution (it is computed only when connected)."),
                  (1, MODELS_NOTE)],
    },
    "r3dp_two_portraits_core_mix": {
        "nodes": [
            ("portrait", "LoadImage", 0, {"image": PORTRAIT}, "Portrait"),
            ("mirrored", "ImageFlip", 0, {"flip_method": "y-axis: horizontally"}, "Second portrait (mirrored)"),
            ("both", "ImageBatch", 0, {}, "Both portraits"),
            ("speech", "R3DP_LoadAudio", 0, {"audio": SPEECH}, "Voice clip"),
            *_loaders(1),
            ("avatar", "R3DP_ImageToTriplane", 2, {"min_face_area": 0.2}, None),
            ("motion", "R3DP_AudioToMotion", 2, _MOTION_WIDGETS, None),
            ("save_avatar", "R3DP_SaveAvatar", 2, {"filename_prefix": "two_portraits"}, None),
            *_chain(3, _static_camera(), "two_portraits"),
        ],
        "links": [("portrait", 0, "mirrored", "image"), ("portrait", 0, "both", "image1"),
                  ("mirrored", 0, "both", "image2"),
                  *[("both" if src == "portrait" else src, slot, dst, name) for src, slot, dst, name in _AVATAR_LINKS],
                  *_AUDIO_LINKS, *_CHAIN_LINKS, ("avatar", 0, "save_avatar", "avatar")],
        "notes": [(0, "Several portraits, one motion: core image nodes (Image Flip, Image Batch) build an IMAGE batch; "
                      "Image → Triplane makes one avatar per image and every downstream node renders each of them "
                      "with the same speech. HTB-SR Composite outputs one clip per portrait as a list, so Create "
                      "Video / Save Video run once per portrait (two mp4 files).\n\nSave Avatar keeps the prepared "
                      "portraits (output/r3dp/avatars) for Load Avatar in later workflows."),
                  (1, MODELS_NOTE)],
    },
    "r3dp_talking_portrait_all_in_one": {
        "nodes": [
            ("portrait", "LoadImage", 0, {"image": PORTRAIT}, "Portrait"),
            ("speech", "R3DP_LoadAudio", 0, {"audio": SPEECH}, "Voice clip"),
            ("talking", "R3DP_TalkingPortrait", 1, {
                "head_pose": "static", "mouth_amplitude": 0.45, "temperature": 0.2, "blink": True, "seed": 42,
                "control_after_generate": "fixed", "chunk_size": 4, "precision": "auto", "video_model": VIDEO_CKPT,
                "audio_model": AUDIO_CKPT, "hubert": HUBERT, "bfm": BFM, "landmarker": LANDMARKER,
                "segmenter": SEGMENTER}, None),
            ("create_video", "CreateVideo", 2, {}, None),
            ("save_video", "SaveVideo", 2, {"filename_prefix": "r3dp/all_in_one"}, None),
        ],
        "links": [("portrait", 0, "talking", "image"), ("speech", 0, "talking", "audio"),
                  ("talking", 0, "create_video", "images"), ("talking", 1, "create_video", "audio"),
                  ("talking", 2, "create_video", "fps"), ("create_video", 0, "save_video", "video")],
        "notes": [(0, "One box: Talking Portrait runs every stage (it expands into the same nodes as the other "
                      "examples, each cached on its own). Photo + voice clip in; frames, audio and fps out, straight "
                      "into Create Video / Save Video or VideoHelperSuite's Video Combine.\n\nGive head_mask (any "
                      "MASK) to skip the selfie segmenter; connect driving_video for video-driven motion."),
                  (1, MODELS_NOTE)],
    },
}


def _person(suffix: str, face: str, speech: str) -> tuple[list[tuple], list[tuple]]:
    """One person of a shared photo: its avatar (face pick), its own voice's motion and its frame chain."""
    def key(name: str) -> str:
        return f"{name}_{suffix}"

    nodes = [
        (key("avatar"), "R3DP_ImageToTriplane", 2, {"min_face_area": 0.2, "face": face}, f"Person {face}"),
        (key("motion"), "R3DP_AudioToMotion", 2, _MOTION_WIDGETS, f"Person {face}'s motion"),
        (key("pncc"), "R3DP_PnccBuilder", 4, {"blink": True, "preview_chunk": 4}, None),
        (key("planes"), "R3DP_MotionAdapter", 4, {}, None),
        (key("render"), "R3DP_VolumeRender", 4, {"seed": 0, "control_after_generate": "fixed", "preview_chunk": 4},
         None),
        (key("composite"), "R3DP_HtbsrComposite", 5, {"head_threshold": 0.9, "chunk_size": 4, "preview": True},
         None),
    ]
    links = [
        ("photo", 0, key("avatar"), "image"), ("video_model", 0, key("avatar"), "video_model"),
        ("bfm", 0, key("avatar"), "bfm"), ("landmarker", 0, key("avatar"), "landmarker"),
        ("segmenter", 0, key("avatar"), "segmenter"),
        (speech, 0, key("motion"), "audio"), ("audio_model", 0, key("motion"), "audio_model"),
        ("hubert", 0, key("motion"), "hubert"),
        (key("motion"), 0, key("pncc"), "motion"), (key("avatar"), 0, key("pncc"), "avatar"),
        ("bfm", 0, key("pncc"), "bfm"),
        (key("avatar"), 0, key("planes"), "avatar"), (key("pncc"), 0, key("planes"), "pncc"),
        ("video_model", 0, key("planes"), "video_model"),
        (key("planes"), 0, key("render"), "planes"), ("camera", 0, key("render"), "camera"),
        (key("render"), 0, key("composite"), "render"),
        (key("composite"), 0, key("paste"), "images"), (key("avatar"), 0, key("paste"), "avatar"),
        (key("composite"), 3, key("paste"), "person_mask"),
    ]
    return nodes, links


_PERSON_A = _person("a", "0", "speech_a")
_PERSON_B = _person("b", "1", "speech_b")

WORKFLOWS["r3dp_two_people_one_photo"] = {
    "nodes": [
        ("photo", "LoadImage", 0, {"image": TWO_PEOPLE}, "Photo of two people"),
        ("speech_a", "R3DP_LoadAudio", 0, {"audio": SPEECH}, "Voice of the person on the left"),
        ("speech_b", "R3DP_LoadAudio", 0, {"audio": SECOND_SPEECH}, "Voice of the person on the right"),
        *_loaders(1),
        *_PERSON_A[0], *_PERSON_B[0],
        ("camera", "R3DP_HeadPose", 3, _static_camera(), None),
        ("paste_a", "R3DP_PasteBack", 6, {"feather": 16}, "Paste back: left person"),
        ("paste_b", "R3DP_PasteBack", 6, {"feather": 16}, "Paste back: right person"),
        ("voices", "AudioMerge", 7, {"merge_method": "add"}, "Both voices"),
        ("create_video", "CreateVideo", 7, {}, None),
        ("save_video", "SaveVideo", 7, {"filename_prefix": "r3dp/two_people_one_photo"}, None),
    ],
    "links": [*_PERSON_A[1], *_PERSON_B[1], ("paste_a", 0, "paste_b", "background_frames"),
              ("speech_a", 0, "voices", "audio1"), ("speech_b", 0, "voices", "audio2"),
              ("paste_b", 0, "create_video", "images"), ("voices", 0, "create_video", "audio"),
              ("composite_a", 5, "create_video", "fps"), ("create_video", 0, "save_video", "video")],
    "notes": [(0, "Two people in one photo, each with their own voice. Faces are found on the photo as it is and "
                  "numbered from the left: Image → Triplane 'face 0' animates the left person, 'face 1' the right "
                  "one, each driven by its own clip (for a dialogue, give each clip silence while the other person "
                  "speaks). Each chain renders its person's 512² square; Paste Back puts it into the photo at the "
                  "photo's resolution through a feathered mask around the moving person, and the second Paste Back "
                  "pastes into the first one's frames, so both people talk in one video. Audio Merge mixes the two "
                  "voices for the soundtrack."),
              (1, MODELS_NOTE)],
}

# The same two people for long clips: the pasted frames never exist whole at the photo's resolution; Save Video
# (r3dp) pulls them chunk by chunk through both Paste Back (stream) nodes into the mp4.
WORKFLOWS["r3dp_two_people_long_clip"] = {
    "nodes": [
        ("photo", "LoadImage", 0, {"image": TWO_PEOPLE}, "Photo of two people"),
        ("speech_a", "R3DP_LoadAudio", 0, {"audio": SPEECH}, "Voice of the person on the left"),
        ("speech_b", "R3DP_LoadAudio", 0, {"audio": SECOND_SPEECH}, "Voice of the person on the right"),
        *_loaders(1),
        *_PERSON_A[0], *_PERSON_B[0],
        ("camera", "R3DP_HeadPose", 3, _static_camera(), None),
        ("paste_a", "R3DP_PasteBackStream", 6, {"feather": 16}, "Paste back: left person (stream)"),
        ("paste_b", "R3DP_PasteBackStream", 6, {"feather": 16}, "Paste back: right person (stream)"),
        ("voices", "AudioMerge", 7, {"merge_method": "add"}, "Both voices"),
        ("save_video", "R3DP_SaveVideo", 7, {"filename_prefix": "r3dp/two_people_long_clip", "chunk_size": 8},
         None),
    ],
    "links": [*_PERSON_A[1], *_PERSON_B[1], ("paste_a", 0, "paste_b", "background"),
              ("speech_a", 0, "voices", "audio1"), ("speech_b", 0, "voices", "audio2"),
              ("paste_b", 0, "save_video", "frames"), ("voices", 0, "save_video", "audio"),
              ("composite_a", 5, "save_video", "fps")],
    "notes": [(0, "Two people in one photo, for long clips. As 'r3dp_two_people_one_photo', but Paste Back (stream) "
                  "pastes nothing by itself: Save Video (r3dp) pulls the frames chunk by chunk through both pastes and "
                  "encodes each chunk as it comes (H.264 + the merged voices as AAC, into output/r3dp/), so the clip "
                  "never exists whole at the photo's resolution (as IMAGE frames it costs about 25 MB a frame at "
                  "1080p). The 512² frames of HTB-SR Composite are still held, about 3 MB a frame.\n\nUse Paste Back "
                  "(IMAGE frames) for short clips and for further work with core image nodes."),
              (1, MODELS_NOTE)],
}


# --- personas (Talk3D): a person's own model, trained from a talking video, animated by any speech ---------------

WAV2VEC2 = "wav2vec2/wav2vec2-large-xlsr-53-esperanto"
PERSONA_MODELS_NOTE = (
    "A persona lives in ComfyUI/models/real3dportrait/personas/NAME (or 'personas/' of a 'real3dportrait:' folder "
    "of extra_model_paths.yaml): train one with r3dp_persona_train or `r3dp personalise --video V.mp4 --out "
    "<that folder>/NAME`.\n"
    f"- {WAV2VEC2}/: Talk3D's speech model (cpierse/wav2vec2-large-xlsr-53-esperanto), `r3dp models fetch --talk3d`\n"
    "Training also needs eg3d/ffhq-fixed-triplane512-128.pkl (the EG3D prior), face_landmarker.task and, for "
    "every loss term, the LPIPS / ArcFace / SyncNet files (`r3dp models fetch --talk3d`).\n"
    "A persona is a person's likeness: only from video of someone who agreed, and label what you make as synthetic."
)
_PERSONA_SPEECH_WIDGETS = {"blink": "schedule", "head_tokens": "replay", "seed": 0, "control_after_generate": "fixed"}


def _persona_chain(column: int, persona: tuple[str, int]) -> tuple[list[tuple], list[tuple]]:
    """Speech → the persona's drive → render → its super-resolved frames (played in the node)."""
    nodes = [
        ("wav2vec2", "R3DP_LoadWav2Vec2", column, {"model_folder": WAV2VEC2}, None),
        ("drive", "R3DP_PersonaAudioToTriplane", column + 1, _PERSONA_SPEECH_WIDGETS, None),
        ("render", "R3DP_VolumeRender", column + 1, {"seed": 0, "control_after_generate": "fixed",
                                                     "preview_chunk": 8}, None),
        ("frames", "R3DP_PersonaSuperResolution", column + 2, {"chunk_size": 8, "preview": True}, None),
    ]
    links = [
        (persona[0], persona[1], "drive", "persona"), ("speech", 0, "drive", "audio"),
        ("wav2vec2", 0, "drive", "wav2vec2"), ("drive", 0, "render", "planes"), ("render", 0, "frames", "render"),
    ]
    return nodes, links


_SPEECH_CHAIN = _persona_chain(1, ("persona", 0))
WORKFLOWS["r3dp_persona_speech"] = {
    "nodes": [
        ("speech", "R3DP_LoadAudio", 0, {"audio": SPEECH}, "New speech"),
        ("persona", "R3DP_PersonaLoader", 1, {"persona": PERSONA}, None),
        *_SPEECH_CHAIN[0],
        ("paste", "R3DP_PersonaPasteBack", 4, {}, "Paste back into the training video"),
        ("create_video", "CreateVideo", 5, {}, None),
        ("save_video", "SaveVideo", 5, {"filename_prefix": "r3dp/persona_speech"}, None),
    ],
    "links": [*_SPEECH_CHAIN[1], ("frames", 0, "paste", "images"), ("drive", 0, "paste", "persona_planes"),
              ("paste", 0, "create_video", "images"), ("drive", 1, "create_video", "audio"),
              ("drive", 2, "create_video", "fps"), ("create_video", 0, "save_video", "video")],
    "notes": [(0, "A persona says something new (Talk3D). Persona Loader picks a trained persona; Persona Audio → "
                  "Tri-plane turns the speech into per-frame tokens (round(25 × seconds) frames; blink: r3dp's "
                  "schedule, the training video's or none). Volume Render makes the tri-plane deltas and renders "
                  "chunk by chunk, Persona Super-Resolution gives the aligned face (played in the node), and Persona "
                  "Paste Back puts it back into the training video's frames (forward, then backward when the speech "
                  "is longer) through a feathered face mask.\n\nPaste-back replays the training video's cameras "
                  "and head tokens (Volume Render's camera unconnected, head_tokens replay). Connect a Head Pose "
                  "(orbit, keyframes, natural) to Volume Render for a novel view of the face crop instead (roll and "
                  "translation are dropped). For long speech use Persona Paste Back (stream) → Save Video (r3dp): "
                  "memory stays flat."),
              (1, PERSONA_MODELS_NOTE)],
}

_TRAIN_CHAIN = _persona_chain(2, ("personalise", 0))
WORKFLOWS["r3dp_persona_train"] = {
    "nodes": [
        ("video", "LoadVideo", 0, {"file": PERSONA_TRAINING_VIDEO}, "Talking video of the person"),
        ("speech", "R3DP_LoadAudio", 0, {"audio": SPEECH}, "Speech to try the persona with"),
        ("personalise", "R3DP_Personalise", 1, {
            "name": "my_persona", "preset": "full", "steps": 0, "save_every": 0, "start_seconds": 0.0,
            "end_seconds": 0.0, "face": "", "seed": 0, "restart": False, "video_path": ""}, None),
        *_TRAIN_CHAIN[0],
        ("create_video", "CreateVideo", 5, {}, None),
        ("save_video", "SaveVideo", 5, {"filename_prefix": "r3dp/persona_first_words"}, None),
    ],
    "links": [("video", 0, "personalise", "video"), *_TRAIN_CHAIN[1], ("frames", 0, "create_video", "images"),
              ("drive", 1, "create_video", "audio"), ("drive", 2, "create_video", "fps"),
              ("create_video", 0, "save_video", "video")],
    "notes": [(0, "Train a persona (Talk3D personalisation, `r3dp personalise`): a few minutes of one person "
                  "talking to the camera → models/real3dportrait/personas/NAME. The node shows the progress bar and "
                  "held-out previews (targets above, renders below); Cancel saves a checkpoint, and running it again "
                  "continues (raise steps to train further; restart to begin anew).\n\nThe full preset takes "
                  "hours on a GPU and holds ComfyUI's queue meanwhile: for long runs the CLI (`r3dp personalise`, "
                  "or `r3dp batch --personalise` for many) is the better place; then load the persona with Persona "
                  "Loader. The nodes on the right try the new persona with a speech once training is done (the "
                  "aligned face, saved as an mp4)."),
              (1, PERSONA_MODELS_NOTE)],
}

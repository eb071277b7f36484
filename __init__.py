"""ComfyUI entry point of the r3dp node pack (V3 API).

Importing this file is cheap and safe without ComfyUI: the node modules, which import ``comfy_api`` and
``r3dp_core``, load only when ComfyUI calls ``comfy_entrypoint``.
"""

WEB_DIRECTORY = "./web"


async def comfy_entrypoint():
    from .nodes import R3DPExtension

    return R3DPExtension()

"""The one place the pack imports ComfyUI's V3 API.

``comfy_api.v0_0_2`` is the versioned, stable surface; ``latest`` is the fallback for builds that lack it.
Aliased to ``comfy_io`` so the standard library's ``io`` is never shadowed.
"""

try:
    from comfy_api.v0_0_2 import ComfyExtension
    from comfy_api.v0_0_2 import io as comfy_io
    from comfy_api.v0_0_2 import ui as comfy_ui
except ImportError:
    from comfy_api.latest import ComfyExtension
    from comfy_api.latest import io as comfy_io
    from comfy_api.latest import ui as comfy_ui

__all__ = ["ComfyExtension", "comfy_io", "comfy_ui"]

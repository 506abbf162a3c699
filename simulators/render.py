"""Rendering helpers for simulators: a CJK font and LED-style pictures."""

from __future__ import annotations

import subprocess
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

_CANDIDATES = (
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
)


@lru_cache(maxsize=1)
def cjk_font_path() -> str | None:
    for candidate in _CANDIDATES:
        if Path(candidate).exists():
            return candidate
    try:
        found = subprocess.run(
            ["fc-match", "-f", "%{file}", ":lang=zh-cn"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    return found or None


@lru_cache(maxsize=16)
def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    path = cjk_font_path()
    return ImageFont.truetype(path, size) if path else ImageFont.load_default()


def led_strip(
    text: str,
    path: Path,
    *,
    height_dots: int = 16,
    dot: int = 6,
    color: tuple[int, int, int] = (255, 40, 20),
) -> None:
    """Draw text as a red dot-matrix LED strip, 16 dots high like the real modules."""
    mask_font = font(height_dots)
    width = max(64, int(mask_font.getlength(text)) + 4)
    mask = Image.new("1", (width, height_dots), 0)
    ImageDraw.Draw(mask).text((2, 0), text, fill=1, font=mask_font)
    image = Image.new("RGB", (width * dot, height_dots * dot), (10, 10, 10))
    draw = ImageDraw.Draw(image)
    pixels = mask.load()
    assert pixels is not None  # a new in-memory image always has pixel data
    for y in range(height_dots):
        for x in range(width):
            fill = color if pixels[x, y] else (40, 12, 10)
            draw.ellipse(
                (x * dot + 1, y * dot + 1, x * dot + dot - 2, y * dot + dot - 2), fill=fill
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)

"""Tesseract's own ALTO of a page, to hold ours against: tesserocr has no GetAltoText, so the
libtesseract it bundles is asked through Tesseract's C API (ctypes), set up as the engine sets
tesserocr up (the same model, automatic page segmentation, the same pixels and resolution)."""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

from PIL import Image

from ocr_common.settings import MIN_DPI

# The engine's default page segmentation (tesserocr's PSM.AUTO); the C API's own is 6.
PSM_AUTO = 3


@functools.cache
def _library() -> ctypes.CDLL:
    import tesserocr

    libraries = Path(tesserocr.__file__).parent.parent / "tesserocr.libs"
    found = sorted(libraries.glob("libtesseract-*.so*"))
    if not found:
        raise FileNotFoundError(f"no libtesseract in {libraries}")
    lib = ctypes.CDLL(str(found[0]))
    handle = ctypes.c_void_p
    lib.TessBaseAPICreate.restype = handle
    lib.TessBaseAPIInit3.argtypes = [handle, ctypes.c_char_p, ctypes.c_char_p]
    lib.TessBaseAPISetPageSegMode.argtypes = [handle, ctypes.c_int]
    lib.TessBaseAPISetImage.argtypes = [
        handle, ctypes.c_char_p, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int,
    ]  # fmt: skip
    lib.TessBaseAPISetSourceResolution.argtypes = [handle, ctypes.c_int]
    lib.TessBaseAPIRecognize.argtypes = [handle, ctypes.c_void_p]
    lib.TessBaseAPIGetAltoText.argtypes = [handle, ctypes.c_int]
    lib.TessBaseAPIGetAltoText.restype = ctypes.c_void_p
    lib.TessDeleteText.argtypes = [ctypes.c_void_p]
    lib.TessBaseAPIDelete.argtypes = [handle]
    return lib


def tesseract_alto(image: Image.Image, page_number: int, data_dir: str, lang: str = "eng") -> str:
    """The ``Page`` element Tesseract's GetAltoText(``page_number``) writes for ``image`` (in
    the mode the engine reads: bilevel, grey or RGB), read with its resolution when credible."""
    lib = _library()
    api = lib.TessBaseAPICreate()
    try:
        if lib.TessBaseAPIInit3(api, data_dir.encode(), lang.encode()) != 0:
            raise RuntimeError(f"Tesseract could not load {lang} from {data_dir}")
        lib.TessBaseAPISetPageSegMode(api, PSM_AUTO)
        channels = {"1": 0, "L": 1, "RGB": 3}[image.mode]
        row_bytes = channels * image.width or (image.width + 7) // 8
        lib.TessBaseAPISetImage(
            api, image.tobytes(), image.width, image.height, channels, row_bytes
        )
        dpi = image.info.get("dpi")
        if dpi and dpi[0] >= MIN_DPI:
            lib.TessBaseAPISetSourceResolution(api, round(dpi[0]))
        if lib.TessBaseAPIRecognize(api, None) != 0:
            raise RuntimeError("Tesseract could not read the page")
        text = lib.TessBaseAPIGetAltoText(api, page_number)
        try:
            return ctypes.string_at(text).decode("utf-8")
        finally:
            lib.TessDeleteText(text)
    finally:
        lib.TessBaseAPIDelete(api)

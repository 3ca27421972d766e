"""Reading and converting images, resizing images and masks (shared by the predictor, the backbones,
the evaluation and the app)."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InputError
from .geometry import working_size

__all__ = ["MAX_ASPECT", "MAX_PIXELS", "as_rgb_uint8", "check_aspect", "read_image", "resize_mask", "resize_rgb",
           "working_size"]

#: Largest image :func:`read_image` accepts, in pixels (a decompression-bomb guard).
MAX_PIXELS = 100_000_000
#: Most times an image's longer side may be its shorter one (see :func:`check_aspect`).
MAX_ASPECT = 8


def as_rgb_uint8(image) -> np.ndarray:
    """Convert an image to a contiguous RGB ``uint8`` array of shape (H, W, 3).

    Parameters
    ----------
    image : numpy.ndarray or PIL.Image.Image
        (H, W) grayscale, (H, W, 1), (H, W, 3) RGB or (H, W, 4) RGBA. Integer arrays are
        scaled by their dtype's range (so 16-bit images work), float arrays are taken to lie in
        [0, 1], bool arrays map to 0 / 255. RGBA is composited over white.

    Returns
    -------
    numpy.ndarray
        uint8 array (H, W, 3).

    Raises
    ------
    InputError
        Not an image, an empty image, or one of fewer than 2 x 2 pixels.
    """
    if isinstance(image, Image.Image):
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):
            image = np.asarray(image)
        else:
            image = np.asarray(image.convert("RGBA") if "A" in image.mode else image.convert("RGB"))
    if not isinstance(image, np.ndarray):
        raise InputError(f"expected an image (numpy array or PIL image), got {type(image).__name__}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise InputError(f"expected an image of shape (H, W), (H, W, 3) or (H, W, 4), got {image.shape}")
    if image.shape[0] < 2 or image.shape[1] < 2:
        raise InputError(f"the image is too small ({image.shape[1]} x {image.shape[0]} pixels); need at least 2 x 2")

    if image.dtype == np.bool_:
        image = image.astype(np.uint8) * 255
    elif np.issubdtype(image.dtype, np.floating):
        if not np.isfinite(image).all():
            raise InputError("the image contains NaN or infinite values")
        image = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
    elif np.issubdtype(image.dtype, np.integer) and image.dtype != np.uint8:
        top = np.iinfo(image.dtype).max if image.max(initial=0) > 255 else 255
        if image.dtype.itemsize >= 2 and image.max(initial=0) > 255:
            top = 65535 if image.max() <= 65535 else np.iinfo(image.dtype).max
        image = np.clip(np.rint(image.astype(np.float64) * (255.0 / top)), 0, 255).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise InputError(f"unsupported image dtype {image.dtype}")

    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    elif image.shape[2] == 4:
        alpha = image[:, :, 3:4].astype(np.float32) / 255.0
        rgb = image[:, :, :3].astype(np.float32)
        image = np.rint(rgb * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    return np.ascontiguousarray(image)


def resize_rgb(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an RGB uint8 image to ``size = (width, height)``.

    Shrinking uses area averaging (PIL's box filter, as OpenCV's INTER_AREA), enlarging uses
    bicubic interpolation.
    """
    width, height = int(size[0]), int(size[1])
    if (width, height) == (image.shape[1], image.shape[0]):
        return image
    shrink = width <= image.shape[1] and height <= image.shape[0]
    resample = Image.Resampling.BOX if shrink else Image.Resampling.BICUBIC
    return np.asarray(Image.fromarray(image).resize((width, height), resample))


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a boolean mask to ``size = (height, width)`` (bilinear, then cut at one half)."""
    height, width = int(size[0]), int(size[1])
    mask = np.asarray(mask, dtype=bool)
    if mask.shape == (height, width):
        return mask
    resized = Image.fromarray(mask.astype(np.uint8) * 255).resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(resized) >= 128


def read_image(path) -> np.ndarray:
    """Read an image file into RGB uint8, with a message a user understands when it fails.

    Grayscale, palette, RGBA (composited over white) and 16-bit images are converted by
    :func:`as_rgb_uint8`; EXIF orientation is applied.

    Raises
    ------
    InputError
        The file is missing, is not an image, is corrupt or truncated, or is larger than
        :data:`MAX_PIXELS`.
    """
    if path is None:
        raise InputError("no image was given")
    try:
        with Image.open(path) as image:
            if image.width * image.height > MAX_PIXELS:
                raise InputError(f"the image is too large ({image.width} x {image.height} pixels); "
                                 f"the limit is {MAX_PIXELS // 1_000_000} megapixels")
            image.load()
            return as_rgb_uint8(ImageOps.exif_transpose(image))
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(f"the file {os.path.basename(str(path))!r} does not exist") from None
    except (UnidentifiedImageError, Image.DecompressionBombError) as error:
        raise InputError(f"this file is not an image M2N2 can read ({type(error).__name__})") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise InputError(f"the image file is corrupt or truncated ({error})") from None


def check_aspect(height: int, width: int, max_aspect: float = MAX_ASPECT) -> None:
    """Refuse an image whose longer side is more than ``max_aspect`` times its shorter one.

    The working copy's longer side is capped (``max_side``: 640 on a CPU), and the shorter side
    shrinks with it: a 20000 x 100 strip would be segmented and shown 640 x 3, too thin to click
    on, its attention grid (R x R cells over the whole image) squashed 200 to 1. At 8 to 1 the
    working copy's shorter side is still 80 px at 640 (40 px drawn in a 320 px column). Checked
    on the decoded size, before any attention.

    Raises
    ------
    InputError
        The image is too elongated; the message gives the limit and a crop that fits it.
    """
    height, width = int(height), int(width)
    longer, shorter = max(height, width), min(height, width)
    if longer <= max_aspect * shorter:
        return
    crop = (f"{int(max_aspect * height)} x {height}" if width >= height else f"{width} x {int(max_aspect * width)}")
    raise InputError(f"the image is {width} x {height} pixels, {longer / shorter:.3g} times as "
                     f"{'wide as it is high' if width >= height else 'high as it is wide'}; the limit is "
                     f"{max_aspect:g} times (a longer strip is segmented and shown only a few pixels thick): "
                     f"crop it to at most {crop} pixels")

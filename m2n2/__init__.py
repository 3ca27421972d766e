"""M2N2 Studio: training-free interactive segmentation from Stable Diffusion 2 attention."""

from .config import M2N2Config
from .errors import BackboneUnavailable, InputError, M2N2Error, NotReadyError
from .predictor import M2N2Predictor, PointResult, Prediction

__all__ = ["M2N2Predictor", "Prediction", "PointResult", "M2N2Config", "M2N2Error", "InputError", "NotReadyError", "BackboneUnavailable"]
__version__ = "0.1.0"

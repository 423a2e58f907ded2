"""The networks (DANv1, DANv2), kernels and PCA, checkpoints and bundled weights."""

from .bundled import DEFAULT_MODEL, GREY_MODEL, list_models, load_model
from .checkpoint import DanModel, build_network, create_model, load_checkpoint, save_checkpoint
from .danv1 import DANv1
from .danv2 import DANv2

__all__ = ["DANv1", "DANv2", "DanModel", "build_network", "create_model", "load_checkpoint", "save_checkpoint",
           "list_models", "load_model", "DEFAULT_MODEL", "GREY_MODEL"]

"""Video models with any norm: I3D / C2D ResNets, pytorchvideo and torchvision families, a registry
of builders, weights that load only into the network geometry they came from, 2-D -> 3-D inflation.

    from videogn.models import create_model, inflate_from_2d
    model = create_model("i3d_r50", num_classes=400, norm="gn")
    report = inflate_from_2d(model, torchvision_resnet50.state_dict())
"""

# Import order is registration order: the ResNet3d family (registry), then the zoo's families.
from videogn.models.spec import MODELS, BlockList, ModelSpec, get_model_spec, list_models, register_model
from videogn.models.registry import create_model, describe_models, freeze_stages
from videogn.models.zoo import SlowFastFromClip
from videogn.models.weights import LAYOUTS, classifier_name, detect_layout, load_weights, models_for
from videogn.models.inflate import InflationReport, inflate_from_2d
from videogn.models.resnet3d import (
    BasicBlock3d,
    Bottleneck3d,
    ClipMaxPool3d,
    ResNet3d,
    TemporalConv3d,
)

__all__ = [
    "create_model",
    "list_models",
    "describe_models",
    "load_weights",
    "classifier_name",
    "freeze_stages",
    "detect_layout",
    "models_for",
    "LAYOUTS",
    "BlockList",
    "SlowFastFromClip",
    "MODELS",
    "get_model_spec",
    "register_model",
    "ModelSpec",
    "inflate_from_2d",
    "InflationReport",
    "ResNet3d",
    "Bottleneck3d",
    "BasicBlock3d",
    "ClipMaxPool3d",
    "TemporalConv3d",
]

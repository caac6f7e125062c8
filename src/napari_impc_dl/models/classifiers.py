"""Classification CNNs by name (timm, ``pretrained=False``): nothing is ever downloaded here.

``CLASSIFIERS`` maps our short keys onto timm model names. The keys shared with segmentation
(``resnet18``, ``resnet34``, ``efficientnet-b0``, ``mobilenetv3-small``, ``tiny``) name the same
backbone family, so a segmentation U-Net's encoder can seed a classifier (``training.transfer``).
``vgg16_bn`` is what the chromosome and X-ray studies fine-tuned (138 M parameters: slow on a CPU).
"""

from __future__ import annotations

from .card import ArchitectureSpec

#: our key -> timm model name
CLASSIFIERS: dict[str, str] = {
    "resnet18": "resnet18",
    "resnet34": "resnet34",
    "efficientnet-b0": "efficientnet_b0",
    "mobilenetv3-small": "mobilenetv3_small_100",
    "vgg16_bn": "vgg16_bn",
    # for tests and quick runs: the same timm network as the segmentation registry's 'tiny' encoder
    "tiny": "mobilenetv3_small_050",
}


def classifier_architecture(name: str, in_channels: int, n_classes: int) -> ArchitectureSpec:
    """The architecture spec of a registry classifier (``out_channels`` = number of classes)."""
    check_name(name)
    return ArchitectureSpec(arch="Classifier", encoder=name, in_channels=in_channels, out_channels=n_classes, decoder_channels=(), encoder_depth=5)


def check_name(name: str) -> None:
    if name not in CLASSIFIERS:
        from ..errors import InputError

        raise InputError(f"Unknown classifier architecture '{name}'", f"Choose one of: {', '.join(CLASSIFIERS)}")


def timm_kwargs(spec: ArchitectureSpec) -> dict:
    """Keyword arguments of ``timm.create_model`` for ``spec`` (used by the Model Zoo export too)."""
    return {"model_name": CLASSIFIERS[spec.encoder], "pretrained": False, "num_classes": spec.out_channels, "in_chans": spec.in_channels}


def build_classifier(spec: ArchitectureSpec, *, pretrained: str | None = None):
    """Build the classifier for ``spec``: random weights, or ``pretrained="imagenet"`` through timm's hub.

    The hub download needs a network; without one this raises one :class:`InputError` line
    (never a traceback, never a silent random start).
    """
    import timm

    kw = timm_kwargs(spec)
    if pretrained is None:
        return timm.create_model(**kw)
    if pretrained != "imagenet":
        from ..errors import InputError

        raise InputError(f"Unknown --pretrained '{pretrained}'", "Use --pretrained imagenet, or --from FILE for weights on disk")
    try:
        return timm.create_model(**{**kw, "pretrained": True})
    except Exception as exc:  # offline, hub down, no such weights
        from ..errors import InputError

        raise InputError(
            f"Could not download ImageNet weights for '{spec.encoder}' ({type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else 'no details'})",
            "Connect to the network, or download the weights elsewhere and pass the file with --from FILE",
        ) from None

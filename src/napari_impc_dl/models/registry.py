"""Build segmentation-models-pytorch U-Nets by name; nothing is ever downloaded.

``ENCODERS`` maps our short, stable encoder keys onto smp/timm encoder names. Every model is built
with ``encoder_weights=None``: pretrained weights only ever come from a local checkpoint.
"""

from __future__ import annotations

from .card import ArchitectureSpec

#: our key -> (smp encoder name, default decoder channels)
ENCODERS: dict[str, tuple[str, tuple[int, ...]]] = {
    "resnet18": ("resnet18", (256, 128, 64, 32, 16)),
    "resnet34": ("resnet34", (256, 128, 64, 32, 16)),
    "efficientnet-b0": ("efficientnet-b0", (256, 128, 64, 32, 16)),
    # the starter model's encoder: MobileNetV3-small without squeeze-and-excitation, 3 stages deep.
    # SE blocks pool globally, so every output would depend on the whole tile and tiled inference
    # could never match whole-image inference; this variant is purely convolutional, and at depth 3
    # (deepest features at 1/8, as StarDist's 2D default) an output pixel depends on pixels at most
    # 32 px away, so tiles with a 32 px halo reproduce whole-image inference exactly.
    "mobilenetv3-minimal": ("tu-tf_mobilenetv3_small_minimal_100", (64, 32, 16)),
    # with SE blocks: slightly stronger, but tile-size dependent (see above)
    "mobilenetv3-small": ("tu-mobilenetv3_small_100", (128, 64, 32, 16, 16)),
    # for tests: a few hundred thousand parameters, builds and runs in milliseconds
    "tiny": ("tu-mobilenetv3_small_050", (32, 16, 16)),
}

#: encoder depth used with each key (the tiny test model is shallower)
_DEPTH = {"tiny": 3, "mobilenetv3-minimal": 3}


def architecture(encoder: str, in_channels: int, out_channels: int = 2) -> ArchitectureSpec:
    """The architecture spec of a registry model with its default decoder."""
    if encoder not in ENCODERS:
        raise KeyError(f"unknown encoder {encoder!r}; choose one of {sorted(ENCODERS)}")
    depth = _DEPTH.get(encoder, 5)
    return ArchitectureSpec(
        encoder=encoder,
        in_channels=in_channels,
        out_channels=out_channels,
        decoder_channels=ENCODERS[encoder][1][:depth],
        encoder_depth=depth,
    )


def smp_kwargs(spec: ArchitectureSpec) -> dict:
    """Keyword arguments of ``segmentation_models_pytorch.Unet`` for ``spec`` (used by export too)."""
    return {
        "encoder_name": ENCODERS[spec.encoder][0],
        "encoder_weights": None,
        "encoder_depth": spec.encoder_depth,
        "in_channels": spec.in_channels,
        "classes": spec.out_channels,
        "decoder_channels": list(spec.decoder_channels),
    }


def build(spec: ArchitectureSpec):
    """Build the (randomly initialised) network for ``spec``: an smp U-Net, or a timm classifier (``arch="Classifier"``)."""
    if spec.arch == "Classifier":
        from .classifiers import build_classifier

        return build_classifier(spec)
    import segmentation_models_pytorch as smp

    if spec.encoder not in ENCODERS:
        raise KeyError(f"unknown encoder {spec.encoder!r}; choose one of {sorted(ENCODERS)}")
    return getattr(smp, spec.arch)(**smp_kwargs(spec))

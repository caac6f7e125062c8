"""BioImage Model Zoo interoperability: import, run, test and export model packages (spec 0.4 and 0.5).

    package.py     safe opening of zips / folders / rdf.yaml (zip-slip, links, sizes, sha256)
    spec.py        validation with bioimageio.spec and normalisation into our own small model
    processing.py  the spec's pre/postprocessing in numpy, with streamed whole-image statistics
    adapter.py     a package as a Runnable for the tiled engine (torchscript, state dict, onnx)
    library.py     the local model library (``segment --model NAME``)
    export.py      our checkpoints -> spec 0.5 packages that pass bioimageio.core's test
    conformance/   ``zoo test``: a package's own test tensors through our adapter

Nothing here downloads anything; bioimageio.spec is imported only inside functions.
"""

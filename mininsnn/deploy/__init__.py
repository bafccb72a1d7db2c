"""Integer-only deployment of trained mininsnn networks (docs/deploy.md).

    from mininsnn.deploy import convert, forward, predict      # NumPy only (no Numba needed)
    model = convert(state_dict, config)                         # fold, quantize, prove
    counts = predict(model, uint8_images, num_steps=100)        # (B, classes) spike counts

``mininsnn.deploy.numba_engine`` runs the same integers faster (identical spikes) and
``mininsnn.deploy.cexport`` writes them as C99. Nothing imported here imports Numba.
"""

from mininsnn.deploy.chain import convert_layers, convert_network   # any chain of layers
from mininsnn.deploy.conversion import (ConversionError, IntegerModel, IntLayer, OverflowProofError,
                                     convert)
from mininsnn.deploy.engine import InputError, check_input, forward, predict
from mininsnn.deploy.modelfile import ModelFileError, load_integer_model, save_integer_model

__all__ = ["ConversionError", "OverflowProofError", "IntegerModel", "IntLayer", "InputError",
           "ModelFileError", "convert", "convert_network", "convert_layers", "check_input", "forward", "predict",
           "load_integer_model", "save_integer_model"]

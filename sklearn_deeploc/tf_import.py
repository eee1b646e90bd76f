"""Importing the published DeepLoc TensorFlow 1 checkpoint: role-based mapping to a model."""

import numpy as np
import torch

from .datasets._synthetic import LOCALIZATIONS
from .model import DeepLocModel, weight_problem
from .network import DeepLocNet, pooled_size
from .tf_checkpoint import layer_tensors, read_checkpoint
from .validation import PositiveInt

# The published model's outputs: the 17 localizations (alphabetical), then dead and ghost cells.
CHONG_CLASSES = (*LOCALIZATIONS, "DEAD", "GHOST")
# The reference preprocessing (clip at 99.9, subtract 0.1, divide by larger ranges).
REFERENCE_PREPROCESSING = {
    "image_size": 64,
    "stretch": [0.1, 99.9],
    "stretch_variant": "reference",
    "tta": True,
}
N_REFERENCE_CONV = 8
REFERENCE_LAYERS = (
    *(f"conv_{i}" for i in range(1, N_REFERENCE_CONV + 1)),
    "fc_1",
    "fc_2",
    "final_layer",
)
PER_OUTPUT_ROLES = ("biases", "gamma", "beta", "moving_mean", "moving_variance")


def _check_reference_layers(tensors):
    """Refuse a checkpoint that lacks a layer of the reference network, or has extra ones."""
    scopes = {part for name in tensors for part in name.split("/")}
    missing = [layer for layer in REFERENCE_LAYERS if not {layer, f"{layer}_batch_norm"} & scopes]
    extra = sorted(
        part
        for part in scopes
        if part.startswith("conv_") and part[5:].isdigit() and int(part[5:]) > N_REFERENCE_CONV
    )
    if missing or extra:
        raise ValueError(
            "The checkpoint is not the DeepLoc reference graph (8 conv, 2 hidden FC and a "
            f"final layer, each with batch norm): missing layers {missing}"
            + (f", unexpected layers {extra}" if extra else "")
            + "."
        )


def _check_shape(name, array, expected, why):
    """Refuse a tensor of another shape than ``expected``, saying ``why`` it is expected."""
    if array.shape != expected:
        raise ValueError(
            f"The checkpoint tensor {name} has shape {list(array.shape)}; expected "
            f"{list(expected)} ({why})."
        )


def _torch_weights(tf_layer, found, inputs, crop_size):
    """The layer's weights in PyTorch's layout, once its tensors fit ``inputs`` (None: any)."""
    name, weights = found["weights"]
    conv = tf_layer.startswith("conv_")
    ndim = 4 if conv else 2
    if weights.ndim != ndim or 0 in weights.shape:
        layout = "height, width, inputs, outputs" if conv else "inputs, outputs"
        raise ValueError(
            f"The checkpoint tensor {name} has shape {list(weights.shape)}; expected {ndim} "
            f"non-empty dimensions ({layout})."
        )
    inputs = weights.shape[2] if inputs is None else inputs
    outputs = weights.shape[-1]
    side = pooled_size(crop_size)
    if conv:
        expected, why = (3, 3, inputs, outputs), f"3x3 kernels over {inputs} input channels"
    elif tf_layer == "fc_1":
        expected = (side * side * inputs, outputs)
        why = f"{side}x{side} positions of conv_8's {inputs} channels for crop_size={crop_size}"
    else:
        expected, why = (inputs, outputs), f"the {inputs} outputs of the layer before"
    _check_shape(name, weights, expected, why)
    for role in PER_OUTPUT_ROLES:
        _check_shape(*found[role], (outputs,), f"one value per output of {tf_layer}")
    if conv:  # HWIO -> OIHW
        return weights.transpose(3, 2, 0, 1)
    if tf_layer == "fc_1":  # rows flattened NHWC; our flatten is NCHW
        weights = weights.reshape(side, side, inputs, outputs).transpose(3, 2, 0, 1)
        return weights.reshape(outputs, -1)
    return weights.T


def _tf_state_dict(tensors, crop_size):
    """Our DeepLocNet state and architecture from a reference checkpoint's tensors."""
    _check_reference_layers(tensors)
    ours = [f"features.conv{i}.conv" for i in range(1, N_REFERENCE_CONV + 1)]
    ours += ["fc.fc1.linear", "fc.fc2.linear", "head"]
    norms = [name.rsplit(".", 1)[0] + ".bn" for name in ours[:-1]] + ["head_bn"]
    state, mapping, widths = {}, {}, []
    for tf_layer, weight_key, norm_key in zip(REFERENCE_LAYERS, ours, norms):
        found = layer_tensors(tensors, tf_layer)
        weights = _torch_weights(tf_layer, found, widths[-1] if widths else None, crop_size)
        widths.append(weights.shape[0])
        values = {
            f"{weight_key}.weight": ("weights", weights),
            f"{weight_key}.bias": ("biases", found["biases"][1]),
            f"{norm_key}.weight": ("gamma", found["gamma"][1]),
            f"{norm_key}.bias": ("beta", found["beta"][1]),
            f"{norm_key}.running_mean": ("moving_mean", found["moving_mean"][1]),
            f"{norm_key}.running_var": ("moving_variance", found["moving_variance"][1]),
        }
        for key, (role, value) in values.items():
            state[key] = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
            mapping[key] = found[role][0]
            if problem := weight_problem(key, state[key]):
                raise ValueError(f"The checkpoint tensor {mapping[key]} {problem}.")
        state[f"{norm_key}.num_batches_tracked"] = torch.tensor(0)
    architecture = {
        "n_channels": state["features.conv1.conv.weight"].shape[1],
        "n_classes": widths[-1],
        "conv_channels": widths[:N_REFERENCE_CONV],
        "fc_units": widths[N_REFERENCE_CONV:-1],
        "crop_size": crop_size,
        "dropout": 0.0,
        "bias": True,
        "bn_eps": 1e-3,
        "bn_momentum": 0.5,
        "normalize_logits": True,
    }
    return state, architecture, mapping


def from_tf_checkpoint(
    checkpoint,
    output=None,
    *,
    classes=None,
    channel_names=("GFP", "RFP"),
    crop_size=60,
    verbose=0,
    return_mapping=False,
):
    """Import the published DeepLoc TensorFlow 1 checkpoint (no TensorFlow needed).

    Each reference layer (``conv_1`` ... ``conv_8``, ``fc_1``, ``fc_2``, ``final_layer``) is
    mapped by role to a :class:`DeepLocNet` with the reference options (bias before batch
    norm, batch-normalised logits, epsilon 1e-3); the model keeps the reference preprocessing.

    Parameters
    ----------
    checkpoint : str or path-like
        The checkpoint prefix, for example ``pretrained_DeepLoc/model.ckpt-5000``.
    output : str or path-like, optional
        Model folder to write (``config.json`` + ``weights.safetensors``).
    classes : sequence of str, optional
        Output class names; by default the 19 Chong et al. (2015) classes for a 19-output
        model, ``class_0 ...`` otherwise.
    channel_names : tuple of str, default=("GFP", "RFP")
    crop_size : int, default=60
        Side of the network's input crop, from 1 to 64; it sets the input width of ``fc_1``.
    verbose : int, default=0
        Print the variable mapping when > 0.
    return_mapping : bool, default=False
        Also return the mapping of our parameter names to checkpoint tensor names.

    Returns
    -------
    DeepLocModel
        With ``return_mapping=True``, ``(model, mapping)``.

    Examples
    --------
    >>> from sklearn_deeploc.tf_import import from_tf_checkpoint
    >>> model = from_tf_checkpoint("pretrained_DeepLoc/model.ckpt-5000",
    ...                            "deeploc-chong/")  # doctest: +SKIP
    """
    image_size = REFERENCE_PREPROCESSING["image_size"]
    if not PositiveInt().is_satisfied_by(crop_size) or crop_size > image_size:
        raise ValueError(
            f"crop_size must be an integer from 1 to {image_size} (the reference crops are "
            f"{image_size} pixels wide); got {crop_size!r}."
        )
    crop_size = int(crop_size)
    state, architecture, mapping = _tf_state_dict(read_checkpoint(checkpoint), crop_size)
    n_classes = architecture["n_classes"]
    if classes is None:
        classes = CHONG_CLASSES if n_classes == 19 else [f"class_{i}" for i in range(n_classes)]
    if len(classes) != n_classes:
        raise ValueError(f"{len(classes)} class names for a model with {n_classes} outputs.")
    network = DeepLocNet(**architecture)
    network.load_state_dict(state)
    model = DeepLocModel(
        network,
        list(classes),
        channel_names=list(channel_names),
        preprocessing=REFERENCE_PREPROCESSING,
    )
    if verbose:
        for ours, theirs in mapping.items():
            print(f"{ours:<34} <- {theirs}")
    if output is not None:
        model.save(output)
    return (model, mapping) if return_mapping else model

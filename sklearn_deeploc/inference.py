"""Fast batched inference: folded batch norm, channels-last, five-crop mean, reduced precision.

fp32 runs :func:`inference_copy`, bf16 and fp16 run it under ``torch.autocast``, and int8
runs a :func:`quantized_copy` (README, "Faster inference"). Outputs are float32.

int8 uses FX graph mode quantisation (deprecated, notices silenced): fast in eager mode and
nothing beyond torch. torchao's PT2E lowering replaces it when torch drops it.
"""

import contextlib
import copy
import warnings

import numpy as np
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval
from tqdm.auto import tqdm

from .preprocessing import center_crop, five_crops, stretch_as_stored, to_tensor

PRECISIONS = ("fp32", "bf16", "fp16", "int8")
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _auto(device):
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(
            f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'; got {device!r}."
        ) from error
    return device


def resolve_device(device):
    """``"auto"`` becomes ``"cuda"`` when a GPU is present, else ``"cpu"``; others are checked.

    Examples
    --------
    >>> from sklearn_deeploc.inference import resolve_device
    >>> resolve_device("cpu")
    'cpu'
    """
    device = _auto(device)
    if torch.device(device).type != "cpu":
        try:  # the one portable test: torch says why (no CUDA build, no such index, no MPS)
            torch.empty(0, device=device)
        except (AssertionError, RuntimeError, NotImplementedError) as error:
            reason = str(error).strip().split("\n")[0].split(". ")[0] or type(error).__name__
            raise ValueError(
                f"device={str(device)!r} is not available on this machine ({reason}); "
                "use 'cpu', or 'auto' to take a GPU when there is one."
            ) from error
    return device


def _has_native_bf16(device):
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return True


def check_precision(precision, device="cpu"):
    """The precision to run at on ``device``, or a ``ValueError`` saying why not.

    ``precision`` is one of :data:`PRECISIONS`; ``device`` (``"auto"`` as in
    :func:`resolve_device`) is checked by kind. ``"bf16"`` without native bf16 gives
    ``"fp32"``, with a warning.

    Examples
    --------
    >>> from sklearn_deeploc.inference import check_precision
    >>> check_precision("int8", "cpu")
    'int8'
    >>> check_precision("fp16", "cpu")
    Traceback (most recent call last):
    ...
    ValueError: precision='fp16' needs a GPU; use 'bf16' on CPU.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}; got {precision!r}.")
    device = torch.device(_auto(device))  # the kind of device; whether it exists is fit's to say
    if precision == "fp16" and device.type == "cpu":
        raise ValueError("precision='fp16' needs a GPU; use 'bf16' on CPU.")
    if precision == "int8" and device.type != "cpu":
        raise ValueError(
            f"precision='int8' runs on the CPU only; got device={str(device)!r}. "
            "Use 'fp16' or 'bf16' on a GPU."
        )
    if precision == "int8" and "x86" not in torch.backends.quantized.supported_engines:
        raise ValueError(
            "precision='int8' needs PyTorch's x86 quantized engine; this build has "
            f"{torch.backends.quantized.supported_engines}. Use 'bf16' or 'fp32'."
        )
    if precision == "bf16" and not _has_native_bf16(device):
        warnings.warn(
            f"Device {str(device)!r} has no native bf16 (on CPU: AVX512-BF16 or AMX), "
            "where bf16 runs slower than fp32; running in fp32.",
            stacklevel=2,
        )
        return "fp32"
    return precision


def _fold_block(block, layer_name):
    layer, norm = getattr(block, layer_name), block.bn
    fuse = fuse_conv_bn_eval if isinstance(layer, nn.Conv2d) else fuse_linear_bn_eval
    setattr(block, layer_name, fuse(layer, norm))
    block.bn = nn.Identity()


def inference_copy(module, device="cpu"):
    """An eval-mode copy of a ``DeepLocNet`` for prediction, leaving ``module`` untouched.

    Batch normalisation is folded into the preceding layer and the copy runs channels-last;
    outputs are equal to rounding error.

    Examples
    --------
    >>> import torch
    >>> from sklearn_deeploc import DeepLocNet
    >>> from sklearn_deeploc.inference import inference_copy
    >>> net = DeepLocNet(n_classes=3, conv_channels=(4,) * 8, fc_units=(8, 8)).eval()
    >>> fast = inference_copy(net)
    >>> x = torch.rand(2, 2, 60, 60)
    >>> bool(torch.allclose(net(x), fast(x), atol=1e-5))
    True
    """
    fast = copy.deepcopy(module).eval()
    for block in [*fast.features.children(), *fast.fc.children()]:
        if isinstance(block, nn.Sequential):
            _fold_block(block, "conv" if hasattr(block, "conv") else "linear")
    if isinstance(fast.head_bn, nn.BatchNorm1d):
        fast.head = fuse_linear_bn_eval(fast.head, fast.head_bn)
        fast.head_bn = nn.Identity()
    return fast.to(device=device, memory_format=torch.channels_last)


class _EveryOutput(nn.Module):
    """Logits and every feature layer from one pass, so one int8 graph serves both."""

    def __init__(self, network):
        super().__init__()
        self.network = network

    def forward(self, x):
        net, outputs = self.network, {}
        for name, block in net.features.named_children():
            x = block(x)
            if name == net.last_conv:
                outputs["conv8"] = torch.amax(x, dim=(2, 3))
        x = torch.flatten(x, 1)
        for name, block in net.fc.named_children():
            x = block(x)
            outputs[name] = x
        outputs["logits"] = net.head_bn(net.head(net.dropout(x)))
        return outputs


class QuantizedDeepLocNet(nn.Module):
    """An int8 ``DeepLocNet`` (:func:`quantized_copy`): CPU, NCHW float crops in, floats out."""

    def __init__(self, graph, feature_layers):
        super().__init__()
        self.graph = graph
        self.feature_layers = tuple(feature_layers)

    def forward(self, x):
        """Logits of shape (n, n_classes)."""
        return self.graph(x)["logits"]

    def forward_features(self, x, layer="fc2"):
        """Activations of ``layer``, one of :attr:`feature_layers`."""
        if layer not in self.feature_layers:
            raise ValueError(f"layer must be one of {self.feature_layers}; got {layer!r}.")
        return self.graph(x)[layer]


@contextlib.contextmanager
def _quiet_fx_quantization():
    """Silence the deprecation notices of FX quantisation (see the module docstring)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "torch.ao.quantization is deprecated", DeprecationWarning)
        warnings.filterwarnings("ignore", "Please use quant_min and quant_max", UserWarning)
        warnings.filterwarnings("ignore", ".*quantized tensor creation functions", UserWarning)
        yield


def _batch_views(X, *, crop_size, preprocessing, tta, batch_size, device):
    """Per batch: the stretched views to average, laid out only when run (one copy alive)."""
    for start in range(0, len(X), batch_size):
        x = stretch_as_stored(to_tensor(X[start : start + batch_size]).to(device), preprocessing)
        yield five_crops(x, crop_size) if tta else (center_crop(x, crop_size),)


def quantized_copy(module, calibration, *, crop_size, preprocessing, tta=True, batch_size=128):
    """A statically quantised int8 copy of a ``DeepLocNet`` for the x86 CPU.

    Batch norm is fused, weights are quantised per channel and activations per tensor, with
    ranges calibrated on the views of ``calibration`` that :func:`predict_batches` would run.
    The result depends only on the weights and the calibration crops; 64 to 256 cells like the
    ones to predict are enough (building time grows with them).

    ``module`` is left untouched; ``calibration`` holds validated raw crops; ``crop_size``,
    ``preprocessing``, ``tta`` and ``batch_size`` are as for :func:`predict_batches`, which
    runs the result with ``precision="int8"``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_deeploc import DeepLocNet
    >>> from sklearn_deeploc.inference import predict_batches, quantized_copy
    >>> net = DeepLocNet(n_classes=3, conv_channels=(4,) * 8, fc_units=(8, 8)).eval()
    >>> X = np.random.default_rng(0).random((6, 2, 64, 64), dtype=np.float32)
    >>> spec = {"stretch": [0.1, 99.9], "stretch_variant": "clip"}
    >>> int8 = quantized_copy(net, X, crop_size=60, preprocessing=spec)
    >>> proba = predict_batches(
    ...     int8, X, output="proba", crop_size=60, preprocessing=spec, precision="int8"
    ... )
    >>> proba.shape, bool(np.allclose(proba.sum(axis=1), 1))
    ((6, 3), True)
    """
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    if len(calibration) == 0:
        raise ValueError("quantized_copy needs at least one calibration crop; got none.")
    cpu = torch.device("cpu")
    network = _EveryOutput(copy.deepcopy(module).to(cpu).eval())
    views = _batch_views(
        calibration,
        crop_size=crop_size,
        preprocessing=preprocessing,
        tta=tta,
        batch_size=batch_size,
        device=cpu,
    )
    with _quiet_fx_quantization(), torch.no_grad():
        first = next(views)
        example = first[0].contiguous()
        observed = prepare_fx(network, get_default_qconfig_mapping("x86"), (example,))
        for batch in [first, *views]:
            for view in batch:
                observed(view.contiguous())
        graph = convert_fx(observed)
    return QuantizedDeepLocNet(graph, module.feature_layers)


def _device_of(module):
    parameter = next(module.parameters(), None)
    # A quantised copy holds packed weights, not parameters, and runs on the CPU.
    return torch.device("cpu") if parameter is None else parameter.device


def _outputs(module, crops, output):
    if output == "proba":
        return torch.softmax(module(crops).float(), dim=1)
    if output == "logits":
        return module(crops).float()
    return module.forward_features(crops, output).float()


def _check_module_precision(module, precision):
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}; got {precision!r}.")
    if isinstance(module, QuantizedDeepLocNet) != (precision == "int8"):
        raise ValueError(
            "precision='int8' runs a quantized_copy of the network, and a quantized copy "
            f"runs only at 'int8'; got precision={precision!r} with a "
            f"{type(module).__name__}."
        )


def predict_batches(
    module,
    X,
    *,
    output,
    crop_size,
    preprocessing,
    tta=True,
    batch_size=128,
    precision="fp32",
    verbose=0,
    check_input=True,
):
    """Run a network over validated crops batch by batch, under ``inference_mode``.

    Parameters
    ----------
    module : DeepLocNet or QuantizedDeepLocNet
        Usually an :func:`inference_copy` (a :func:`quantized_copy` for int8); not set to eval.
    X : ndarray of shape (n, C, H, W), float32
        Raw crops (see :func:`~sklearn_deeploc.validation.check_crops`).
    output : {"proba", "logits", "conv8", "fc1", "fc2"}
        Softmax probabilities, logits, or a feature layer.
    crop_size : int
        The network's input side.
    preprocessing : dict
        The model's stored preprocessing (:func:`~sklearn_deeploc.preprocessing.stretch_as_stored`).
    tta : bool, default=True
        Mean over the five crops (centre and corners) instead of the centre only.
    batch_size : int, default=128
        Cells per forward pass; bounds the memory used.
    precision : {"fp32", "bf16", "fp16", "int8"}, default="fp32"
        bf16 and fp16 run under ``torch.autocast``; int8 needs a quantised ``module``. Check it
        against the device first with :func:`check_precision`.
    verbose : int, default=0
        Show a progress bar when > 0.
    check_input : bool, default=True
        Check ``precision`` against ``module``; False trusts a caller that did.

    Returns
    -------
    ndarray of shape (n, n_outputs), float32
    """
    if check_input:
        _check_module_precision(module, precision)
    device = _device_of(module)
    # Five channels-last passes beat one NCHW batch on CPU; quantised kernels are faster on NCHW.
    layout = torch.contiguous_format if precision == "int8" else torch.channels_last
    autocast = (
        torch.autocast(device.type, dtype=_AUTOCAST_DTYPES[precision])
        if precision in _AUTOCAST_DTYPES
        else contextlib.nullcontext()
    )
    batches = _batch_views(
        X,
        crop_size=crop_size,
        preprocessing=preprocessing,
        tta=tta,
        batch_size=batch_size,
        device=device,
    )
    chunks = []
    with torch.inference_mode(), autocast:
        for views in tqdm(
            batches,
            total=-(-len(X) // batch_size),
            disable=None if verbose else True,  # None: no bar where output is not a terminal
            desc=output,
            unit="batch",
        ):
            total = sum(
                _outputs(module, view.contiguous(memory_format=layout), output) for view in views
            )
            chunks.append(_check_finite((total / len(views)).cpu().numpy(), output, precision))
    return np.concatenate(chunks)


def _check_finite(values, output, precision):
    """Refuse NaN or infinite outputs (from finite crops): argmax would name the first class."""
    bad = ~np.isfinite(values).all(axis=1)
    if bad.any():
        overflow = " or fp16 overflowed (try 'bf16' or 'fp32')" if precision == "fp16" else ""
        raise ValueError(
            f"The network gave NaN or infinite {output!r} values for {int(bad.sum())} of "
            f"{len(values)} cells of a batch at precision={precision!r}, from finite crops: its "
            f"weights are broken (e.g. a negative batch-norm variance){overflow}."
        )
    return values


def _max_relative_error(reference, other):
    """Largest difference over the layer's largest fp32 magnitude (ReLU zeros would blow up)."""
    scale = np.abs(reference).max()
    error = np.abs(other - reference).max()
    if scale == 0:
        return np.inf if error > 0 else 0.0
    return float(error / scale)


def precision_agreement(reference, other):
    """How closely reduced-precision outputs follow the fp32 ones on the same cells.

    Parameters
    ----------
    reference, other : dict of str to ndarray of shape (n, n_outputs)
        Outputs of :func:`predict_batches` at fp32 and at the reduced precision, keyed by
        output name: ``"proba"`` (required) and any feature layers.

    Returns
    -------
    dict
        ``"top1_agreement"``: the fraction of cells with the same most probable class;
        ``"<layer>_max_relative_error"`` per feature layer: the largest absolute error over the
        layer's largest fp32 magnitude (inf where an all-zero fp32 layer became non-zero).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_deeploc.inference import precision_agreement
    >>> fp32 = {"proba": np.array([[0.9, 0.1], [0.4, 0.6]]), "fc2": np.array([[0.0, 5.0]] * 2)}
    >>> bf16 = {"proba": np.array([[0.8, 0.2], [0.6, 0.4]]), "fc2": np.array([[0.1, 4.5]] * 2)}
    >>> precision_agreement(fp32, bf16)
    {'top1_agreement': 0.5, 'fc2_max_relative_error': 0.1}
    """
    if "proba" not in reference or set(reference) != set(other):
        raise ValueError(
            "reference and other need the same outputs, 'proba' among them; got "
            f"{sorted(reference)} and {sorted(other)}."
        )
    for name in reference:
        if np.shape(reference[name]) != np.shape(other[name]):
            raise ValueError(
                f"{name!r} outputs differ in shape: {np.shape(reference[name])} and "
                f"{np.shape(other[name])}."
            )
    same_top1 = np.argmax(reference["proba"], axis=1) == np.argmax(other["proba"], axis=1)
    agreement = {"top1_agreement": float(same_top1.mean())}
    for name in reference:
        if name != "proba":
            agreement[f"{name}_max_relative_error"] = _max_relative_error(
                np.asarray(reference[name], dtype=np.float64),
                np.asarray(other[name], dtype=np.float64),
            )
    return agreement

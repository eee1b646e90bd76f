"""Fast batched inference: folded batch norm, channels-last, five-crop mean, reduced precision.

fp32 runs :func:`inference_copy`, bf16 and fp16 run it under ``torch.autocast``, and int8
runs a :func:`quantized_copy`. int8 uses FX graph mode quantisation (deprecated, notices
silenced): fast in eager mode and nothing beyond torch.
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
from .validation import DeviceName

PRECISIONS = ("fp32", "bf16", "fp16", "int8")
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _auto(device, precision=None):
    if device == "auto":  # int8 runs on the CPU only
        return "cuda" if torch.cuda.is_available() and precision != "int8" else "cpu"
    if not DeviceName().is_satisfied_by(str(device)):  # "meta" holds no values
        raise ValueError(
            f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'; got {device!r}."
        )
    return device


def resolve_device(device, precision=None):
    """The full name of a device that exists here; ``"auto"``: ``"cuda:0"`` with a GPU, else CPU.

    ``precision="int8"`` makes ``"auto"`` the CPU, where int8 runs. A GPU gets its index, so
    that tensors on it compare equal to the device.
    """
    device = _auto(device, precision)
    if torch.device(device).type == "cpu":
        return device
    try:  # the one portable test: torch says why (no CUDA build, no such index, no MPS)
        return str(torch.empty(0, device=device).device)
    except (AssertionError, RuntimeError, NotImplementedError) as error:
        reason = str(error).strip().split("\n")[0].split(". ")[0] or type(error).__name__
        raise ValueError(
            f"device={str(device)!r} is not available on this machine ({reason}); "
            "use 'cpu', or 'auto' to take a GPU when there is one."
        ) from error


def _has_native_bf16(device):
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return True


def check_precision(precision, device="cpu"):
    """The precision to run at on a device of ``device``'s kind, or a ValueError saying why not.

    ``"bf16"`` without native bf16 gives ``"fp32"``, with a warning.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}; got {precision!r}.")
    device = torch.device(_auto(device, precision))  # whether it exists is fit's to say
    if precision == "fp16" and device.type == "cpu":
        raise ValueError("precision='fp16' needs a GPU; use 'bf16' on CPU.")
    if precision == "int8" and device.type != "cpu":
        raise ValueError(
            f"precision='int8' runs on the CPU only; got device={str(device)!r}. "
            "Use 'fp16' or 'bf16' on a GPU, or the CPU for int8."
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


def inference_copy(module, device="cpu"):
    """An eval-mode, channels-last copy of a ``DeepLocNet`` with batch norm folded in."""
    fast = copy.deepcopy(module).eval()
    for block in [*fast.features.children(), *fast.fc.children()]:
        if isinstance(block, nn.Sequential):
            name = "conv" if hasattr(block, "conv") else "linear"
            fuse = fuse_conv_bn_eval if name == "conv" else fuse_linear_bn_eval
            setattr(block, name, fuse(getattr(block, name), block.bn))
            block.bn = nn.Identity()
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
        net = self.network
        outputs = dict(net._activations(x))
        outputs["logits"] = net.head_bn(net.head(net.dropout(outputs[net.feature_layers[-1]])))
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


def _batch_views(X, crop_size, preprocessing, tta, batch_size, device):
    """Per batch: the stretched views to average, laid out only when run (one copy alive)."""
    for start in range(0, len(X), batch_size):
        x = stretch_as_stored(to_tensor(X[start : start + batch_size]).to(device), preprocessing)
        yield five_crops(x, crop_size) if tta else (center_crop(x, crop_size),)


def quantized_copy(module, calibration, *, crop_size, preprocessing, tta=True, batch_size=128):
    """A statically quantised int8 copy of a ``DeepLocNet`` for the x86 CPU.

    Activation ranges are calibrated on the views of ``calibration`` (validated raw crops, 64 to
    256 like the ones to predict) that :func:`predict_batches` would run with the same options.
    """
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    if len(calibration) == 0:
        raise ValueError("quantized_copy needs at least one calibration crop; got none.")
    cpu = torch.device("cpu")
    network = _EveryOutput(copy.deepcopy(module).to(cpu).eval())
    views = _batch_views(calibration, crop_size, preprocessing, tta, batch_size, cpu)
    with warnings.catch_warnings(), torch.no_grad():
        # FX quantisation's deprecation notices (see the module docstring).
        warnings.filterwarnings("ignore", "torch.ao.quantization is deprecated", DeprecationWarning)
        warnings.filterwarnings("ignore", "Please use quant_min and quant_max", UserWarning)
        warnings.filterwarnings("ignore", ".*quantized tensor creation functions", UserWarning)
        first = next(views)
        observed = prepare_fx(network, get_default_qconfig_mapping("x86"), (first[0].contiguous(),))
        for batch in [first, *views]:
            for view in batch:
                observed(view.contiguous())
        graph = convert_fx(observed)
    return QuantizedDeepLocNet(graph, module.feature_layers)


def _outputs(module, crops, output):
    if output == "proba":
        return torch.softmax(module(crops).float(), dim=1)
    if output == "logits":
        return module(crops).float()
    return module.forward_features(crops, output).float()


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
    """Run a network over validated crops batch by batch: float32 ``(n, n_outputs)``.

    ``output`` is "proba", "logits" or a feature layer; ``module`` is an :func:`inference_copy`
    (a :func:`quantized_copy` for int8). ``check_input=False`` trusts ``precision`` to suit it.
    """
    if check_input and precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}; got {precision!r}.")
    if check_input and isinstance(module, QuantizedDeepLocNet) != (precision == "int8"):
        raise ValueError(
            "precision='int8' runs a quantized_copy of the network, and a quantized copy runs only "
            f"at 'int8'; got precision={precision!r} with a {type(module).__name__}."
        )
    parameter = next(module.parameters(), None)
    # A quantised copy holds packed weights, not parameters, and runs on the CPU.
    device = torch.device("cpu") if parameter is None else parameter.device
    # Five channels-last passes beat one NCHW batch on CPU; quantised kernels are faster on NCHW.
    layout = torch.contiguous_format if precision == "int8" else torch.channels_last
    dtype = _AUTOCAST_DTYPES.get(precision)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
    batches = _batch_views(X, crop_size, preprocessing, tta, batch_size, device)
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


def precision_agreement(reference, other):
    """Top-1 agreement and per-layer max relative error of reduced-precision outputs vs fp32.

    The error is the largest absolute difference over the layer's largest fp32 magnitude.
    """
    same_top1 = np.argmax(reference["proba"], axis=1) == np.argmax(other["proba"], axis=1)
    agreement = {"top1_agreement": float(same_top1.mean())}
    for name in reference:
        if name == "proba":
            continue
        fp32 = np.asarray(reference[name], dtype=np.float64)
        error = np.abs(np.asarray(other[name], dtype=np.float64) - fp32).max()
        scale = np.abs(fp32).max()  # the layer's, not each value's: ReLU zeros would blow up
        relative = error / scale if scale else (np.inf if error > 0 else 0.0)
        agreement[f"{name}_max_relative_error"] = float(relative)
    return agreement
